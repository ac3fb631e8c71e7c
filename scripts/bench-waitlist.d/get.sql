-- GetWaitlistEntry's statement (store::waitlist::get) by applicant.
\set a random(1, :n)
SELECT e.id, e.state, e.bump, inv_waitlist_position(e) AS position, i.code_ciphertext
FROM waitlist_entries e LEFT JOIN invitations i ON i.id = e.invitation_id WHERE e.applicant_id = 'seed-' || :a;
