-- Redeem's limit: the least SQL that does a Redeem's work (new invitee,
-- owned single-use code) in one statement: spend a use with the race-safe
-- conditional UPDATE on the code's keyed hash, insert the invitee's member
-- row under the inviter's path, record the edge, append the event row (a
-- payload of the size a redeemed event has). Each client spends codes no
-- other transaction touches (k = lo + n * clients + client_id), so every
-- transaction does the whole work. The code's HMAC comes from bench_codes,
-- as pgbench cannot compute it.
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
  SELECT id, inviter_id, :invitee::text, batch_id FROM spent)
INSERT INTO outbox (id, event_type, partition, payload)
SELECT gen_random_uuid(), 'redeemed', 0, decode(repeat('0a', 150), 'hex') FROM spent;
