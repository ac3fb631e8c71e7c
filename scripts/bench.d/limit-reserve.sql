-- Reserve's limit: one statement that leases a use if one is free (not
-- spent, not held by a live lease) under the invitation's row lock, and
-- appends the event row. Codes as in limit-redeem.sql, each reserved once.
\set n :n + 1
\set k :lo + :n * :clients + :client_id
WITH inv AS (
  SELECT id FROM invitations
  WHERE code_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[])
    AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now())
    AND uses + (SELECT count(*) FROM reservations r WHERE r.invitation_id = invitations.id AND r.status = 'held' AND r.expire_time > now()) < max_uses
  FOR NO KEY UPDATE),
lease AS (
  INSERT INTO reservations (id, invitation_id, expire_time)
  SELECT gen_random_uuid(), id, now() + interval '15 minutes' FROM inv RETURNING id)
INSERT INTO outbox (id, event_type, partition, payload)
SELECT gen_random_uuid(), 'reservation.reserved', 0, decode(repeat('0a', 150), 'hex') FROM lease;
