//! `--output json`: each admin subcommand's answer as one JSON object on
//! standard output, for scripts. The field names are a contract
//! (docs/operations.md, "The operator CLI"): snake_case, counts as numbers,
//! times as RFC 3339 UTC strings, durations as `…_seconds` numbers, and
//! `null` where the service sent nothing (no expiry, no batch on a dry run).
//! Add fields freely; never rename or drop one.

use std::io::Write;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pb;

/// Writes `value` on one line.
pub fn write(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

pub fn time(t: OffsetDateTime) -> Value {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&Rfc3339).map_or(Value::Null, Value::String)
}

pub fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    })
    .map_or(Value::Null, time)
}

pub fn seconds(d: Option<&prost_types::Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.seconds as f64 + f64::from(d.nanos) / 1e9))
}

/// `""` (the service's "none") as `null`.
fn text_or_null(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { Value::String(s.to_owned()) }
}

fn state(value: i32) -> Value {
    pb::invitation::State::try_from(value).map_or(Value::Null, |s| json!(s.as_str_name()))
}

pub fn invitation(i: &pb::Invitation) -> Value {
    json!({
        "id": i.id,
        "code": i.code,
        "link": text_or_null(&i.link),
        "inviter_id": text_or_null(&i.inviter_id),
        "state": state(i.state),
        "batch_id": text_or_null(&i.batch_id),
        "label": i.label,
        "max_uses": i.max_uses,
        "uses": i.uses,
        "create_time": timestamp(i.create_time.as_ref()),
        "expire_time": timestamp(i.expire_time.as_ref()),
        "attributes": i.attributes,
    })
}

pub fn mint(r: &pb::MintResponse) -> Value {
    json!({
        "dry_run": r.dry_run,
        "batch_id": text_or_null(&r.batch_id),
        "minted_count": r.minted_count,
        "matched_count": r.matched_count,
        "recipient_ids": r.recipient_ids,
        "invitations": r.invitations.iter().map(invitation).collect::<Vec<_>>(),
        "invitations_truncated": r.invitations_truncated,
    })
}

pub fn revoke(r: &pb::RevokeResponse) -> Value {
    let invitations: Vec<Value> =
        r.invitations.iter().map(|i| json!({ "id": i.id, "state": state(i.state) })).collect();
    json!({ "revoked_count": r.revoked_count, "invitations": invitations })
}

pub fn privileges(user_id: &str, r: &pb::SetInvitePrivilegesResponse) -> Value {
    let p = r.privileges.clone().unwrap_or_default();
    json!({
        "user_id": user_id,
        "enabled": p.enabled,
        "changed": r.changed,
        "reason": p.reason,
        "update_time": timestamp(p.update_time.as_ref()),
        "updated_by": text_or_null(&p.updated_by),
        "revoked_count": r.revoked_count,
    })
}

/// One group of GetStats, with the keys that name it (`label`,
/// `period_start`, `batch_id`) first where they apply.
fn group(g: &pb::InvitationStats, keys: &[&str]) -> Value {
    let mut object = serde_json::Map::new();
    for key in keys {
        let value = match *key {
            "label" => json!(g.label),
            "period_start" => timestamp(g.period_start.as_ref()),
            "batch_id" => json!(g.batch_id),
            _ => continue,
        };
        object.insert((*key).to_owned(), value);
    }
    let counts = json!({
        "minted": g.minted,
        "unspent": g.unspent,
        "redeemed": g.redeemed,
        "revoked": g.revoked,
        "expired": g.expired,
        "never_redeemed": g.never_redeemed,
        "never_redeemed_share": g.never_redeemed_share,
        "used": g.used,
        "redemption_rate": g.redemption_rate,
        "redemptions": g.redemptions,
        "median_time_to_redeem_seconds": seconds(g.median_time_to_redeem.as_ref()),
        "redeemed_within_count": g.redeemed_within_count,
    });
    if let Value::Object(counts) = counts {
        object.extend(counts);
    }
    Value::Object(object)
}

pub fn stats(s: &pb::GetStatsResponse) -> Value {
    let r = s.reservations.unwrap_or_default();
    json!({
        "start_time": timestamp(s.start_time.as_ref()),
        "end_time": timestamp(s.end_time.as_ref()),
        "overall": group(&s.overall.clone().unwrap_or_default(), &[]),
        "by_label": s.by_label.iter().map(|g| group(g, &["label"])).collect::<Vec<_>>(),
        "by_period": s.by_period.iter().map(|g| group(g, &["period_start"])).collect::<Vec<_>>(),
        "by_batch": s.by_batch.iter().map(|g| group(g, &["batch_id", "label", "period_start"])).collect::<Vec<_>>(),
        "batches_truncated": s.batches_truncated,
        "new_members": s.new_members.iter().map(|d| json!({
            "day": timestamp(d.day.as_ref()),
            "joined": d.joined,
            "invited": d.invited,
        })).collect::<Vec<_>>(),
        "top_inviters": s.top_inviters.iter().map(|i| json!({
            "user_id": i.user_id,
            "redemptions": i.redemptions,
        })).collect::<Vec<_>>(),
        "reservations": {
            "reserved": r.reserved,
            "held": r.held,
            "completed": r.completed,
            "released": r.released,
            "lapsed": r.lapsed,
        },
        "abuse_flags": s.abuse_flags.iter().map(|f| json!({ "flag": f.flag, "count": f.count })).collect::<Vec<_>>(),
        "waitlist": s.waitlist.as_ref().map(waitlist_stats),
        "conversions": s.conversions.as_ref().map(conversion_stats),
    })
}

fn conversion_stats(c: &pb::ConversionStats) -> Value {
    let group = |g: &pb::ConversionGroup| {
        json!({
            "label": g.label,
            "batch_id": text_or_null(&g.batch_id),
            "day": timestamp(g.day.as_ref()),
            "kind": text_or_null(&g.kind),
            "redeemed": g.redeemed,
            "converted": g.converted,
            "conversion_rate": g.conversion_rate,
            "median_time_to_convert_seconds": seconds(g.median_time_to_convert.as_ref()),
            "value": g.value,
        })
    };
    let r = c.rewards.unwrap_or_default();
    json!({
        "by_label": c.by_label.iter().map(group).collect::<Vec<_>>(),
        "by_batch": c.by_batch.iter().map(group).collect::<Vec<_>>(),
        "by_day": c.by_day.iter().map(group).collect::<Vec<_>>(),
        "top_converters": c.top_converters.iter().map(|t| json!({ "inviter_id": t.inviter_id, "conversions": t.conversions })).collect::<Vec<_>>(),
        "rewards": {
            "recorded": r.recorded,
            "unattributed": r.unattributed,
            "pending": r.pending,
            "review": r.review,
            "granted": r.granted,
            "voided": r.voided,
            "denied": r.denied,
            "invitations_granted": r.invitations_granted,
        },
    })
}

fn waitlist_stats(w: &pb::WaitlistStats) -> Value {
    json!({
        "waiting": w.waiting,
        "joined": w.joined,
        "admitted": w.admitted,
        "by_day": w.by_day.iter().map(|d| json!({
            "day": timestamp(d.day.as_ref()),
            "joined": d.joined,
            "admitted": d.admitted,
        })).collect::<Vec<_>>(),
        "reviewed": w.reviewed,
        "approval_rate": w.approval_rate,
        "median_wait_seconds": seconds(w.median_wait.as_ref()),
        "admitted_redeemed": w.admitted_redeemed,
        "admitted_redeemed_rate": w.admitted_redeemed_rate,
        "top_referrers": w.top_referrers.iter().map(|r| json!({ "referrer": r.referrer, "referrals": r.referrals })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_are_rfc3339_and_seconds() {
        let t = prost_types::Timestamp { seconds: 1_764_000_000, nanos: 500_000_000 };
        assert_eq!(timestamp(Some(&t)), json!("2025-11-24T16:00:00.5Z"));
        assert_eq!(timestamp(None), Value::Null);
        assert_eq!(seconds(Some(&prost_types::Duration { seconds: 90, nanos: 250_000_000 })), json!(90.25));
        assert_eq!(seconds(None), Value::Null);
    }

    #[test]
    fn empty_strings_the_service_sends_for_none_are_null() {
        let dry = pb::MintResponse { dry_run: true, minted_count: 3, ..Default::default() };
        let value = mint(&dry);
        assert_eq!(value["batch_id"], Value::Null);
        assert_eq!(value["minted_count"], json!(3));
        assert_eq!(value["invitations"], json!([]));
    }

    #[test]
    fn groups_carry_their_keys_and_every_count() {
        let g =
            pb::InvitationStats { label: "w1".into(), minted: 10, used: 4, redemption_rate: 0.4, ..Default::default() };
        let value = group(&g, &["label"]);
        assert_eq!(value["label"], json!("w1"));
        assert_eq!(value["redemption_rate"], json!(0.4));
        assert_eq!(value["median_time_to_redeem_seconds"], Value::Null);
        assert!(value.get("batch_id").is_none(), "{value}");
        assert_eq!(group(&g, &[]).as_object().map(|o| o.len()), Some(12), "every count, no keys");
    }
}
