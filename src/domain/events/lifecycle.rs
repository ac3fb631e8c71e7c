//! The events of an invitation's edits and restores (issue 18).

use super::grouped::invitation_ref;
use super::*;

impl Event {
    /// `invitation` (as it is after the edit) changed in `changed_fields`.
    pub fn updated(invitation: &Invitation, changed_fields: &[&str], updated_by: &str) -> Self {
        let payload = Payload::Updated(pb::InvitationUpdated {
            invitation_id: invitation.id.to_string(),
            inviter_id: invitation.inviter_id.clone().unwrap_or_default(),
            batch_id: invitation.batch_id.to_string(),
            changed_fields: changed_fields.iter().map(|f| (*f).to_owned()).collect(),
            updated_by: updated_by.to_owned(),
            expire_time: invitation.expire_time.map(timestamp),
            uses: invitation.uses as u32,
            max_uses: invitation.max_uses as u32,
            label: invitation.label.clone(),
            attributes: invitation.attributes.to_map(),
        });
        Self::new(EventType::Updated, partition_for(invitation), now(), payload)
    }

    /// `invitation` (as it is after the restore) is no longer revoked.
    pub fn restored(invitation: &Invitation, reason: &str, restored_by: &str) -> Self {
        let payload = Payload::Restored(pb::InvitationRestored {
            invitation: Some(invitation_ref(invitation)),
            reason: reason.to_owned(),
            restored_by: restored_by.to_owned(),
        });
        Self::new(EventType::Restored, partition_for(invitation), now(), payload)
    }
}
