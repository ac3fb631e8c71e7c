-- JoinWaitlist through a referral handle: the referrer entry is bumped too.
\set a random(1, 2000000000)
\set r random(1, :n)
SELECT j.status, j.place FROM inv_waitlist_join(gen_random_uuid(), 'bench-r' || :client_id || '-' || :a,
    'rr' || :client_id || '-' || :a, 'rseed' || :r, '', 10, 1000, 50, now() - interval '30 days',
    ROW('{}'::bytea[], now(), 5, 'off', NULL, '{}'::bytea[], now(), 'off', 'off', NULL, 1)::inv_screening,
    gen_random_uuid(), 0::smallint, '\x0a00'::bytea) j;
