//! An invitation after it exists: UpdateInvitation (AIP-134 edits) and
//! RestoreInvitation (un-revoking). Admin calls: one ordinary transaction
//! each, under the invitation's row lock (`store::lifecycle`), with their
//! event in the same transaction and the answer stored for request_id.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Invitation;
use crate::domain::attributes::Attributes;
use crate::domain::code;
use crate::domain::error::Error;
use crate::domain::events::Event;
use crate::domain::history::{Entry, Operation};
use crate::store::history;
use crate::store::lifecycle::{self, Edit, Locked};
use crate::store::outbox;

use super::{Answer, Idempotency, Invitations};

/// The editable fields; `None` leaves a field as it is.
#[derive(Default)]
pub struct UpdateCommand {
    pub id: Uuid,
    /// `Some(None)`: never expires.
    pub expire_time: Option<Option<OffsetDateTime>>,
    pub max_uses: Option<u32>,
    pub label: Option<String>,
    pub note: Option<String>,
    pub attributes: Option<Attributes>,
    pub updated_by: String,
}

pub struct RestoreCommand {
    pub id: Uuid,
    pub reason: String,
    pub restored_by: String,
}

impl Invitations {
    #[tracing::instrument(name = "db.update_invitation", skip_all, fields(db.system = "postgresql"))]
    pub async fn update_invitation(
        &self,
        cmd: UpdateCommand,
        idem: Idempotency<'_, Invitation>,
    ) -> Result<Answer<Invitation>, Error> {
        if let Some(bytes) = self.replay("UpdateInvitation", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut tx = self.pool.begin().await?;
        let Locked { invitation: mut inv, held, now, .. } = lifecycle::lock(&mut tx, cmd.id).await?.ok_or(NOT_FOUND)?;
        if inv.uses >= inv.max_uses {
            return Err(Error::AlreadyRedeemed);
        }
        if inv.revoke_time.is_some() {
            return Err(Error::Revoked);
        }
        // Opened once: the vanity check below reads it, the answer shows it.
        self.reveal_one(&mut inv);
        if let Some(Some(t)) = cmd.expire_time
            && t <= now
        {
            return Err(Error::invalid("invitation.expire_time", "must be in the future"));
        }
        if cmd.expire_time == Some(None) && !inv.code.is_empty() && code::is_vanity(&inv.code) {
            // Mint requires a vanity code's expiry (docs/design.md, "Vanity
            // codes"): a guessable code must not live forever.
            return Err(Error::invalid(
                "invitation.expire_time",
                "a vanity code must expire: it can be moved, not cleared",
            ));
        }
        let floor = i64::from(inv.uses) + held;
        if let Some(max_uses) = cmd.max_uses
            && i64::from(max_uses) < floor
        {
            return Err(Error::MaxUsesBelowHeld { held: floor });
        }
        let edit = Edit {
            expire_time: cmd.expire_time.unwrap_or(inv.expire_time),
            max_uses: cmd.max_uses.map_or(inv.max_uses, |m| m as i32),
            label: cmd.label.as_deref().unwrap_or(&inv.label),
            note: cmd.note.as_deref().unwrap_or(&inv.note),
            attributes: cmd.attributes.as_ref().unwrap_or(&inv.attributes),
            expiry_changed: cmd.expire_time.is_some_and(|t| t != inv.expire_time),
        };
        let changed: Vec<&str> = [
            ("expire_time", edit.expiry_changed),
            ("max_uses", edit.max_uses != inv.max_uses),
            ("label", edit.label != inv.label),
            ("note", edit.note != inv.note),
            ("attributes", *edit.attributes != inv.attributes),
        ]
        .into_iter()
        .filter_map(|(field, changed)| changed.then_some(field))
        .collect();
        let updated = if changed.is_empty() {
            inv.clone()
        } else {
            let updated = lifecycle::apply(&mut tx, inv.id, &edit).await?;
            outbox::append(&mut tx, &[Event::updated(&updated, &changed, &cmd.updated_by)]).await?;
            let entry = Entry::new(Operation::Update, &cmd.updated_by)
                .invitations([inv.id])
                .request(idem.request_id.as_ref())
                .detail("fields", changed.join(","));
            history::append(&mut tx, &entry).await?;
            Invitation { code: inv.code.clone(), ..updated }
        };
        let answer = self.commit_answer(tx, "UpdateInvitation", &idem, updated).await?;
        tracing::info!(invitation_id = %cmd.id, changed = ?changed, "updated an invitation");
        Ok(answer)
    }

    #[tracing::instrument(name = "db.restore_invitation", skip_all, fields(db.system = "postgresql"))]
    pub async fn restore_invitation(
        &self,
        cmd: RestoreCommand,
        idem: Idempotency<'_, Invitation>,
    ) -> Result<Answer<Invitation>, Error> {
        if let Some(bytes) = self.replay("RestoreInvitation", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut tx = self.pool.begin().await?;
        let Locked { invitation: inv, now, owner_enabled, .. } =
            lifecycle::lock(&mut tx, cmd.id).await?.ok_or(NOT_FOUND)?;
        // Revoke leaves fully spent invitations alone, so a revoked one has
        // uses left.
        if inv.revoke_time.is_none() {
            return Err(Error::NotRevoked);
        }
        if inv.expire_time.is_some_and(|t| t <= now) {
            return Err(Error::Expired);
        }
        if !owner_enabled {
            return Err(Error::InviterDisabled);
        }
        let mut restored = lifecycle::restore(&mut tx, inv.id).await?;
        outbox::append(&mut tx, &[Event::restored(&restored, &cmd.reason, &cmd.restored_by)]).await?;
        let entry = Entry::new(Operation::Restore, &cmd.restored_by)
            .invitations([inv.id])
            .reason(&cmd.reason)
            .request(idem.request_id.as_ref());
        history::append(&mut tx, &entry).await?;
        self.reveal_one(&mut restored);
        let answer = self.commit_answer(tx, "RestoreInvitation", &idem, restored).await?;
        tracing::info!(invitation_id = %cmd.id, "restored an invitation");
        Ok(answer)
    }
}

const NOT_FOUND: Error = Error::NotFound { what: "invitation", field: "invitation_id" };
