-- Reserve's statement as src/store/common_path.rs sends it (no client IP,
-- default settings: no attempt key without an IP). Codes as in
-- limit-reserve.sql, each reserved once.
\set n :n + 1
\set k :lo + :n * :clients + :client_id
SELECT (r.reservation).id, (r.reservation).invitation_id, (r.reservation).status, (r.reservation).create_time, (r.reservation).expire_time, (r.reservation).end_time, (r.reservation).invitee_id, r.inviter_id, r.status AS outcome FROM inv_reserve((SELECT hashes FROM bench_codes WHERE k = :k), gen_random_uuid(), 900000000, gen_random_uuid(), now(), decode(repeat('0a', 50), 'hex'), decode('2220', 'hex') || convert_to(md5(:k::text), 'UTF8'), ROW('{}'::bytea[], date_trunc('hour', now()), 5, 'block', NULL::text, '{}'::bytea[], now() - interval '30 days', 'flag', 'flag', NULL::bytea, 1)::inv_screening, 30000000) r;
