//! The expiry sweeper: finds invitations whose `expire_time` passed and
//! announces each once (`expired` event). Expiry itself needs no sweeper (an
//! invitation past its time is refused by the database clock); this only
//! turns the passage of time into an event.
//!
//! Exactly once across replicas: each sweep marks the invitations it takes
//! (`expire_swept_time`, under `FOR UPDATE SKIP LOCKED`) and appends their
//! events in the same transaction, so two replicas never take the same row and
//! a crash before commit leaves it for the next sweep.

use std::time::Duration;

use crate::domain::Invitation;
use crate::domain::events;
use crate::outbox::Waker;
use crate::store::invitations;
use crate::store::outbox;

/// Invitations marked per transaction.
const BATCH: i64 = 1000;

/// Sweeps every `interval` until the task is dropped.
pub async fn sweep_expired_invitations(pool: sqlx::PgPool, interval: Duration, waker: Waker) {
    loop {
        tokio::time::sleep(interval).await;
        match sweep_expired(&pool, &waker).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "announced expired invitations"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired invitations failed; retrying next interval"),
        }
    }
}

/// One sweep, in batches until none are left; returns how many expired
/// with uses left (fully used or revoked ones are marked, not announced).
async fn sweep_expired(pool: &sqlx::PgPool, waker: &Waker) -> Result<usize, sqlx::Error> {
    let mut announced = 0;
    loop {
        let mut tx = pool.begin().await?;
        let swept = invitations::sweep_expired(&mut tx, BATCH).await?;
        let expired: Vec<Invitation> =
            swept.iter().filter(|i| i.uses < i.max_uses && i.revoke_time.is_none()).cloned().collect();
        outbox::append(&mut tx, &events::expired(&expired)).await?;
        tx.commit().await?;
        if !expired.is_empty() {
            waker.committed();
        }
        announced += expired.len();
        if (swept.len() as i64) < BATCH {
            return Ok(announced);
        }
    }
}
