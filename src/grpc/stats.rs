//! GetStats on the wire: the window, label, period and leaderboard size
//! checked and defaulted, and the answer as the proto says it.

use time::OffsetDateTime;

use super::convert::{parse_ttl, timestamp};
use super::members::parse_timestamp;
use crate::domain;
use crate::domain::conversion::ConversionKind;
use crate::domain::error::{Error, Violations};
use crate::pb;
use crate::service::{Period, Stats, StatsQuery};
use crate::store::stats::CohortRow;

/// The window when the request names none.
pub const DEFAULT_WINDOW: time::Duration = time::Duration::days(30);
/// The longest window: the reads are ranges over it (docs/design.md, "Stats").
pub const MAX_WINDOW: time::Duration = time::Duration::days(366);
pub const DEFAULT_LEADERBOARD: u32 = 10;
pub const MAX_LEADERBOARD: u32 = 100;

impl TryFrom<pb::GetStatsRequest> for StatsQuery {
    type Error = Error;

    fn try_from(r: pb::GetStatsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let end = match &r.end_time {
            Some(t) => v.check("end_time", parse_timestamp(t)),
            None => Some(OffsetDateTime::now_utc()),
        };
        let start = match &r.start_time {
            Some(t) => v.check("start_time", parse_timestamp(t)),
            None => end.map(|e| e - DEFAULT_WINDOW),
        };
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                v.push("end_time", "must be after start_time");
            } else if end - start > MAX_WINDOW {
                v.push("start_time", "the window is at most 366 days long");
            }
        }
        let label = v.check("label", domain::parse_text(&r.label, domain::MAX_LABEL_LEN));
        let period = match pb::StatsPeriod::try_from(r.period) {
            Ok(pb::StatsPeriod::Unspecified | pb::StatsPeriod::Day) => Period::Day,
            Ok(pb::StatsPeriod::Week) => Period::Week,
            Err(_) => {
                v.push("period", "is not a StatsPeriod");
                Period::Day
            }
        };
        let leaderboard_size = match r.leaderboard_size {
            n if n < 0 => {
                v.push("leaderboard_size", "must not be negative");
                0
            }
            0 => DEFAULT_LEADERBOARD,
            n => (n as u32).min(MAX_LEADERBOARD),
        };
        let redeemed_within = r.redeemed_within.as_ref().and_then(|d| v.check("redeemed_within", parse_ttl(d)));
        let converted_within = r.converted_within.as_ref().and_then(|d| v.check("converted_within", parse_ttl(d)));
        let conversion_kind = if r.conversion_kind.is_empty() {
            None
        } else {
            v.check("conversion_kind", ConversionKind::parse(&r.conversion_kind)).map(|k| k.as_str().to_owned())
        };
        v.into_result()?;
        match (start, end) {
            (Some(start), Some(end)) => Ok(StatsQuery {
                start,
                end,
                label: label.filter(|l| !l.is_empty()),
                period,
                leaderboard_size,
                redeemed_within,
                converted_within,
                conversion_kind,
            }),
            _ => Err(Error::invalid("start_time", "is required")),
        }
    }
}

fn share(part: i64, whole: i64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn group_pb(row: &CohortRow) -> pb::InvitationStats {
    let unspent = row.minted - row.spent - row.revoked - row.expired;
    let never_redeemed = row.minted - row.used;
    pb::InvitationStats {
        label: row.label.clone().unwrap_or_default(),
        period_start: row.period.map(timestamp),
        batch_id: row.batch_id.map(|id| id.to_string()).unwrap_or_default(),
        minted: row.minted,
        unspent,
        redeemed: row.spent,
        revoked: row.revoked,
        expired: row.expired,
        never_redeemed,
        never_redeemed_share: share(never_redeemed, row.minted),
        used: row.used,
        redemption_rate: share(row.used, row.minted),
        redemptions: row.uses,
        median_time_to_redeem: row.median_seconds.map(|s| {
            let d = time::Duration::seconds_f64(s);
            prost_types::Duration { seconds: d.whole_seconds(), nanos: d.subsec_nanoseconds() }
        }),
        redeemed_within_count: row.within,
    }
}

pub fn stats_response(s: &Stats) -> pb::GetStatsResponse {
    pb::GetStatsResponse {
        start_time: Some(timestamp(s.start)),
        end_time: Some(timestamp(s.end)),
        overall: Some(group_pb(&s.overall)),
        by_label: s.by_label.iter().map(group_pb).collect(),
        by_period: s.by_period.iter().map(group_pb).collect(),
        by_batch: s.by_batch.iter().map(group_pb).collect(),
        batches_truncated: s.batches_truncated,
        new_members: s
            .new_members
            .iter()
            .map(|&(day, joined, invited)| pb::DailyMembers { day: Some(timestamp(day)), joined, invited })
            .collect(),
        top_inviters: s
            .top_inviters
            .iter()
            .map(|(user_id, redemptions)| pb::InviterCount { user_id: user_id.clone(), redemptions: *redemptions })
            .collect(),
        reservations: Some(pb::ReservationStats {
            reserved: s.reservations.reserved,
            held: s.reservations.held,
            completed: s.reservations.completed,
            released: s.reservations.released,
            lapsed: s.reservations.lapsed,
        }),
        abuse_flags: s
            .abuse_flags
            .iter()
            .map(|(flag, count)| pb::FlagCount { flag: flag.clone(), count: *count })
            .collect(),
        waitlist: Some(super::waitlist::stats_pb(&s.waitlist)),
        conversions: Some(super::conversions::stats_pb(&s.conversions)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(leaderboard_size: i32) -> Result<StatsQuery, Error> {
        StatsQuery::try_from(pb::GetStatsRequest { leaderboard_size, ..Default::default() })
    }

    #[test]
    fn leaderboard_size_defaults_and_clamps() {
        assert_eq!(query(0).expect("default").leaderboard_size, DEFAULT_LEADERBOARD);
        assert_eq!(query(7).expect("seven").leaderboard_size, 7);
        assert_eq!(query(1_000).expect("clamped").leaderboard_size, MAX_LEADERBOARD);
        assert!(query(-1).is_err());
    }

    #[test]
    fn the_default_window_is_the_last_30_days_and_an_empty_label_is_none() {
        let q = query(0).expect("defaults");
        assert_eq!(q.end - q.start, DEFAULT_WINDOW);
        assert!((OffsetDateTime::now_utc() - q.end).abs() < time::Duration::minutes(1));
        assert_eq!(q.label, None);
        assert_eq!(q.period, Period::Day);
    }

    #[test]
    fn shares_of_nothing_are_zero() {
        assert_eq!(share(0, 0), 0.0);
        assert_eq!(share(1, 4), 0.25);
    }
}
