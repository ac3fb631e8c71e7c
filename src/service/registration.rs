//! RegisterMembers: the service learns users who joined by other routes.

use crate::domain::error::Error;
use crate::store;
use crate::store::members::{self, Registration};

use super::Invitations;

/// Members to register, each user at most once (the transport checks).
pub struct RegisterCommand {
    pub members: Vec<Registration>,
}

pub struct RegisterOutcome {
    pub created: u32,
    pub updated: u32,
}

impl Invitations {
    /// An idempotent upsert: new members are inserted, known ones get the
    /// given join time (unless they joined through Redeem) and visibility.
    #[tracing::instrument(name = "db.register_members", skip_all, fields(db.system = "postgresql"))]
    pub async fn register_members(&self, cmd: RegisterCommand) -> Result<RegisterOutcome, Error> {
        let members = &cmd.members[..];
        // Two calls naming the same users in another order can deadlock.
        let ((created, updated, granted), tx) =
            store::with_retry(&self.pool, store::is_retryable, |mut tx| async move {
                let result = self.register_in(&mut tx, members).await;
                (tx, result)
            })
            .await?;
        tx.commit().await?;
        if granted > 0 {
            self.waker.committed();
            self.metrics.minted(granted);
        }
        tracing::info!(created, updated, granted, "registered members");
        Ok(RegisterOutcome { created, updated })
    }
}

impl Invitations {
    /// One attempt: how many members were created, updated, and invitations granted.
    async fn register_in(
        &self,
        tx: &mut store::Tx<'_>,
        registrations: &[Registration],
    ) -> Result<(u32, u32, u64), Error> {
        let created = members::insert_new(tx, registrations).await?;
        let updated = members::update_known(tx, registrations, &created).await?;
        // Joining: new members, and known ones given their first join time.
        let mut joined = created.clone();
        joined.extend(updated.iter().filter(|(_, joining)| *joining).map(|(user, _)| user.clone()));
        let granted = self.on_join(tx, &joined).await?;
        Ok((created.len() as u32, updated.len() as u32, granted))
    }
}
