-- The least SQL that does a join's work: insert the entry (with its unique
-- applicant and handle), append the event.
\set a random(1, 2000000000)
WITH e AS (INSERT INTO bare_entries (id, applicant_id, referral_handle)
           VALUES (gen_random_uuid(), 'bench-' || :client_id || '-' || :a, 'rb' || :client_id || '-' || :a)
           ON CONFLICT DO NOTHING RETURNING id)
INSERT INTO outbox (id, event_type, partition, payload) SELECT gen_random_uuid(), 'waitlist.joined', 0, '\x0a00' FROM e;
