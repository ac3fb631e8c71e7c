-- Redeem's statement as src/store/common_path.rs sends it (new invitee,
-- owned single-use code, no client IP, the default abuse settings: the
-- failed-attempt limit on the invitee's key). Values pgbench cannot compute
-- (the code's and the key's HMACs) come from bench_codes; the event id is
-- random and its head (id and time, 50 bytes as the service's are) a stand-in. Codes as in limit-redeem.sql, each spent once.
\set n :n + 1
\set k :lo + :n * :clients + :client_id
\set invitee random(1000000000000, 9999999999999)
SELECT (r.spent).id, (r.spent).code_ciphertext, (r.spent).code_key_id, (r.spent).inviter_id, (r.spent).last_invitee_id, (r.spent).uses, (r.spent).max_uses, (r.spent).create_time, (r.spent).expire_time, (r.spent).last_redeem_time, (r.spent).batch_id, (r.spent).label, (r.spent).note, (r.spent).minted_by, (r.spent).revoke_time, (r.spent).revoke_reason, (r.spent).revoked_by, (r.spent).binding, (r.spent).binding_digest, (r.spent).abuse_flags, r.status, r.redeem_time, r.flags, r.granted FROM inv_redeem((SELECT hashes FROM bench_codes WHERE k = :k), :invitee::text, gen_random_uuid(), now(), decode(repeat('0a', 50), 'hex'), decode('1a0d', 'hex') || convert_to(:invitee::text, 'UTF8'), ROW((SELECT hashes FROM bench_codes WHERE k = :k), date_trunc('hour', now()), 5, 'block', NULL::text, '{}'::bytea[], now() - interval '30 days', 'flag', 'flag', NULL::bytea, 1)::inv_screening, ROW(0, 0, NULL::float8, 1, NULL::inv_grant, NULL::inv_grant)::inv_quotas, 30000000) r;
