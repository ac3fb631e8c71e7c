//! Reads from Postgres hot standbys (`--database-read-url`).
//!
//! The read-only RPCs (CheckCode, ListForUser, GetInviteGraph,
//! WalkInviteForest, GetStats, GetWaitlistEntry) take their connection from
//! [`Replicas::read_pool`]; writes and everything inside a write transaction
//! keep using the primary pool. A background monitor ([`monitor`]) decides
//! which standbys may serve reads:
//!
//! - **Lag.** Each round reads the primary's `pg_current_wal_lsn()` and then
//!   each standby's `pg_last_wal_replay_lsn()`. A standby that has replayed
//!   at least what the primary had written is caught up *now*; its lag is the
//!   time since it was last caught up. Measured that way an idle standby has
//!   no lag (unlike `now() - pg_last_xact_replay_timestamp()`, which grows
//!   while nothing is written), and a standby whose replay is paused or cut
//!   off falls behind by the wall clock.
//! - A standby is **usable** while it answers and its lag is at most
//!   `--max-replica-lag`. When none is usable, reads go to the primary
//!   (`invitations_db_read_fallbacks_total{reason}` counts them, a log line
//!   says when a standby leaves or rejoins).
//! - When the primary does not answer, lag cannot be measured: standbys that
//!   answer stay usable, so reads keep working while writes fail UNAVAILABLE.
//!
//! Freshness rule (docs/design.md, "Reads from standbys"): a read from a
//! standby may be up to `--max-replica-lag` behind. A caller that must see
//! its own write sends the request header `x-invitations-read: primary`.
//! CheckCode never answers "no such code" from a standby: a miss is looked up
//! again on the primary (which also counts it as a guess), so a code minted a
//! moment ago is always found; GetInviteGraph and GetWaitlistEntry likewise
//! never answer NOT_FOUND from a standby. A read a standby fails (a query
//! cancelled by a recovery conflict, a connection lost before the monitor
//! noticed) runs again on the primary (`reason="standby_error"`). Redeem
//! always decides on the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use sqlx::PgPool;
use tokio::sync::watch;

/// Where a read wants to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// A usable standby if there is one, else the primary.
    AnyReplica,
    /// The primary: the caller must see its own writes.
    Primary,
}

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Primary,
    Standby(usize),
}

struct Standby {
    pool: PgPool,
    /// For one-statement reads (no ping after each: `store::statements`).
    statements: super::statements::StatementPool,
    usable: AtomicBool,
    /// Microseconds behind (u64::MAX: never measured or unreachable).
    lag_micros: AtomicU64,
}

/// The primary and the standbys reads may use.
pub struct Replicas {
    primary: PgPool,
    standbys: Vec<Standby>,
    max_lag: Duration,
    next: AtomicUsize,
    primary_up: AtomicBool,
    fallbacks: Counter<u64>,
}

impl Replicas {
    /// Reads and writes from `primary` only.
    pub fn primary_only(primary: PgPool) -> Arc<Self> {
        use opentelemetry::metrics::MeterProvider;
        let meter = opentelemetry::metrics::noop::NoopMeterProvider::new().meter("invitations");
        Self::new(primary, Vec::new(), Duration::ZERO, &meter)
    }

    /// Each standby's sqlx pool and, for one-statement reads, its statement
    /// pool.
    pub fn new(
        primary: PgPool,
        standbys: Vec<(PgPool, super::statements::StatementPool)>,
        max_lag: Duration,
        meter: &Meter,
    ) -> Arc<Self> {
        let fallbacks = meter
            .u64_counter("invitations.db.read_fallbacks")
            .with_description("Reads that wanted a standby and went to the primary, by reason")
            .build();
        Arc::new(Self {
            primary,
            standbys: standbys
                .into_iter()
                .map(|(pool, statements)| Standby {
                    pool,
                    statements,
                    usable: AtomicBool::new(false),
                    lag_micros: AtomicU64::new(u64::MAX),
                })
                .collect(),
            max_lag,
            next: AtomicUsize::new(0),
            primary_up: AtomicBool::new(true),
            fallbacks,
        })
    }

    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    /// The statement pool of the standby a one-statement read should use
    /// (as `read_pool` chooses), or None for the primary.
    pub fn read_statements(&self, want: ReadFrom) -> Option<(&super::statements::StatementPool, usize)> {
        match self.read_pool(want) {
            (_, Source::Primary) => None,
            (_, Source::Standby(index)) => self.standbys.get(index).map(|s| (&s.statements, index)),
        }
    }

    /// The pool a read should use, round-robin over the usable standbys.
    pub fn read_pool(&self, want: ReadFrom) -> (&PgPool, Source) {
        if want == ReadFrom::Primary || self.standbys.is_empty() {
            return (&self.primary, Source::Primary);
        }
        let n = self.standbys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            if self.standbys[index].usable.load(Ordering::Relaxed) {
                return (&self.standbys[index].pool, Source::Standby(index));
            }
        }
        let reason = if self.standbys.iter().any(|s| s.lag_micros.load(Ordering::Relaxed) != u64::MAX) {
            "lagging"
        } else {
            "unreachable"
        };
        self.fallbacks.add(1, &[KeyValue::new("reason", reason)]);
        (&self.primary, Source::Primary)
    }

    /// Counts a read a standby failed (a query replay cancelled, a lost
    /// connection) or could not answer (a row it has not replayed yet),
    /// asked again of the primary.
    pub fn count_fallback(&self, reason: &'static str) {
        self.fallbacks.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Whether some standby may serve reads now.
    pub fn any_usable(&self) -> bool {
        self.standbys.iter().any(|s| s.usable.load(Ordering::Relaxed))
    }

    /// Each standby's lag in seconds (None: unreachable) and whether it is usable.
    pub fn status(&self) -> Vec<(Option<f64>, bool)> {
        self.standbys
            .iter()
            .map(|s| {
                let lag = s.lag_micros.load(Ordering::Relaxed);
                ((lag != u64::MAX).then(|| lag as f64 / 1e6), s.usable.load(Ordering::Relaxed))
            })
            .collect()
    }
}

/// What one round saw of one standby.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// Replayed at least the primary's position read before it.
    CaughtUp,
    /// Answered, behind that position (or the primary's is unknown).
    Behind,
    Unreachable,
}

/// The monitor's memory of one standby: when it was last caught up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Track {
    caught_up_at: Option<Instant>,
}

impl Track {
    /// Folds one round in: the lag (None: unreachable) and whether the
    /// standby may serve reads. With the primary down (`primary_known` false)
    /// an answering standby stays usable at its last known lag.
    pub fn observe(
        &mut self,
        seen: Seen,
        primary_known: bool,
        now: Instant,
        max_lag: Duration,
    ) -> (Option<Duration>, bool) {
        match seen {
            Seen::Unreachable => (None, false),
            Seen::CaughtUp => {
                self.caught_up_at = Some(now);
                (Some(Duration::ZERO), true)
            }
            Seen::Behind => {
                let lag = self.caught_up_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
                (Some(lag), !primary_known || lag <= max_lag)
            }
        }
    }
}

/// Keeps [`Replicas`]' view current until `stop` turns true.
pub async fn monitor(replicas: Arc<Replicas>, interval: Duration, mut stop: watch::Receiver<bool>) {
    if replicas.standbys.is_empty() {
        return;
    }
    let mut tracks = vec![Track::default(); replicas.standbys.len()];
    let timeout = interval.max(Duration::from_secs(1));
    loop {
        let primary_lsn: Option<String> = tokio::time::timeout(
            timeout,
            sqlx::query_scalar!(r#"SELECT pg_current_wal_lsn()::text AS "lsn!""#).fetch_one(&replicas.primary),
        )
        .await
        .ok()
        .and_then(Result::ok);
        let was_up = replicas.primary_up.swap(primary_lsn.is_some(), Ordering::Relaxed);
        if was_up != primary_lsn.is_some() {
            match primary_lsn {
                Some(_) => tracing::info!("the primary answers again"),
                None => tracing::warn!("the primary does not answer: reads go to standbys, writes fail"),
            }
        }
        for (index, (standby, track)) in replicas.standbys.iter().zip(&mut tracks).enumerate() {
            let seen = match tokio::time::timeout(timeout, replayed(&standby.pool, primary_lsn.as_deref())).await {
                Ok(Ok(true)) => Seen::CaughtUp,
                Ok(Ok(false)) => Seen::Behind,
                Ok(Err(_)) | Err(_) => Seen::Unreachable,
            };
            let (lag, usable) = track.observe(seen, primary_lsn.is_some(), Instant::now(), replicas.max_lag);
            let micros = lag.map_or(u64::MAX, |l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX - 1));
            standby.lag_micros.store(micros, Ordering::Relaxed);
            if standby.usable.swap(usable, Ordering::Relaxed) != usable {
                let lag_seconds = lag.map(|l| l.as_secs_f64());
                if usable {
                    tracing::info!(standby = index, ?lag_seconds, "standby serves reads");
                } else {
                    tracing::warn!(
                        standby = index,
                        ?lag_seconds,
                        "standby does not serve reads (lagging or unreachable): reads go elsewhere"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Whether the standby has replayed at least `primary_lsn` (false when
/// unknown). Errors: the standby did not answer, or is not a standby.
async fn replayed(standby: &PgPool, primary_lsn: Option<&str>) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT pg_is_in_recovery() AS "in_recovery!", pg_last_wal_replay_lsn() >= $1::text::pg_lsn AS caught_up"#,
        primary_lsn,
    )
    .fetch_one(standby)
    .await?;
    // A promoted standby (or a primary given as a read URL) is not behind
    // anything: it is caught up by definition.
    Ok(!row.in_recovery || row.caught_up.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(2);

    #[test]
    fn lag_is_the_time_since_last_caught_up_and_decides_usability() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.observe(Seen::Behind, true, t0, MAX), (Some(Duration::MAX), false), "never caught up");
        assert_eq!(track.observe(Seen::CaughtUp, true, t0, MAX), (Some(Duration::ZERO), true));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(track.observe(Seen::Behind, true, t1, MAX), (Some(Duration::from_secs(1)), true));
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(track.observe(Seen::Behind, true, t3, MAX), (Some(Duration::from_secs(3)), false), "too far behind");
        assert_eq!(track.observe(Seen::CaughtUp, true, t3, MAX), (Some(Duration::ZERO), true), "back");
    }

    #[test]
    fn an_unreachable_standby_is_unusable_and_a_down_primary_keeps_answering_standbys() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.observe(Seen::Unreachable, true, t0, MAX), (None, false));
        track.observe(Seen::CaughtUp, true, t0, MAX);
        let later = t0 + Duration::from_secs(60);
        let (lag, usable) = track.observe(Seen::Behind, false, later, MAX);
        assert!(usable, "the primary is down: the standby is all there is");
        assert_eq!(lag, Some(Duration::from_secs(60)));
    }
}
