//! The outbox around its SQL: the [`Waker`] that tells relays about commits,
//! the maintenance task every replica runs (backlog gauges and log lines,
//! pruning of sent events). Publishing is the relay's (`relay`); writing
//! events is `store::outbox::append`'s; the `invitations outbox` command is
//! `cli::outbox`.

pub mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::store::outbox;
use crate::telemetry::{OutboxMetrics, OutboxStats};

/// Sent events deleted per statement when pruning.
/// A non-empty backlog is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// At most one cross-replica NOTIFY per this interval: each one takes
/// Postgres's notify lock, which serializes commits.
const BROADCAST_EVERY: Duration = Duration::from_millis(50);

/// Tells relays that events were committed: this replica's relay at once (in
/// process), the other replicas' through one debounced Postgres `NOTIFY`
/// ([`broadcast`]). Call [`Waker::committed`] after a commit that appended
/// events; spare calls only cost an empty relay round.
#[derive(Clone, Default)]
pub struct Waker {
    local: Arc<Notify>,
    others: Arc<Notify>,
}

impl Waker {
    pub fn committed(&self) {
        self.local.notify_one();
        self.others.notify_one();
    }

    /// What this replica's relay waits on.
    pub fn local(&self) -> Arc<Notify> {
        self.local.clone()
    }
}

/// Sends the NOTIFYs for [`Waker::committed`], at most one per
/// [`BROADCAST_EVERY`] (commits in between share it).
pub async fn broadcast(pool: PgPool, waker: Waker) {
    loop {
        waker.others.notified().await;
        let sent = async { outbox::notify(&mut *pool.acquire().await?).await };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, "outbox: NOTIFY failed; other relays will poll");
        }
        tokio::time::sleep(BROADCAST_EVERY).await;
    }
}

/// What the maintenance task does and how often.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance {
    pub interval: Duration,
    pub retention: Duration,
}

/// Measures the backlog every interval (gauges, and a log line at most once
/// a minute while events wait), and deletes sent events older than the
/// retention. Runs in every replica, with or without a broker; replicas
/// prune without waiting on each other.
pub async fn maintain(pool: PgPool, settings: Maintenance, metrics: OutboxMetrics) {
    let mut last_log: Option<Instant> = None;
    loop {
        match measure(&pool).await {
            Ok(stats) => {
                metrics.record_backlog(stats);
                if stats.pending > 0 && last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::info!(
                        pending = stats.pending,
                        oldest_age_s = stats.oldest_age.as_secs_f64(),
                        "outbox backlog"
                    );
                    last_log = Some(Instant::now());
                } else if stats.pending == 0 {
                    last_log = None;
                }
            }
            Err(e) => tracing::warn!(error = %e, "measuring the outbox backlog failed"),
        }
        match prune(&pool, settings.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(days = n, "pruned sent outbox events"),
            Err(e) => tracing::warn!(error = %e, "pruning the outbox failed; retrying next interval"),
        }
        tokio::time::sleep(settings.interval).await;
    }
}

async fn measure(pool: &PgPool) -> Result<OutboxStats, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let backlog = outbox::backlog(&mut conn).await?;
    Ok(OutboxStats {
        pending: backlog.pending.max(0) as u64,
        oldest_age: Duration::try_from_secs_f64(backlog.oldest_age_seconds.max(0.0)).unwrap_or_default(),
    })
}

/// Makes the coming days' outbox partitions and drops the days whose every
/// event was sent before the retention cutoff; returns how many days it
/// dropped. A day is kept whole while any of its events is pending or
/// recent, so an event stays at least the retention after it was sent, and
/// at most a day longer.
async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = OffsetDateTime::now_utc() - retention;
    let mut conn = pool.acquire().await?;
    outbox::ensure_partitions(&mut conn).await?;
    let mut dropped = 0;
    for part in outbox::expired_partitions(&mut conn, cutoff).await? {
        if outbox::drop_partition(&mut conn, &part, cutoff).await? {
            tracing::info!(partition = %part.name, "dropped an outbox day: every event in it was sent before the retention");
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Makes sure the coming days' outbox partitions exist (at start, before
/// any call can write an event). A database that does not answer yet is
/// left to the maintenance task's first round.
pub async fn prepare_partitions(pool: &PgPool) {
    let made = async { outbox::ensure_partitions(&mut *pool.acquire().await?).await };
    match tokio::time::timeout(Duration::from_secs(2), made).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "making the outbox's partitions failed; the maintenance task retries"),
        Err(_) => tracing::warn!(
            "the database did not answer in time to make the outbox's partitions; the maintenance task retries"
        ),
    }
}
