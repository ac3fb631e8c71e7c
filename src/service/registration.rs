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
                Ok::<_, sqlx::Error>((created.len() as u32, updated as u32))
            }
            .await;
            match result {
                Ok((created, updated)) => {
                    tx.commit().await?;
                    tracing::info!(created, updated, "registered members");
                    return Ok(RegisterOutcome { created, updated });
                }
                // Two calls naming the same users in another order can deadlock.
                Err(e) if attempt < MAX_ATTEMPTS && store::is_retryable(&e) => tx.rollback().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
