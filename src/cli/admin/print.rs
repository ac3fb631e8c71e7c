//! Human-readable output of the admin subcommands: one fact per line,
//! aligned, times in RFC 3339 UTC, durations like `2d 3h`.

use std::io::{self, Write};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pb;

pub fn time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok()).map_or_else(|| "-".into(), time)
}

/// Whole seconds as days, hours, minutes and seconds (`1d 2h 3m 4s`).
pub fn duration(d: std::time::Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return if d.is_zero() { "0s".into() } else { format!("{}ms", d.as_millis()) };
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    parts.join(" ")
}

pub fn duration_pb(d: &prost_types::Duration) -> String {
    duration(std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

pub fn mint(out: &mut impl Write, r: &pb::MintResponse) -> anyhow::Result<()> {
    if r.dry_run {
        writeln!(out, "Dry run: would mint {} invitations (nothing minted)", r.minted_count)?;
    } else {
        writeln!(out, "Minted {} invitations in batch {}", r.minted_count, r.batch_id)?;
    }
    // A wave by selector: how many members matched, and a sample of who.
    if r.matched_count > 0 || !r.recipient_ids.is_empty() {
        writeln!(out, "Members matching the selector: {}", r.matched_count)?;
        if r.dry_run && !r.recipient_ids.is_empty() {
            let shown = r.recipient_ids.len().min(20);
            let more = r.recipient_ids.len() - shown;
            let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
            writeln!(out, "Would receive one (a random draw): {}{tail}", r.recipient_ids[..shown].join(", "))?;
        }
    }
    for i in &r.invitations {
        let owner = if i.inviter_id.is_empty() { "(unowned)" } else { &i.inviter_id };
        writeln!(out, "  {}  {}  {owner}  expires {}", i.code, i.id, timestamp(i.expire_time.as_ref()))?;
    }
    if r.invitations_truncated {
        writeln!(out, "  (first {} listed; each member sees theirs with ListForUser)", r.invitations.len())?;
    }
    Ok(())
}

/// One invitation after an edit or a restore.
pub fn invitation(out: &mut impl Write, verb: &str, i: &pb::Invitation) -> anyhow::Result<()> {
    let state = pb::invitation::State::try_from(i.state).map_or("?", |s| s.as_str_name());
    writeln!(out, "{verb} invitation {}  {state}", i.id)?;
    writeln!(out, "  uses {} of {}  expires {}", i.uses, i.max_uses, timestamp(i.expire_time.as_ref()))?;
    writeln!(out, "  label {:?}  note {:?}", i.label, i.note)?;
    for (k, v) in &i.attributes {
        writeln!(out, "  attribute {k}={v}")?;
    }
    Ok(())
}

pub fn revoke(out: &mut impl Write, r: &pb::RevokeResponse) -> anyhow::Result<()> {
    writeln!(out, "Revoked {} invitations", r.revoked_count)?;
    for i in &r.invitations {
        let state = pb::invitation::State::try_from(i.state).map_or("?", |s| s.as_str_name());
        writeln!(out, "  {}  {state}", i.id)?;
    }
    Ok(())
}

pub fn privileges(out: &mut impl Write, r: &pb::SetInvitePrivilegesResponse) -> anyhow::Result<()> {
    let p = r.privileges.clone().unwrap_or_default();
    let state = if p.enabled { "enabled" } else { "disabled" };
    let changed = if r.changed { "changed" } else { "unchanged" };
    writeln!(out, "Invite privileges {state} ({changed}); reason: {:?}", p.reason)?;
    if r.revoked_count > 0 {
        writeln!(out, "Revoked {} invitations below the member", r.revoked_count)?;
    }
    Ok(())
}

fn group(out: &mut impl Write, indent: &str, g: &pb::InvitationStats) -> io::Result<()> {
    let median = g.median_time_to_redeem.as_ref().map_or_else(|| "-".into(), duration_pb);
    writeln!(
        out,
        "{indent}minted {}  unspent {}  redeemed {}  revoked {}  expired {}",
        g.minted, g.unspent, g.redeemed, g.revoked, g.expired
    )?;
    writeln!(
        out,
        "{indent}redemption rate {} ({} used)  never redeemed {} ({})  redemptions {}  median time to redeem {median}",
        percent(g.redemption_rate),
        g.used,
        percent(g.never_redeemed_share),
        g.never_redeemed,
        g.redemptions
    )?;
    if g.redeemed_within_count > 0 {
        writeln!(out, "{indent}redeemed within the asked time: {}", g.redeemed_within_count)?;
    }
    Ok(())
}

pub fn stats(out: &mut impl Write, s: &pb::GetStatsResponse) -> anyhow::Result<()> {
    writeln!(out, "Window {} to {}", timestamp(s.start_time.as_ref()), timestamp(s.end_time.as_ref()))?;
    writeln!(out, "Invitations minted in the window:")?;
    group(out, "  ", &s.overall.clone().unwrap_or_default())?;
    if !s.by_label.is_empty() {
        writeln!(out, "By label:")?;
        for g in &s.by_label {
            writeln!(out, "  {:?}", g.label)?;
            group(out, "    ", g)?;
        }
    }
    if !s.by_period.is_empty() {
        writeln!(out, "By period of minting:")?;
        for g in &s.by_period {
            writeln!(out, "  {}", timestamp(g.period_start.as_ref()))?;
            group(out, "    ", g)?;
        }
    }
    if !s.by_batch.is_empty() {
        let more = if s.batches_truncated { " (newest 100)" } else { "" };
        writeln!(out, "By batch{more}:")?;
        for g in &s.by_batch {
            writeln!(out, "  {} {:?} minted {}", g.batch_id, g.label, timestamp(g.period_start.as_ref()))?;
            group(out, "    ", g)?;
        }
    }
    writeln!(out, "New members per day (joined, of whom invited):")?;
    for d in &s.new_members {
        let day = timestamp(d.day.as_ref());
        writeln!(out, "  {}  {:>6} {:>6}", day.get(..10).unwrap_or(&day), d.joined, d.invited)?;
    }
    writeln!(out, "Top inviters (redemptions in the window):")?;
    for (rank, i) in s.top_inviters.iter().enumerate() {
        writeln!(out, "  {:>3}. {}  {}", rank + 1, i.user_id, i.redemptions)?;
    }
    let r = s.reservations.unwrap_or_default();
    writeln!(
        out,
        "Reservations: reserved {}  held {}  completed {}  released {}  lapsed {}",
        r.reserved, r.held, r.completed, r.released, r.lapsed
    )?;
    let flags: Vec<String> = s.abuse_flags.iter().map(|f| format!("{} {}", f.flag, f.count)).collect();
    writeln!(out, "Abuse flags: {}", if flags.is_empty() { "none".into() } else { flags.join(", ") })?;
    if let Some(w) = &s.waitlist {
        waitlist_stats(out, w)?;
    }
    if let Some(c) = &s.conversions {
        conversion_stats(out, c)?;
    }
    Ok(())
}

fn waitlist_stats(out: &mut impl Write, w: &pb::WaitlistStats) -> io::Result<()> {
    let wait = w.median_wait.as_ref().map_or_else(|| "-".into(), duration_pb);
    writeln!(
        out,
        "Waitlist: waiting {}  joined {}  admitted {}  reviewed {} (approved {})  median wait {wait}",
        w.waiting,
        w.joined,
        w.admitted,
        w.reviewed,
        percent(w.approval_rate)
    )?;
    writeln!(out, "  admitted who redeemed {} ({})", w.admitted_redeemed, percent(w.admitted_redeemed_rate))?;
    for (rank, r) in w.top_referrers.iter().enumerate() {
        writeln!(out, "  {:>3}. {}  {}", rank + 1, r.referrer, r.referrals)?;
    }
    Ok(())
}

fn conversion_stats(out: &mut impl Write, c: &pb::ConversionStats) -> io::Result<()> {
    let line = |out: &mut dyn Write, g: &pb::ConversionGroup| -> io::Result<()> {
        if g.kind.is_empty() {
            return writeln!(out, "      none of {} redeemed converted", g.redeemed);
        }
        let median = g.median_time_to_convert.as_ref().map_or_else(|| "-".into(), duration_pb);
        writeln!(
            out,
            "      {}: {} of {} redeemed ({})  median time to convert {median}  value {}",
            g.kind,
            g.converted,
            g.redeemed,
            percent(g.conversion_rate),
            g.value
        )
    };
    if !c.by_label.is_empty() {
        writeln!(out, "Conversions by label:")?;
        let mut current = None;
        for g in &c.by_label {
            if current != Some(&g.label) {
                writeln!(out, "  {:?}", g.label)?;
                current = Some(&g.label);
            }
            line(out, g)?;
        }
    }
    if !c.by_batch.is_empty() {
        writeln!(out, "Conversions by batch:")?;
        let mut current = None;
        for g in &c.by_batch {
            if current != Some(&g.batch_id) {
                writeln!(out, "  {}", g.batch_id)?;
                current = Some(&g.batch_id);
            }
            line(out, g)?;
        }
    }
    writeln!(out, "Top converters (conversions in the window):")?;
    for (rank, t) in c.top_converters.iter().enumerate() {
        writeln!(out, "  {:>3}. {}  {}", rank + 1, t.inviter_id, t.conversions)?;
    }
    let r = c.rewards.unwrap_or_default();
    writeln!(
        out,
        "Rewards: recorded {}  unattributed {}  pending {}  review {}  granted {}  voided {}  denied {}  invitations granted {}",
        r.recorded, r.unattributed, r.pending, r.review, r.granted, r.voided, r.denied, r.invitations_granted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(std::time::Duration::from_secs(93_784)), "1d 2h 3m 4s");
        assert_eq!(duration(std::time::Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration(std::time::Duration::from_millis(250)), "250ms");
        assert_eq!(duration(std::time::Duration::ZERO), "0s");
    }
}
