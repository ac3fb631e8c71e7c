//! The `erased` event (EraseMember) and the rewrite of pending events that
//! name an erased member (docs/design.md, "Erasure").

use prost::Message;
use uuid::Uuid;

use super::{Event, EventType, Payload, now, partition_of};
use crate::pb;

impl Event {
    /// A member was erased: `user_id` is the old id (so other services can
    /// erase it too), partitioned like the member's own events so it is
    /// published after them.
    pub fn erased(user_id: &str, tombstone: &str) -> Self {
        let payload = Payload::Erased(pb::Erased { user_id: user_id.to_owned(), tombstone: tombstone.to_owned() });
        Self::new(EventType::Erased, partition_of(Some(user_id), Uuid::nil()), now(), payload)
    }
}

/// A pending event's payload with every user id field equal to `old`
/// replaced by `tomb`; None when the payload does not decode (left as it is).
pub fn rename_user(payload: &[u8], old: &str, tomb: &str) -> Option<Vec<u8>> {
    let mut event = pb::InvitationEvent::decode(payload).ok()?;
    let fix = |s: &mut String| {
        if s == old {
            tomb.clone_into(s);
        }
    };
    let refs = |refs: &mut Vec<pb::InvitationRef>| refs.iter_mut().for_each(|r| fix(&mut r.inviter_id));
    match event.event.as_mut()? {
        Payload::Minted(e) => {
            fix(&mut e.minted_by);
            e.grants.iter_mut().for_each(|g| fix(&mut g.inviter_id));
        }
        Payload::Redeemed(e) => {
            fix(&mut e.inviter_id);
            fix(&mut e.invitee_id);
        }
        Payload::Revoked(e) => {
            refs(&mut e.invitations);
            fix(&mut e.revoked_by);
        }
        Payload::Expired(e) => refs(&mut e.invitations),
        Payload::Reservation(e) => {
            fix(&mut e.inviter_id);
            fix(&mut e.invitee_id);
        }
        Payload::PrivilegesChanged(e) => {
            if e.user_id == old {
                e.reason.clear();
            }
            fix(&mut e.user_id);
            fix(&mut e.changed_by);
        }
        Payload::WaitlistJoined(e) => {
            fix(&mut e.applicant_id);
            fix(&mut e.referrer);
        }
        Payload::WaitlistReviewed(e) => {
            e.applicant_ids.iter_mut().for_each(fix);
            fix(&mut e.reviewed_by);
        }
        Payload::WaitlistAdmitted(e) => {
            fix(&mut e.applicant_id);
            fix(&mut e.inviter_id);
        }
        Payload::Updated(e) => {
            fix(&mut e.inviter_id);
            fix(&mut e.updated_by);
        }
        Payload::Restored(e) => {
            if let Some(r) = e.invitation.as_mut() {
                fix(&mut r.inviter_id);
            }
            fix(&mut e.restored_by);
        }
        Payload::Converted(e) => {
            fix(&mut e.user_id);
            fix(&mut e.inviter_id);
        }
        Payload::RewardGranted(e) => {
            fix(&mut e.user_id);
            fix(&mut e.inviter_id);
        }
        Payload::RewardVoided(e) => {
            fix(&mut e.user_id);
            fix(&mut e.inviter_id);
            fix(&mut e.voided_by);
        }
        // The one event that keeps the old id (documented exception).
        Payload::Erased(_) => return None,
    }
    Some(event.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_the_member_and_drops_the_reason_written_about_it() {
        let e = Event::privileges_changed("alice", false, "spam ring", "mod");
        let out = rename_user(&e.payload, "alice", "erased:x").expect("decodes");
        let decoded = pb::InvitationEvent::decode(out.as_slice()).expect("re-encoded");
        let Some(Payload::PrivilegesChanged(p)) = decoded.event else { panic!("a privileges event") };
        assert_eq!((p.user_id.as_str(), p.reason.as_str(), p.changed_by.as_str()), ("erased:x", "", "mod"));
        assert_eq!(decoded.id, e.id.to_string());
    }

    #[test]
    fn leaves_the_erased_event_alone() {
        let e = Event::erased("alice", "erased:x");
        assert_eq!(rename_user(&e.payload, "alice", "erased:x"), None);
    }
}
