-- ListForUser's statements (first page of 50, so LIMIT 51), as src/store
-- sends them: invitations::page_for_owner, then graph::inviter_of. The owner
-- is a random seeded owner (the layout of src/bin/invitations-load/plan.rs);
-- its user id comes from a subquery, as pgbench cannot compute it. The
-- unset filters ($2, $3) are NULL literals (pgbench cannot bind NULL).
\set owner :roots + 1 + random(0, 1) * :side + random(0, :owners - 1)
SELECT id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, binding, binding_digest, abuse_flags FROM invitations WHERE inviter_id = (SELECT user_id FROM members WHERE id = :owner) AND (NULL::uuid IS NULL OR id < NULL) AND (NULL::text IS NULL OR NULL = CASE WHEN uses >= max_uses THEN 'redeemed' WHEN revoke_time IS NOT NULL THEN 'revoked' WHEN expire_time <= now() THEN 'expired' ELSE 'unspent' END) ORDER BY id DESC LIMIT 51;
SELECT inviter_id FROM members WHERE user_id = (SELECT user_id FROM members WHERE id = :owner);
