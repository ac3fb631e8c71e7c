-- The service's background fold (store::fold with store::waitlist::LINE_COUNTS)
WITH batch AS (
    DELETE FROM waitlist_line_deltas WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM waitlist_line_deltas LIMIT 10000 FOR UPDATE SKIP LOCKED))
    RETURNING bucket, entries),
folded AS (
    INSERT INTO waitlist_line_counts (bucket, entries)
    SELECT bucket, sum(entries) FROM batch GROUP BY bucket ORDER BY bucket
    ON CONFLICT (bucket) DO UPDATE SET entries = waitlist_line_counts.entries + EXCLUDED.entries
    RETURNING 1)
SELECT count(*) FROM batch;
-- …and its VACUUM of the deltas, which the service runs once it has moved
-- 5,000 of them (every few seconds at these rates).
VACUUM (SKIP_LOCKED, TRUNCATE false) waitlist_line_deltas;
