-- Invitations admitted before 0063 become applicant-bound: the digest is
-- salt (16 random bytes) || SHA-256('invitations/binding/applicant' || 0x00
-- || salt || applicant_id), as domain::email computes it (a unit test there
-- checks the construction, tests/api/waitlist.rs runs this statement). The
-- trigger they relied on goes.
WITH salted AS (
    SELECT invitation_id, applicant_id, substring(uuid_send(gen_random_uuid()) FROM 1 FOR 16) AS salt
    FROM waitlist_entries WHERE invitation_id IS NOT NULL
)
UPDATE invitations i
SET binding = 'applicant',
    binding_digest = s.salt || sha256('invitations/binding/applicant'::bytea || '\x00'::bytea || s.salt
                                      || convert_to(s.applicant_id, 'UTF8'))
FROM salted s
WHERE s.invitation_id = i.id AND i.binding IS NULL;

DROP TRIGGER waitlist_redeemed ON redemptions;
DROP FUNCTION inv_waitlist_redeemed();
