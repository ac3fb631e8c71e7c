-- ListForUser's limit: one keyset page (first page of 50, LIMIT 51 to know
-- whether another follows) of the owner's invitations with the columns a
-- listed invitation shows. The owner's user id comes from a subquery, as in
-- list.sql, because pgbench cannot compute it.
\set owner :roots + 1 + random(0, 1) * :side + random(0, :owners - 1)
SELECT id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, binding, binding_digest, abuse_flags, attributes FROM invitations WHERE inviter_id = (SELECT user_id FROM members WHERE id = :owner) ORDER BY id DESC LIMIT 51;
