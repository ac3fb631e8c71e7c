-- Redeem's limit with the welcome grant and the refill on (5 and 5, as the
-- bench runs the service): limit-redeem.sql's work (spend a use, insert the
-- member, record the edge, append the event), plus the policies' grants:
-- a batch of 5 single-use invitations for the new invitee with its minted
-- event, and the inviter's unspent invitations (counted on the open-invitation
-- index; the statement's snapshot still counts the use it spends as open)
-- topped up to 5 as a batch with its minted event. Codes and sealed codes
-- are random bytes of their sizes (the service makes them; pgbench cannot).
-- Labels are 'policy-welcome' and 'policy-refill' (as long as the service's;
-- pgbench would read ':welcome' in a literal as a variable). Codes as in
-- limit-redeem.sql, each spent once.
\set n :n + 1
\set k :lo + :n * :clients + :client_id
\set invitee random(1000000000000, 9999999999999)
WITH spent AS (
  UPDATE invitations SET uses = uses + 1, last_redeem_time = now(), last_invitee_id = :invitee::text
  WHERE code_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[])
    AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now()) AND uses < max_uses
  RETURNING id, inviter_id, batch_id),
member AS (
  INSERT INTO members (id, path, user_id, inviter_id, invitation_id, join_time)
  SELECT n.id, p.path || n.id, :invitee::text, spent.inviter_id, spent.id, now()
  FROM spent JOIN members p ON p.user_id = spent.inviter_id, (SELECT nextval('members_id_seq') AS id) n),
edge AS (
  INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id)
  SELECT id, inviter_id, :invitee::text, batch_id FROM spent),
redeemed AS (
  INSERT INTO outbox (id, event_type, partition, payload)
  SELECT gen_random_uuid(), 'redeemed', 0, decode(repeat('0a', 150), 'hex') FROM spent),
welcome_batch AS (
  INSERT INTO batches (id, label, minted_by, invitation_count, max_uses)
  SELECT gen_random_uuid(), 'policy-welcome', 'policy-welcome', 5, 1 FROM spent RETURNING id),
welcome AS (
  INSERT INTO invitations (id, code_hash, code_ciphertext, code_key_id, inviter_id, batch_id, label, minted_by, max_uses)
  SELECT gen_random_uuid(), sha256(random()::text::bytea), sha256(random()::text::bytea) || sha256(random()::text::bytea),
         1, :invitee::text, b.id, 'policy-welcome', 'policy-welcome', 1
  FROM welcome_batch b, generate_series(1, 5)),
welcome_event AS (
  INSERT INTO outbox (id, event_type, partition, payload)
  SELECT gen_random_uuid(), 'minted', 0, decode(repeat('0a', 300), 'hex') FROM welcome_batch),
need AS (
  SELECT 5 - (count(*) - 1) AS n FROM spent, invitations i
  WHERE i.inviter_id = spent.inviter_id
    AND i.revoke_time IS NULL AND i.uses < i.max_uses AND (i.expire_time IS NULL OR i.expire_time > now())),
refill_batch AS (
  INSERT INTO batches (id, label, minted_by, invitation_count, max_uses)
  SELECT gen_random_uuid(), 'policy-refill', 'policy-refill', n, 1 FROM need WHERE n > 0 RETURNING id, invitation_count),
refill AS (
  INSERT INTO invitations (id, code_hash, code_ciphertext, code_key_id, inviter_id, batch_id, label, minted_by, max_uses)
  SELECT gen_random_uuid(), sha256(random()::text::bytea), sha256(random()::text::bytea) || sha256(random()::text::bytea),
         1, spent.inviter_id, b.id, 'policy-refill', 'policy-refill', 1
  FROM refill_batch b, spent, generate_series(1, b.invitation_count))
INSERT INTO outbox (id, event_type, partition, payload)
SELECT gen_random_uuid(), 'minted', 0, decode(repeat('0a', 150), 'hex') FROM refill_batch;
