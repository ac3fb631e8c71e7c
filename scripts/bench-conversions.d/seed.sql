-- :n members who joined through an invitation of one of :k inviters (one
-- batch), each with its redemption; the bare table the limits write to.
INSERT INTO batches (id, label, invitation_count) VALUES ('00000000-0000-7000-8000-000000000001', 'seed', :n);
INSERT INTO members (id, path, user_id, join_time)
SELECT g, ARRAY[g::bigint], 'inv-' || g, now() FROM generate_series(1, :k) g;
INSERT INTO members (id, path, user_id, inviter_id, join_time)
SELECT :k + g, ARRAY[(g % :k) + 1, :k + g]::bigint[], 'm-' || g, 'inv-' || ((g % :k) + 1), now()
FROM generate_series(1, :n) g;
SELECT setval('members_id_seq', :k + :n + 1);
INSERT INTO invitations (id, code_hash, code_ciphertext, code_key_id, inviter_id, batch_id, uses, max_uses,
                         last_invitee_id, last_redeem_time)
SELECT gen_random_uuid(), decode(md5('seed-' || g), 'hex'), '\x00', 1, 'inv-' || ((g % :k) + 1),
       '00000000-0000-7000-8000-000000000001', 1, 1, 'm-' || g, now()
FROM generate_series(1, :n) g;
INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id)
SELECT id, inviter_id, last_invitee_id, batch_id FROM invitations;
CREATE TABLE bare_conversions (id uuid PRIMARY KEY, user_id text NOT NULL, kind text NOT NULL,
                               occur_time timestamptz NOT NULL, invitation_id uuid, inviter_id text, batch_id uuid,
                               redeem_time timestamptz, UNIQUE (user_id, kind));
VACUUM ANALYZE;
