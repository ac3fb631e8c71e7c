-- RecordConversion's statement (store::conversions::record): a new
-- conversion of a member with an inviter, rewarded 1:1 at once (two
-- one-invitation batches through inv_mint_grant, their minted events, the
-- converted and reward.granted events). A fresh kind per call: each
-- (member, kind) converts once.
\set m random(1, :n)
\set a random(1, 2000000000)
SELECT r.status FROM inv_record_conversion(gen_random_uuid(), 'm-' || :m, 'k' || :client_id || '-' || :a, now(), NULL,
    ROW(1, 1, 0, 0, 1, 0, 'grant')::inv_reward_rule,
    ROW(gen_random_uuid(), gen_random_uuid(), now(), '\x0a00'::bytea, ARRAY[gen_random_uuid()],
        ARRAY[decode(md5(random()::text), 'hex')], ARRAY['\x00'::bytea], '{}'::bytea[], '{}'::bytea[], '{}'::text[])::inv_grant,
    ROW(gen_random_uuid(), gen_random_uuid(), now(), '\x0a00'::bytea, ARRAY[gen_random_uuid()],
        ARRAY[decode(md5(random()::text), 'hex')], ARRAY['\x00'::bytea], '{}'::bytea[], '{}'::bytea[], '{}'::text[])::inv_grant,
    gen_random_uuid(), now(), '\x0a00'::bytea, '\x0a00'::bytea, gen_random_uuid(), '\x0a00'::bytea,
    '\x0a00'::bytea) r;
