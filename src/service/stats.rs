//! GetStats (docs/design.md, "Stats"), and the background fold of every
//! counter kept from deltas (the graph's per-member counts and the stats'
//! per-batch counts). Reads one snapshot (REPEATABLE READ, read only), so
//! the sections agree with each other.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::error::Error;
use crate::store::replicas::ReadFrom;
use crate::store::stats::{self, CohortRow, Filter};
use crate::store::{self, Counters, reservations::ReservationCounts};

use super::{Invitations, read_pooled};

/// Grouping of the cohort by time of minting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    #[default]
    Day,
    Week,
}

/// Batches listed one by one at most.
pub const MAX_STATS_BATCHES: i64 = 100;

pub struct StatsQuery {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub label: Option<String>,
    pub period: Period,
    pub leaderboard_size: u32,
    pub redeemed_within: Option<time::Duration>,
    pub converted_within: Option<time::Duration>,
    pub conversion_kind: Option<String>,
}

pub struct Stats {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub overall: CohortRow,
    pub by_label: Vec<CohortRow>,
    pub by_period: Vec<CohortRow>,
    pub by_batch: Vec<CohortRow>,
    pub batches_truncated: bool,
    /// Every UTC day of the window: (day, joined, of whom invited).
    pub new_members: Vec<(OffsetDateTime, i64, i64)>,
    pub top_inviters: Vec<(String, i64)>,
    pub reservations: ReservationCounts,
    pub abuse_flags: Vec<(String, i64)>,
    pub waitlist: WaitlistStats,
    pub conversions: ConversionStats,
}

/// The conversions' section.
pub struct ConversionStats {
    pub groups: Vec<store::conversion_stats::ConversionGroupRow>,
    pub top_converters: Vec<(String, i64)>,
    pub rewards: store::conversion_stats::RewardCounts,
}

/// The waitlist's section: the counts, every day of the window (day,
/// joined, admitted), and the top referrers.
pub struct WaitlistStats {
    pub counts: store::waitlist::WaitlistCounts,
    pub by_day: Vec<(OffsetDateTime, i64, i64)>,
    pub top_referrers: Vec<(String, i64)>,
}

impl Invitations {
    #[tracing::instrument(name = "db.stats", skip_all, fields(db.system = "postgresql"))]
    pub async fn stats(&self, q: StatsQuery, read: ReadFrom) -> Result<Stats, Error> {
        read_pooled!(self, read, pool => self.stats_from(pool, &q))
    }

    async fn stats_from(&self, pool: &PgPool, q: &StatsQuery) -> Result<Stats, Error> {
        let f = Filter { start: q.start, end: q.end, label: q.label.clone() };
        let week = q.period == Period::Week;
        let mut tx = pool.begin().await?;
        stats::snapshot(&mut tx).await?;
        let groups = stats::cohort_groups(&mut tx, &f, week, q.redeemed_within).await?;
        let mut by_batch = stats::cohort_batches(&mut tx, &f, q.redeemed_within, MAX_STATS_BATCHES + 1).await?;
        let batches_truncated = by_batch.len() as i64 > MAX_STATS_BATCHES;
        by_batch.truncate(MAX_STATS_BATCHES as usize);
        let joins = stats::joins_per_day(&mut tx, q.start, q.end).await?;
        let top_inviters = stats::top_inviters(&mut tx, &f, i64::from(q.leaderboard_size)).await?;
        let reservations = stats::reservation_counts(&mut tx, &f).await?;
        let abuse_flags = stats::flag_counts(&mut tx, &f).await?;
        let waitlist = WaitlistStats {
            counts: store::waitlist::counts(&mut tx, q.start, q.end).await?,
            by_day: every_day(q.start, q.end, &store::waitlist::per_day(&mut tx, q.start, q.end).await?),
            top_referrers: store::waitlist::top_referrers(&mut tx, q.start, q.end, i64::from(q.leaderboard_size))
                .await?,
        };
        let within = q.converted_within.map(|d| d.as_seconds_f64());
        let mut conversion_groups = store::conversion_stats::groups(&mut tx, &f, within).await?;
        // Per batch, the same batches as by_batch (the newest 100).
        if batches_truncated {
            let shown: std::collections::HashSet<Uuid> = by_batch.iter().filter_map(|b| b.batch_id).collect();
            conversion_groups.retain(|g| g.batch_id.is_none_or(|id| shown.contains(&id)));
        }
        let conversions = ConversionStats {
            groups: conversion_groups,
            top_converters: store::conversion_stats::top_converters(
                &mut tx,
                &f,
                q.conversion_kind.as_deref(),
                i64::from(q.leaderboard_size),
            )
            .await?,
            rewards: store::conversion_stats::reward_counts(&mut tx, &f).await?,
        };
        tx.commit().await?;

        let mut overall = CohortRow::default();
        let (mut by_label, mut by_period) = (Vec::new(), Vec::new());
        for row in groups {
            match (&row.label, row.period) {
                (Some(_), _) => by_label.push(row),
                (None, Some(_)) => by_period.push(row),
                (None, None) => overall = row,
            }
        }
        Ok(Stats {
            start: q.start,
            end: q.end,
            overall,
            by_label,
            by_period,
            by_batch,
            batches_truncated,
            new_members: every_day(q.start, q.end, &joins),
            top_inviters,
            reservations,
            abuse_flags,
            waitlist,
            conversions,
        })
    }
}

/// The UTC days that `[start, end)` touches, each with its counts from
/// `joins` (sorted by day), zeros where it has none.
fn every_day(
    start: OffsetDateTime,
    end: OffsetDateTime,
    joins: &[(OffsetDateTime, i64, i64)],
) -> Vec<(OffsetDateTime, i64, i64)> {
    let mut days = Vec::new();
    let mut day = start.to_offset(time::UtcOffset::UTC).replace_time(time::Time::MIDNIGHT);
    let mut found = joins.iter().peekable();
    while day < end {
        match found.peek() {
            Some(&&(d, joined, invited)) if d == day => {
                days.push((day, joined, invited));
                found.next();
            }
            _ => days.push((day, 0, 0)),
        }
        day += time::Duration::DAY;
    }
    days
}

/// Deltas folded after which the fold vacuums their table. Every fold deletes what it moved, so at thousands of writes
/// a second the deltas table fills with dead rows far faster than
/// autovacuum (one look per database a minute) clears them, and every
/// reader's sum of pending deltas walks them: JoinWaitlist at a million
/// entries fell from 1,950 to 1,050 joins/s in 30 s of load and came back
/// with a VACUUM (docs/performance.md, "Waitlist").
const VACUUM_AFTER: i64 = 5_000;

/// Every table of counters kept from deltas.
const COUNTERS: [&Counters; 3] =
    [&store::tree::MEMBER_COUNTS, &store::stats::BATCH_COUNTS, &store::waitlist::LINE_COUNTS];

/// Folds the count deltas into their counters every `interval` until
/// shutdown (docs/design.md, "Counts without hot rows"). Only keeps reads
/// cheap: counts are exact whether or not it runs, and every replica may
/// run it.
pub async fn fold_counts(pool: PgPool, interval: std::time::Duration) {
    const BATCH: i64 = 10_000;
    // Deltas folded per table since its last VACUUM (this replica's).
    let mut unvacuumed = [0i64; COUNTERS.len()];
    loop {
        tokio::time::sleep(interval).await;
        for (counters, unvacuumed) in COUNTERS.iter().zip(&mut unvacuumed) {
            let folded = async {
                let mut conn = pool.acquire().await?;
                let mut total = 0;
                loop {
                    let n = store::fold(&mut conn, counters, BATCH).await?;
                    total += n;
                    if n < BATCH {
                        return Ok::<_, sqlx::Error>(total);
                    }
                }
            };
            match folded.await {
                Ok(n) => {
                    tracing::debug!(deltas = n, counters = counters.counts, "folded counts");
                    *unvacuumed += n;
                }
                Err(e) => {
                    tracing::warn!(error = %e, counters = counters.counts, "folding counts failed; retrying next interval")
                }
            }
            if *unvacuumed >= VACUUM_AFTER {
                match store::vacuum_deltas(&pool, counters).await {
                    Ok(()) => *unvacuumed = 0,
                    Err(e) => tracing::warn!(error = %e, counters = counters.counts, "vacuuming counters failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hours` after a UTC midnight.
    fn at(hours: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(20_000 * 86_400 + hours * 3_600).expect("in range")
    }

    #[test]
    fn every_day_of_the_window_with_zeros() {
        let (start, end) = (at(18), at(3 * 24 + 6));
        let days = every_day(start, end, &[(at(24), 3, 2)]);
        assert_eq!(days, vec![(at(0), 0, 0), (at(24), 3, 2), (at(48), 0, 0), (at(72), 0, 0)]);
        assert_eq!(every_day(at(6), at(7), &[]), vec![(at(0), 0, 0)], "a short window still touches its day");
    }
}
