//! `invitations admin waitlist get|review|admit` (one gRPC call each), and
//! `plan-wave --from-waitlist`: how many entries to admit to reach a number
//! of new members, from the measured rate at which admitted entries redeem
//! (GetStats' waitlist section), checked by a dry-run admission and done
//! with `--apply`.

use std::io::Write;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::args::{Output, PlanWaveArgs};
use super::plan::{self, History};
use super::{Client, duration_pb, explain, json, print, timestamp_pb};
use crate::pb;

#[derive(Debug, Clone, Args)]
pub struct WaitlistArgs {
    #[command(subcommand)]
    pub action: WaitlistAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Position,
    Oldest,
    Random,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WaitlistAction {
    /// Show one entry (position, bumps, state, its invitation once admitted).
    #[command(group(ArgGroup::new("key").required(true).args(["entry", "applicant"])))]
    Get {
        #[arg(long, value_name = "UUID")]
        entry: Option<String>,
        #[arg(long, value_name = "ID")]
        applicant: Option<String>,
    },
    /// Approve or reject entries (--entry, repeated), with a reason.
    #[command(group(ArgGroup::new("decision").required(true).args(["approve", "reject"])))]
    Review {
        #[arg(long = "entry", value_name = "UUID", required = true)]
        entries: Vec<String>,
        #[arg(long)]
        approve: bool,
        #[arg(long)]
        reject: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Admit up to --count entries, each with an invitation only its
    /// applicant can redeem.
    Admit {
        #[arg(long)]
        count: u32,
        #[arg(long, value_enum, default_value_t = OrderArg::Position)]
        order: OrderArg,
        /// Lifetime of each invitation, e.g. 14d (default: no expiry).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Say who would be admitted; admit nobody.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(client: &mut Client, w: WaitlistArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let entries: Vec<pb::WaitlistEntry>;
    let mut summary = json!({});
    match w.action {
        WaitlistAction::Get { entry, applicant } => {
            let request = pb::GetWaitlistEntryRequest {
                entry_id: entry.unwrap_or_default(),
                applicant_id: applicant.unwrap_or_default(),
            };
            let response = client.get_waitlist_entry(request).await.map_err(explain)?.into_inner();
            entries = response.entry.into_iter().collect();
        }
        WaitlistAction::Review { entries: ids, approve, reject: _, reason } => {
            let decision = if approve { pb::ReviewDecision::Approve } else { pb::ReviewDecision::Reject };
            let request = pb::ReviewWaitlistEntriesRequest {
                entry_ids: ids,
                decision: decision as i32,
                reason,
                reviewed_by: String::new(),
            };
            let response = client.review_waitlist_entries(request).await.map_err(explain)?.into_inner();
            summary = json!({ "changed_count": response.changed_count });
            entries = response.entries;
        }
        WaitlistAction::Admit { count, order, ttl, label, note, dry_run } => {
            let order = match order {
                OrderArg::Position => pb::AdmissionOrder::Position,
                OrderArg::Oldest => pb::AdmissionOrder::Oldest,
                OrderArg::Random => pb::AdmissionOrder::Random,
            };
            let request = pb::AdmitFromWaitlistRequest {
                count,
                order: order as i32,
                ttl: ttl.map(duration_pb),
                label,
                note,
                admitted_by: String::new(),
                dry_run,
            };
            let response = client.admit_from_waitlist(request).await.map_err(explain)?.into_inner();
            summary = admit_summary(&response);
            entries = response.entries;
        }
    }
    match output {
        Output::Json => {
            let mut value = summary;
            value["entries"] = Value::Array(entries.iter().map(entry_json).collect());
            json::write(out, &value)?;
        }
        Output::Text => {
            for (key, value) in summary.as_object().into_iter().flatten() {
                writeln!(out, "{key}: {value}")?;
            }
            for e in &entries {
                print_entry(out, e)?;
            }
        }
    }
    Ok(())
}

fn state_name(state: i32) -> &'static str {
    match pb::waitlist_entry::State::try_from(state) {
        Ok(pb::waitlist_entry::State::Waiting) => "waiting",
        Ok(pb::waitlist_entry::State::Approved) => "approved",
        Ok(pb::waitlist_entry::State::Rejected) => "rejected",
        Ok(pb::waitlist_entry::State::Admitted) => "admitted",
        _ => "unknown",
    }
}

fn entry_json(e: &pb::WaitlistEntry) -> Value {
    let invitation = e.invitation.as_ref().map(|i| {
        json!({
            "id": i.id, "code": i.code, "link": i.link,
            "inviter_id": if i.inviter_id.is_empty() { Value::Null } else { json!(i.inviter_id) },
            "expire_time": json::timestamp(i.expire_time.as_ref()),
            "redeem_time": json::timestamp(i.redeem_time.as_ref()),
        })
    });
    json!({
        "id": e.id, "applicant_id": e.applicant_id, "referral_handle": e.referral_handle,
        "state": state_name(e.state), "position": e.position, "referrals": e.referrals,
        "redeemed_referrals": e.redeemed_referrals, "bump": e.bump, "abuse_flags": e.abuse_flags,
        "join_time": json::timestamp(e.join_time.as_ref()), "reviewed_by": e.reviewed_by,
        "review_reason": e.review_reason, "admit_time": json::timestamp(e.admit_time.as_ref()),
        "invitation": invitation,
    })
}

fn print_entry(out: &mut impl Write, e: &pb::WaitlistEntry) -> anyhow::Result<()> {
    let place = if e.position > 0 { format!("position {}", e.position) } else { "not in the line".into() };
    writeln!(
        out,
        "{}  {}  {}  {place}  referrals {} (redeemed {})  bump {}  handle {}",
        e.id,
        e.applicant_id,
        state_name(e.state),
        e.referrals,
        e.redeemed_referrals,
        e.bump,
        e.referral_handle
    )?;
    if let Some(i) = &e.invitation {
        writeln!(out, "    invitation {} {}", i.code, i.link)?;
    }
    Ok(())
}

fn admit_summary(r: &pb::AdmitFromWaitlistResponse) -> Value {
    json!({
        "admitted_count": r.admitted_count,
        "exhausted": r.exhausted,
        "dry_run": r.dry_run,
        "batch_id": if r.batch_id.is_empty() { Value::Null } else { json!(r.batch_id) },
    })
}

/// `plan-wave --from-waitlist`.
pub async fn plan_from_waitlist(
    client: &mut Client,
    p: &PlanWaveArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if p.within <= time::Duration::ZERO || p.history <= p.within {
        anyhow::bail!("--within must be positive and --history longer than it");
    }
    let now = OffsetDateTime::now_utc();
    let (start, end) = (now - p.history, now - p.within);
    let request = pb::GetStatsRequest {
        start_time: Some(timestamp_pb(start)),
        end_time: Some(timestamp_pb(end)),
        leaderboard_size: 1,
        ..Default::default()
    };
    let stats = client.get_stats(request).await.map_err(explain)?.into_inner();
    let w = stats.waitlist.unwrap_or_default();
    // Admitted entries of cohorts at least --within old, and how many of
    // them redeemed (by now): the yield of an admission.
    let history =
        History { minted: w.admitted, redeemed_within: w.admitted_redeemed, redemptions: w.admitted_redeemed };
    let planned = plan::plan(p.target(), &history).map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = u32::try_from(planned.invitations).unwrap_or(u32::MAX).min(10_000);
    let ttl = match p.ttl {
        Some(ttl) => ttl,
        None => std::time::Duration::try_from(p.within)?,
    };
    let admit = |dry_run: bool| pb::AdmitFromWaitlistRequest {
        count,
        ttl: Some(duration_pb(ttl)),
        label: p.label.clone(),
        dry_run,
        ..Default::default()
    };
    let dry = client.admit_from_waitlist(admit(true)).await.map_err(explain)?.into_inner();
    let eligible = dry.entries.len() as u64;
    let admitted = if p.apply {
        Some(client.admit_from_waitlist(admit(false)).await.map_err(explain)?.into_inner())
    } else {
        None
    };
    let expected = eligible.min(u64::from(count)) as f64 * planned.yield_per_invitation;
    match output {
        Output::Json => json::write(
            out,
            &json!({
                "history": { "start_time": json::time(start), "end_time": json::time(end),
                             "admitted": w.admitted, "admitted_redeemed": w.admitted_redeemed },
                "target_new_members": p.target(),
                "yield_per_admission": planned.yield_per_invitation,
                "admissions_needed": planned.invitations,
                "eligible": eligible,
                "plan": { "count": count, "short": dry.exhausted, "expected_new_members": expected, "label": p.label },
                "applied": admitted.is_some(),
                "admit": admitted.as_ref().map(admit_summary),
            }),
        )?,
        Output::Text => {
            writeln!(out, "History: waitlist entries admitted {} to {}", print::time(start), print::time(end))?;
            writeln!(out, "  admitted: {}   redeemed: {}", w.admitted, w.admitted_redeemed)?;
            writeln!(
                out,
                "Model: yield = {} / {} = {:.4} new members per admission; admissions needed = ceil({} / {:.4}) = {}",
                w.admitted_redeemed,
                w.admitted,
                planned.yield_per_invitation,
                p.target(),
                planned.yield_per_invitation,
                planned.invitations
            )?;
            if dry.exhausted {
                writeln!(
                    out,
                    "Short: only {eligible} entries are eligible; admitting them reaches about {expected:.0}."
                )?;
            }
            writeln!(
                out,
                "Plan: admit {} entries from the waitlist (label {:?}).",
                count.min(eligible as u32),
                p.label
            )?;
            match &admitted {
                Some(r) => writeln!(out, "Admitted {} (batch {}).", r.admitted_count, r.batch_id)?,
                None => writeln!(out, "Nothing admitted: run again with --apply to admit this wave.")?,
            }
        }
    }
    Ok(())
}
