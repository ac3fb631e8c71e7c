-- Redeem's statements, in order, as src/store sends them for a new invitee
-- and an owned single-use code (captured with log_statement = all):
-- abuse attempt counter, invitations::by_code_hash, members::ensure_one,
-- graph::joined_through, graph::root_of (invitee, inviter), tree::lock_trees,
-- graph::lock_member, graph::share_member, graph::joined_through,
-- reservations::lock_invitation, invitations::take_use,
-- graph::insert_redemption (the edge, the batch's count delta, the member), tree::graft, outbox::append,
-- COMMIT, the outbox wake-up. Values pgbench cannot compute (HMACs, arrays,
-- the event payload) come from subqueries or array literals instead of
-- parameters; the statements are otherwise verbatim.
\set k random(:redeem_lo, :redeem_hi)
\set invitee random(1000000000000, 9999999999999)
SELECT coalesce(max(failures), 0) FROM attempt_counters WHERE key_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[]) AND window_start = date_trunc('hour', now());
BEGIN;
SELECT id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, binding, binding_digest, abuse_flags FROM invitations WHERE code_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[]) LIMIT 1 \gset
INSERT INTO members (id, path, user_id) SELECT n.id, ARRAY[n.id], n.user_id FROM (SELECT nextval('members_id_seq') AS id, t.* FROM (SELECT :invitee::text AS user_id) t) n ON CONFLICT (user_id) DO NOTHING RETURNING id \gset m_
SELECT invitation_id, redeem_time FROM redemptions WHERE invitee_id = :invitee::text;
SELECT path[1] FROM members WHERE user_id = :invitee::text \gset mover_
SELECT path[1] FROM members WHERE user_id = :inviter_id \gset parent_
\set mover_key :mover_path # 8390880540210757632
\set parent_key :parent_path # 8390880540210757632
SELECT CASE WHEN t.exclusive THEN pg_advisory_xact_lock(t.key) ELSE pg_advisory_xact_lock_shared(t.key) END FROM (SELECT key, exclusive FROM unnest(ARRAY[:mover_key, :parent_key]::bigint[], ARRAY[true, false]::bool[]) AS u(key, exclusive) ORDER BY key OFFSET 0) t;
SELECT m.id, m.user_id, m.inviter_id, m.join_time, m.invitation_id, m.path, m.hidden, coalesce(p.hidden, false) AS parent_hidden, m.invite_enabled, m.invite_reason, m.invite_update_time, m.invite_updated_by FROM members m LEFT JOIN members p ON p.id = m.path[cardinality(m.path) - 1] WHERE m.user_id = :invitee::text FOR UPDATE OF m;
SELECT m.id, m.user_id, m.inviter_id, m.join_time, m.invitation_id, m.path, m.hidden, coalesce(p.hidden, false) AS parent_hidden, m.invite_enabled, m.invite_reason, m.invite_update_time, m.invite_updated_by FROM members m LEFT JOIN members p ON p.id = m.path[cardinality(m.path) - 1] WHERE m.user_id = :inviter_id FOR SHARE OF m \gset p_
SELECT invitation_id, redeem_time FROM redemptions WHERE invitee_id = :invitee::text;
SELECT 1 FROM invitations WHERE id = :id FOR NO KEY UPDATE;
UPDATE invitations SET uses = uses + 1, last_redeem_time = now(), last_invitee_id = :invitee::text WHERE id = :id AND revoke_time IS NULL AND (expire_time IS NULL OR expire_time > clock_timestamp()) AND uses + (SELECT count(*) FROM reservations r WHERE r.invitation_id = invitations.id AND r.status = 'held' AND r.expire_time > clock_timestamp()) < max_uses RETURNING id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, binding, binding_digest, abuse_flags;
INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id) VALUES (:id, :inviter_id, :invitee::text, :batch_id) RETURNING redeem_time \gset
INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses) VALUES (:batch_id, 1, 1, 0, 1);
UPDATE members SET inviter_id = :inviter_id, invitation_id = :id, join_time = coalesce(join_time, :redeem_time) WHERE user_id = :invitee::text;
\set end :m_id + 1
WITH moved AS ( UPDATE members SET path = :p_path::bigint[] || path[1:] WHERE path >= ARRAY[:m_id]::bigint[] AND path < ARRAY[:end]::bigint[] RETURNING 1), size AS (SELECT count(*) AS n FROM moved), changes (id, descendants, invitees) AS ( SELECT a.id, -s.n, CASE WHEN a.ord = cardinality('{}'::bigint[]) THEN -1 ELSE 0 END FROM unnest('{}'::bigint[]) WITH ORDINALITY AS a(id, ord), size s UNION ALL SELECT a.id, s.n, CASE WHEN a.ord = cardinality(:p_path::bigint[]) THEN 1 ELSE 0 END FROM unnest(:p_path::bigint[]) WITH ORDINALITY AS a(id, ord), size s), deltas AS ( INSERT INTO member_count_deltas (member_id, descendants, invitees) SELECT id, sum(descendants), sum(invitees) FROM changes GROUP BY id HAVING sum(descendants) <> 0 OR sum(invitees) <> 0) SELECT n FROM size;
INSERT INTO outbox (id, event_type, partition, create_time, payload) SELECT id, event_type, partition, create_time, payload FROM unnest(ARRAY[gen_random_uuid()], ARRAY['redeemed'], ARRAY[23]::smallint[], ARRAY[now()], ARRAY[decode(repeat('0a', 260), 'hex')]) WITH ORDINALITY AS e(id, event_type, partition, create_time, payload, n) ORDER BY n;
COMMIT;
SELECT pg_notify('invitations_outbox', '');
