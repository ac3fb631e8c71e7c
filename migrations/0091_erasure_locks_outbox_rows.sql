-- inv_erase_member decided which outbox rows naming the member were sent
-- (deleted) and which pending (re-encoded) in two statements with two
-- snapshots: a row the relay marked sent between them was neither, and
-- kept the old id for good. The rows that name the member are now locked
-- first, so the relay's mark-sent waits for the erasure (and a row it
-- marked sent just before is seen as sent); the split is then stable.
CREATE OR REPLACE FUNCTION inv_erase_member(old text, tomb text, OUT unspent uuid[], OUT pending bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    needle bytea := convert_to(old, 'UTF8');
    named bigint[];
BEGIN
    -- E-mail digests bound to the invitations it redeemed.
    UPDATE invitations SET binding = NULL, binding_digest = NULL
    WHERE binding IS NOT NULL AND (id IN (SELECT invitation_id FROM redemptions WHERE invitee_id = old)
        OR id IN (SELECT invitation_id FROM waitlist_entries WHERE applicant_id = old));
    DELETE FROM redemption_ips WHERE invitee_id = old
        OR redemption_id IN (SELECT id FROM redemptions WHERE invitee_id = old);
    UPDATE members SET user_id = tomb, hidden = true, invite_reason = '' WHERE user_id = old;
    UPDATE members SET invite_updated_by = tomb WHERE invite_updated_by = old;
    UPDATE batches SET minted_by = tomb WHERE minted_by = old;
    UPDATE invitations SET minted_by = tomb WHERE minted_by = old;
    UPDATE invitations SET revoked_by = tomb WHERE revoked_by = old;
    UPDATE invitations SET last_invitee_id = tomb WHERE last_invitee_id = old;
    UPDATE reservations SET invitee_id = tomb WHERE invitee_id = old;
    UPDATE reparents SET reason = '' WHERE user_id = tomb;
    UPDATE reparents SET old_inviter_id = tomb WHERE old_inviter_id = old;
    UPDATE reparents SET new_inviter_id = tomb WHERE new_inviter_id = old;
    UPDATE reparents SET reparented_by = tomb WHERE reparented_by = old;
    UPDATE waitlist_entries SET applicant_id = tomb, ip_hash = NULL, ip_key_id = NULL, reason = '', review_reason = NULL
    WHERE applicant_id = old;
    UPDATE waitlist_entries SET referrer_member_id = tomb WHERE referrer_member_id = old;
    UPDATE waitlist_entries SET reviewed_by = tomb WHERE reviewed_by = old;
    UPDATE conversions SET inviter_id = tomb WHERE inviter_id = old;
    UPDATE conversions SET voided_by = tomb WHERE voided_by = old;
    UPDATE conversions SET reviewed_by = tomb WHERE reviewed_by = old;
    SELECT coalesce(array_agg(seq), '{}') INTO named
    FROM (SELECT seq FROM outbox WHERE position(needle IN payload) > 0 ORDER BY seq FOR UPDATE) AS locked;
    DELETE FROM outbox WHERE seq = ANY(named) AND sent_time IS NOT NULL;
    SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO pending
    FROM outbox WHERE seq = ANY(named) AND sent_time IS NULL;
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO unspent
    FROM invitations WHERE inviter_id = tomb AND revoke_time IS NULL AND uses < max_uses;
END;
$$;
