-- For comparison, not used by the service: the position as a count of every
-- entry ahead in the line (an index range of up to N entries).
\set a random(1, :n)
SELECT e.id, (SELECT count(*) FROM waitlist_entries o WHERE o.state IN ('waiting', 'approved')
              AND (o.score, o.seq) < (e.score, e.seq)) + 1 AS position
FROM waitlist_entries e WHERE e.applicant_id = 'seed-' || :a;
