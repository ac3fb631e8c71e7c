-- :n entries in the line (every tenth bumped by up to 996 places), the same
-- number of rows in the bare table the limits use, folded counters.
INSERT INTO waitlist_entries (id, applicant_id, referral_handle, bump_cap, bump)
SELECT gen_random_uuid(), 'seed-' || g, 'rseed' || g, 1000, CASE WHEN g % 10 = 0 THEN g % 997 ELSE 0 END
FROM generate_series(1, :n) g;
INSERT INTO waitlist_line_counts SELECT bucket, sum(entries) FROM waitlist_line_deltas GROUP BY bucket;
TRUNCATE waitlist_line_deltas;
CREATE TABLE bare_entries (id uuid PRIMARY KEY, applicant_id text NOT NULL UNIQUE, referral_handle text NOT NULL UNIQUE,
                           join_time timestamptz NOT NULL DEFAULT now());
INSERT INTO bare_entries (id, applicant_id, referral_handle)
SELECT gen_random_uuid(), 'seed-' || g, 'rseed' || g FROM generate_series(1, :n) g;
VACUUM ANALYZE;
