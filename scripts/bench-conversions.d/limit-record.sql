-- The least SQL that does a rewarded conversion's work: the unrewarded
-- one's, plus two one-invitation batches (batch rows, invitations, minted
-- events) and the reward.granted event.
\set m random(1, :n)
\set a random(1, 2000000000)
WITH r AS (SELECT invitation_id, inviter_id, batch_id, redeem_time FROM redemptions WHERE invitee_id = 'm-' || :m),
     c AS (INSERT INTO bare_conversions (id, user_id, kind, occur_time, invitation_id, inviter_id, batch_id, redeem_time)
           SELECT gen_random_uuid(), 'm-' || :m, 'k' || :client_id || '-' || :a, now(), invitation_id, inviter_id,
                  batch_id, redeem_time FROM r
           ON CONFLICT DO NOTHING RETURNING id, inviter_id),
     sides AS (SELECT gen_random_uuid() AS batch, owner FROM c, LATERAL (VALUES (c.inviter_id), ('m-' || :m)) o(owner)),
     b AS (INSERT INTO batches (id, label, minted_by, invitation_count) SELECT batch, 'reward_k', 'reward_k', 1 FROM sides),
     i AS (INSERT INTO invitations (id, code_hash, code_ciphertext, code_key_id, inviter_id, batch_id, label, minted_by)
           SELECT gen_random_uuid(), decode(md5(random()::text), 'hex'), '\x00', 1, owner, batch, 'reward_k', 'reward_k'
           FROM sides)
INSERT INTO outbox (id, event_type, partition, payload)
SELECT gen_random_uuid(), t, 0, '\x0a00' FROM c, LATERAL (VALUES ('converted'), ('minted'), ('minted'), ('reward.granted')) e(t);
