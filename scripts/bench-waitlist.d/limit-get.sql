-- The least SQL that reads an entry: one row by its applicant (no position).
\set a random(1, :n)
SELECT * FROM bare_entries WHERE applicant_id = 'seed-' || :a;
