-- Codes at rest (docs/design.md, "Codes at rest"): an invitation is found by
-- a keyed hash of its code (HMAC with a key derived from the server secret)
-- and the readable code is kept only encrypted (XChaCha20-Poly1305) for
-- ListForUser; code_key_id names the secret both were made with. A dump of
-- the database alone gives no usable code.
--
-- Rows from before this migration still hold the plaintext `code`; the
-- service converts them at start (it has the secret, SQL does not) and clears
-- the column. Nothing reads `code` after that.

ALTER TABLE invitations
    ADD COLUMN code_hash       bytea,
    ADD COLUMN code_ciphertext bytea,
    ADD COLUMN code_key_id     integer,
    ALTER COLUMN code DROP NOT NULL,
    DROP CONSTRAINT invitations_code_key,
    ADD CONSTRAINT invitations_code_sealed_check
        CHECK ((code_hash IS NULL) = (code_ciphertext IS NULL) AND (code_hash IS NULL) = (code_key_id IS NULL)
               AND (code IS NOT NULL OR code_hash IS NOT NULL));

-- Redeem, CheckCode and Reserve: one lookup on this index (all hashes of the
-- presented code, one per configured secret). Also the collision guard at mint.
CREATE UNIQUE INDEX invitations_code_hash_key ON invitations (code_hash);
-- The start-up conversion of rows that still hold a plaintext code.
CREATE INDEX invitations_legacy_code_idx ON invitations (id) WHERE code IS NOT NULL;

-- Stored idempotent answers hold codes too (Mint, Redeem, Revoke responses):
-- they are sealed the same way. NULL key id: a plaintext answer from before
-- this migration, converted at start like the codes.
ALTER TABLE idempotency_keys ADD COLUMN response_key_id integer;
CREATE INDEX idempotency_keys_legacy_idx ON idempotency_keys (method, request_id) WHERE response_key_id IS NULL;
