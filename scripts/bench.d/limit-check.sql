-- CheckCode's limit: one probe of the code's keyed hash returning the state
-- it answers (owner, uses, expiry, revocation, binding, the attributes the
-- invitee carries).
\set k random(1, :codes)
SELECT inviter_id, uses, max_uses, expire_time, revoke_time, binding, attributes FROM invitations WHERE code_hash = ANY((SELECT hashes FROM bench_codes WHERE k = :k)::bytea[]);
