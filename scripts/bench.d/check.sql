-- CheckCode's statements, in order, as src/store sends them (captured with
-- log_statement = all): invitations::by_code_hash, reservations'
-- live-use count (service::reservation::availability), members'
-- invite_enabled. Where the service binds a value pgbench cannot compute
-- (the code's HMAC), a subquery on bench_codes (scripts/bench) supplies it.
\set k random(1, :codes)
SELECT id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, binding, binding_digest, abuse_flags FROM invitations WHERE code_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[]) LIMIT 1 \gset
SELECT (SELECT count(*) FROM reservations r WHERE r.invitation_id = invitations.id AND r.status = 'held' AND r.expire_time > clock_timestamp()) FROM invitations WHERE id = :id;
SELECT invite_enabled FROM members WHERE user_id = :inviter_id;
