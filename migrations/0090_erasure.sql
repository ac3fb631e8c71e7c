-- EraseMember (issue 19; docs/design.md, "Erasure"): the member's user id is
-- replaced by a tombstone everywhere the service keeps it, in one
-- transaction. The keys that reference members (user_id) follow the new
-- value (ON UPDATE CASCADE), so one UPDATE of members renames every edge.
ALTER TABLE members DROP CONSTRAINT members_inviter_id_fkey,
    ADD CONSTRAINT members_inviter_id_fkey FOREIGN KEY (inviter_id) REFERENCES members (user_id) ON UPDATE CASCADE;
ALTER TABLE invitations DROP CONSTRAINT invitations_inviter_id_fkey,
    ADD CONSTRAINT invitations_inviter_id_fkey FOREIGN KEY (inviter_id) REFERENCES members (user_id) ON UPDATE CASCADE;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_inviter_id_fkey,
    ADD CONSTRAINT redemptions_inviter_id_fkey FOREIGN KEY (inviter_id) REFERENCES members (user_id) ON UPDATE CASCADE,
    DROP CONSTRAINT redemptions_invitee_id_fkey,
    ADD CONSTRAINT redemptions_invitee_id_fkey FOREIGN KEY (invitee_id) REFERENCES members (user_id) ON UPDATE CASCADE;
ALTER TABLE reparents DROP CONSTRAINT reparents_user_id_fkey,
    ADD CONSTRAINT reparents_user_id_fkey FOREIGN KEY (user_id) REFERENCES members (user_id) ON UPDATE CASCADE;
ALTER TABLE conversions DROP CONSTRAINT conversions_user_id_fkey,
    ADD CONSTRAINT conversions_user_id_fkey FOREIGN KEY (user_id) REFERENCES members (user_id) ON UPDATE CASCADE;

-- Erasures done: a keyed digest of the old user id (never the id) to its
-- tombstone, so erasing again answers the same.
CREATE TABLE erasures (
    digest     bytea PRIMARY KEY,
    tombstone  text NOT NULL,
    erase_time timestamptz NOT NULL DEFAULT now()
);

-- Rewrites every column that can hold the user id `old` to `tomb`, deletes
-- what was about the member (IP hashes, e-mail digests, notes and reasons
-- written about it) and the sent outbox rows that name it. Returns the ids
-- of its unspent invitations (revoked by the caller, with events) and the
-- pending outbox rows that name it (re-encoded by the caller). The caller
-- holds the member's tree lock and row lock.
CREATE FUNCTION inv_erase_member(old text, tomb text, OUT unspent uuid[], OUT pending bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    needle bytea := convert_to(old, 'UTF8');
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
    DELETE FROM outbox WHERE sent_time IS NOT NULL AND position(needle IN payload) > 0;
    SELECT coalesce(array_agg(seq ORDER BY seq), '{}') INTO pending
    FROM outbox WHERE sent_time IS NULL AND position(needle IN payload) > 0;
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO unspent
    FROM invitations WHERE inviter_id = tomb AND revoke_time IS NULL AND uses < max_uses;
END;
$$;
