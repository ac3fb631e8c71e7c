-- The least SQL that does an unrewarded conversion's work: read the
-- member's redemption, insert the conversion (unique per member and kind),
-- append the converted event.
\set m random(1, :n)
\set a random(1, 2000000000)
WITH r AS (SELECT invitation_id, inviter_id, batch_id, redeem_time FROM redemptions WHERE invitee_id = 'm-' || :m),
     c AS (INSERT INTO bare_conversions (id, user_id, kind, occur_time, invitation_id, inviter_id, batch_id, redeem_time)
           SELECT gen_random_uuid(), 'm-' || :m, 'k' || :client_id || '-' || :a, now(), invitation_id, inviter_id,
                  batch_id, redeem_time FROM r
           ON CONFLICT DO NOTHING RETURNING id)
INSERT INTO outbox (id, event_type, partition, payload) SELECT gen_random_uuid(), 'converted', 0, '\x0a00' FROM c;
