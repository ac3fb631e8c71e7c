//! Revoke: by ids, or every unspent invitation of a user.

use uuid::Uuid;

use crate::domain::error::Error;
use crate::domain::history::{Entry, Operation};
use crate::domain::{Invitation, UserId, events};
use crate::store::history;
use crate::store::{invitations, outbox};

use super::{Answer, Idempotency, Invitations};

pub enum RevokeTarget {
    Ids(Vec<Uuid>),
    UnspentOf(UserId),
}

pub struct RevokeCommand {
    pub target: RevokeTarget,
    pub reason: String,
    pub revoked_by: String,
}

pub struct RevokeOutcome {
    pub invitations: Vec<Invitation>,
    pub revoked_count: u32,
}

impl Invitations {
    #[tracing::instrument(name = "db.revoke", skip_all, fields(db.system = "postgresql"))]
    pub async fn revoke(
        &self,
        cmd: RevokeCommand,
        idem: Idempotency<'_, RevokeOutcome>,
    ) -> Result<Answer<RevokeOutcome>, Error> {
        if let Some(bytes) = self.replay("Revoke", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut tx = self.pool.begin().await?;
        let (outcome, changed) = match &cmd.target {
            RevokeTarget::Ids(ids) => {
                let found = invitations::by_ids(&mut tx, ids).await?;
                if found.len() != ids.len() {
                    return Err(Error::NotFound { what: "invitation", field: "invitation_ids" });
                }
                let changed = invitations::revoke_ids(&mut tx, ids, &cmd.reason, &cmd.revoked_by).await?;
                let invitations = self.reveal(invitations::by_ids(&mut tx, ids).await?);
                (RevokeOutcome { invitations, revoked_count: changed.len() as u32 }, changed)
            }
            RevokeTarget::UnspentOf(user) => {
                let invitations = self.reveal(
                    invitations::revoke_unspent_of_all(
                        &mut tx,
                        &[user.as_str().to_owned()],
                        &cmd.reason,
                        &cmd.revoked_by,
                    )
                    .await?,
                );
                let revoked_count = invitations.len() as u32;
                let changed = invitations.clone();
                (RevokeOutcome { invitations, revoked_count }, changed)
            }
        };
        outbox::append(&mut tx, &events::revoked(&changed, &cmd.reason, &cmd.revoked_by)).await?;
        let revoked = outcome.revoked_count;
        let users: Vec<&str> = match &cmd.target {
            RevokeTarget::UnspentOf(user) => vec![user.as_str()],
            RevokeTarget::Ids(_) => Vec::new(),
        };
        let entry = Entry::new(Operation::Revoke, &cmd.revoked_by)
            .invitations(changed.iter().map(|inv| inv.id))
            .users(users)
            .reason(&cmd.reason)
            .request(idem.request_id.as_ref())
            .detail("count", revoked);
        if !changed.is_empty() {
            history::append(&mut tx, &entry).await?;
        }
        let answer = self.commit_answer(tx, "Revoke", &idem, outcome).await?;
        tracing::info!(revoked, "revoked invitations");
        Ok(answer)
    }
}
