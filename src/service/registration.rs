//! RegisterMembers: the service learns users who joined by other routes.

use super::*;
use crate::store::members::Registration;

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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await?;
            let result = async {
                let created = members::insert_new(&mut tx, &cmd.members).await?;
                let updated = members::update_known(&mut tx, &cmd.members, &created).await?;
                // Joining: new members, and known ones given their first join time.
                let mut joined = created.clone();
                joined.extend(updated.iter().filter(|(_, joining)| *joining).map(|(user, _)| user.clone()));
                let granted = self.on_join(&mut tx, &joined).await?;
                Ok::<_, Error>((created.len() as u32, updated.len() as u32, granted))
            }
            .await;
            match result {
                Ok((created, updated, granted)) => {
                    tx.commit().await?;
                    if granted > 0 {
                        self.waker.committed();
                        self.metrics.minted(granted);
                    }
                    tracing::info!(created, updated, granted, "registered members");
                    return Ok(RegisterOutcome { created, updated });
                }
                // Two calls naming the same users in another order can deadlock.
                Err(e) if attempt < MAX_ATTEMPTS && retryable(&e) => tx.rollback().await?,
                Err(e) => return Err(e),
            }
        }
    }
}
