//! The retention of stored idempotent answers (`--request-id-retention`):
//! a request id is honoured for that long after its first answer, then its
//! record is deleted and the same id starts a new call.

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::store::idempotency;

/// Stored answers one DELETE removes.
const SWEEP_BATCH: i64 = 10_000;

/// Deletes the stored answers older than `retention`: at once, then every
/// `interval`, until shutdown, in batches of `SWEEP_BATCH` (each its own
/// autocommit statement, so a long backlog never holds locks for long).
/// Several replicas may sweep at once: each skips the rows another holds.
pub async fn sweep_request_ids(pool: PgPool, retention: Duration, interval: Duration) {
    loop {
        let before = OffsetDateTime::now_utc() - retention;
        let swept = async {
            let mut conn = pool.acquire().await?;
            let mut deleted = 0;
            loop {
                let n = idempotency::delete_older_than(&mut conn, before, SWEEP_BATCH).await?;
                deleted += n;
                if n < SWEEP_BATCH as u64 {
                    return Ok::<_, sqlx::Error>(deleted);
                }
            }
        };
        match swept.await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted stored idempotent answers past the request id retention"),
            Err(e) => tracing::warn!(error = %e, "sweeping stored idempotent answers failed; retrying next interval"),
        }
        tokio::time::sleep(interval).await;
    }
}
