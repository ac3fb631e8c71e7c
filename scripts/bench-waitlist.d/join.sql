-- JoinWaitlist's statement (store::waitlist::join): a new applicant, no
-- referrer, screening off, the joined event appended.
\set a random(1, 2000000000)
SELECT j.status, j.place FROM inv_waitlist_join(gen_random_uuid(), 'bench-' || :client_id || '-' || :a,
    'rb' || :client_id || '-' || :a, NULL, '', 10, 1000, 50, now() - interval '30 days',
    ROW('{}'::bytea[], now(), 5, 'off', NULL, '{}'::bytea[], now(), 'off', 'off', NULL, 1)::inv_screening,
    gen_random_uuid(), 0::smallint, '\x0a00'::bytea) j;
