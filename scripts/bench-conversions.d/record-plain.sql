-- RecordConversion's statement without a reward rule for the kind.
\set m random(1, :n)
\set a random(1, 2000000000)
SELECT r.status FROM inv_record_conversion(gen_random_uuid(), 'm-' || :m, 'k' || :client_id || '-' || :a, now(), NULL,
    ROW(0, 0, 0, 0, 1, 0, 'grant')::inv_reward_rule,
    ROW(NULL::uuid, NULL::uuid, NULL::timestamptz, NULL::bytea, '{}'::uuid[], '{}'::bytea[], '{}'::bytea[],
        '{}'::bytea[], '{}'::bytea[], '{}'::text[])::inv_grant,
    ROW(NULL::uuid, NULL::uuid, NULL::timestamptz, NULL::bytea, '{}'::uuid[], '{}'::bytea[], '{}'::bytea[],
        '{}'::bytea[], '{}'::bytea[], '{}'::text[])::inv_grant,
    gen_random_uuid(), now(), '\x0a00'::bytea, '\x0a00'::bytea, gen_random_uuid(), '\x0a00'::bytea,
    '\x0a00'::bytea) r;
