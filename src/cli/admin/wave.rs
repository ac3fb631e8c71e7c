//! `plan-wave`: measure the yield of past cohorts through GetStats, plan the
//! wave (`plan`), pick a selector by dry-run Mints, mint with `--apply`, then
//! print the reasoning (text or JSON). Also how a selector goes into a
//! MintRequest.

use std::io::Write;

use time::OffsetDateTime;

use super::args::{Output, PlanWaveArgs, SelectorKind};
use super::plan::{self, Candidate, Choice, History};
use super::{Client, duration_pb, explain, json, print, timestamp_pb};
use crate::pb;

/// Preference when the operator names no selector: members with nothing to
/// share first, then those whose last invitation worked, then those never
/// asked.
const PREFERENCE: [SelectorKind; 3] =
    [SelectorKind::NoUnspentInvitation, SelectorKind::LastRedeemed, SelectorKind::NeverIssued];

/// What plan-wave measured, planned and did, before it is printed.
struct Report {
    start: OffsetDateTime,
    end: OffsetDateTime,
    history_label: Option<String>,
    within: std::time::Duration,
    history: History,
    median: Option<prost_types::Duration>,
    /// Planning for conversions of this kind instead of redemptions.
    kind: Option<String>,
}

impl Report {
    /// What one success is, in the printed plan.
    fn success(&self) -> String {
        match &self.kind {
            Some(kind) => format!("converted members ({kind})"),
            None => "new members".to_owned(),
        }
    }
}

pub async fn plan_wave(
    client: &mut Client,
    p: &PlanWaveArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if p.within <= time::Duration::ZERO {
        anyhow::bail!("--within must be positive");
    }
    if p.history <= p.within {
        anyhow::bail!("--history ({}) must be longer than --within ({})", p.history, p.within);
    }
    let within = std::time::Duration::try_from(p.within)?;
    let now = OffsetDateTime::now_utc();
    let (start, end) = (now - p.history, now - p.within);
    let request = pb::GetStatsRequest {
        start_time: Some(timestamp_pb(start)),
        end_time: Some(timestamp_pb(end)),
        label: p.history_label.clone().unwrap_or_default(),
        redeemed_within: Some(duration_pb(within)),
        leaderboard_size: 1,
        converted_within: p.kind.as_ref().map(|_| duration_pb(within)),
        conversion_kind: p.kind.clone().unwrap_or_default(),
        ..Default::default()
    };
    let stats = client.get_stats(request).await.map_err(explain)?.into_inner();
    let overall = stats.overall.unwrap_or_default();
    // With --target-conversions a success is a converted invitee: the
    // cohorts' conversions of the kind within --within of redeeming (each
    // batch has one label, so the labels' groups add up to the cohort).
    let converted_within: Option<i64> = p.kind.as_ref().map(|kind| {
        let groups = stats.conversions.as_ref().map(|c| c.by_label.as_slice()).unwrap_or_default();
        groups.iter().filter(|g| &g.kind == kind).map(|g| g.converted).sum()
    });
    let report = Report {
        start,
        end,
        history_label: p.history_label.clone(),
        within,
        history: History {
            minted: overall.minted,
            redeemed_within: converted_within.unwrap_or(overall.redeemed_within_count),
            redemptions: overall.redemptions,
        },
        median: overall.median_time_to_redeem,
        kind: p.kind.clone(),
    };
    let planned = match plan::plan(p.target(), &report.history) {
        Ok(planned) => planned,
        Err(e) => {
            // People see what was measured before the reason; scripts get
            // the reason alone (stderr, non-zero exit).
            if output == Output::Text {
                print_history(out, &report)?;
            }
            anyhow::bail!("{e}");
        }
    };

    let kinds: Vec<SelectorKind> = p.selector.map_or(PREFERENCE.to_vec(), |k| vec![k]);
    let count = u32::try_from(planned.invitations).unwrap_or(u32::MAX);
    let mut candidates = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let response = client.mint(wave_request(p, kind, count, true)?).await.map_err(explain)?.into_inner();
        candidates.push(Candidate { selector: kind, matched: matched_count(&response) });
    }
    let Some(choice) = plan::choose(planned.invitations, &candidates) else {
        anyhow::bail!("no selector to mint for");
    };
    let minted = if p.apply {
        let count = u32::try_from(choice.count).unwrap_or(u32::MAX);
        Some(client.mint(wave_request(p, choice.selector, count, false)?).await.map_err(explain)?.into_inner())
    } else {
        None
    };
    match output {
        Output::Text => {
            print_history(out, &report)?;
            print_plan(out, p, &report, &planned, &candidates, &choice)?;
            match &minted {
                Some(response) => print::mint(out, response)?,
                None => writeln!(out, "Nothing minted: run again with --apply to mint this wave.")?,
            }
        }
        Output::Json => json::write(out, &plan_json(p, &report, &planned, &candidates, &choice, minted.as_ref()))?,
    }
    Ok(())
}

fn print_history(out: &mut impl Write, r: &Report) -> anyhow::Result<()> {
    let within = print::duration(r.within);
    let label = r.history_label.as_deref().map(|l| format!(" labelled {l:?}")).unwrap_or_default();
    writeln!(out, "History: invitations{label} minted {} to {}", print::time(r.start), print::time(r.end))?;
    writeln!(out, "  (only cohorts at least {within} old: their first {within} is fully observed)")?;
    let row = |out: &mut dyn Write, name: &str, value: &dyn std::fmt::Display| writeln!(out, "  {name:<30}{value}");
    row(out, "minted:", &r.history.minted)?;
    match &r.kind {
        Some(_) => row(out, &format!("converted within {within}:"), &r.history.redeemed_within)?,
        None => row(out, &format!("redeemed within {within}:"), &r.history.redeemed_within)?,
    }
    row(out, "redeemed so far:", &r.history.redemptions)?;
    if let Some(median) = &r.median {
        row(out, "median time to redeem:", &print::duration_pb(median))?;
    }
    Ok(())
}

fn print_plan(
    out: &mut impl Write,
    p: &PlanWaveArgs,
    r: &Report,
    planned: &plan::Plan,
    candidates: &[Candidate<SelectorKind>],
    choice: &Choice<SelectorKind>,
) -> anyhow::Result<()> {
    let within = print::duration(r.within);
    let success = r.success();
    match &r.kind {
        Some(kind) => writeln!(
            out,
            "Model: each invitee who redeems and converts ({kind}) within {within} of redeeming counts, and a new \
             wave yields what past cohorts did:"
        )?,
        None => {
            writeln!(out, "Model: each redemption is one new member, and a new wave yields what past cohorts did:")?
        }
    }
    writeln!(
        out,
        "  yield = {} / {} = {:.4} {success} per invitation within {within}",
        r.history.redeemed_within, r.history.minted, planned.yield_per_invitation
    )?;
    writeln!(
        out,
        "  invitations needed = ceil({} / {:.4}) = {}",
        p.target(),
        planned.yield_per_invitation,
        planned.invitations
    )?;
    writeln!(out, "Selectors (dry run):")?;
    for c in candidates {
        writeln!(out, "  {:<24} matches {} members", selector_name(c.selector), c.matched)?;
    }
    let name = selector_name(choice.selector);
    if choice.short {
        writeln!(
            out,
            "Short: {name} matches only {} members; minting one each reaches about {:.0} {}, not {}.",
            choice.count,
            choice.count as f64 * planned.yield_per_invitation,
            r.success(),
            p.target()
        )?;
    }
    writeln!(out, "Plan: mint {} invitations for {name} (label {:?}).", choice.count, p.label)?;
    Ok(())
}

fn plan_json(
    p: &PlanWaveArgs,
    r: &Report,
    planned: &plan::Plan,
    candidates: &[Candidate<SelectorKind>],
    choice: &Choice<SelectorKind>,
    minted: Option<&pb::MintResponse>,
) -> serde_json::Value {
    let selectors: Vec<_> = candidates
        .iter()
        .map(|c| serde_json::json!({ "selector": selector_name(c.selector), "matched": c.matched }))
        .collect();
    serde_json::json!({
        "history": {
            "start_time": json::time(r.start),
            "end_time": json::time(r.end),
            "label": r.history_label,
            "minted": r.history.minted,
            "redeemed_within": r.history.redeemed_within,
            "redemptions": r.history.redemptions,
            "median_time_to_redeem_seconds": json::seconds(r.median.as_ref()),
        },
        "within_seconds": r.within.as_secs_f64(),
        "target_new_members": p.target_new_members,
        "target_conversions": p.target_conversions,
        "conversion_kind": r.kind,
        "yield_per_invitation": planned.yield_per_invitation,
        "invitations_needed": planned.invitations,
        "selectors": selectors,
        "plan": {
            "selector": selector_name(choice.selector),
            "count": choice.count,
            "short": choice.short,
            "expected_new_members": choice.count as f64 * planned.yield_per_invitation,
            "label": p.label,
        },
        "applied": minted.is_some(),
        "mint": minted.map(json::mint),
    })
}

fn wave_request(p: &PlanWaveArgs, kind: SelectorKind, count: u32, dry_run: bool) -> anyhow::Result<pb::MintRequest> {
    let ttl = match p.ttl {
        Some(ttl) => ttl,
        None => std::time::Duration::try_from(p.within)?,
    };
    let mut request = pb::MintRequest {
        ttl: Some(duration_pb(ttl)),
        label: p.label.clone(),
        dry_run,
        request_id: if dry_run { String::new() } else { p.request_id.clone().unwrap_or_default() },
        ..Default::default()
    };
    set_selector(&mut request, kind, Some(p.min_age), count)?;
    Ok(request)
}

pub fn selector_name(kind: SelectorKind) -> &'static str {
    match kind {
        SelectorKind::NoUnspentInvitation => "no-unspent-invitation",
        SelectorKind::NeverIssued => "never-issued",
        SelectorKind::LastRedeemed => "last-redeemed",
    }
}

/// Puts a selector and count into a Mint request. `never-issued` and
/// `last-redeemed` need `min_age`.
pub fn set_selector(
    request: &mut pb::MintRequest,
    kind: SelectorKind,
    min_age: Option<std::time::Duration>,
    count: u32,
) -> anyhow::Result<()> {
    use pb::selector::Criterion;
    let age = || {
        min_age.map(duration_pb).ok_or_else(|| anyhow::anyhow!("--selector {} needs --min-age", selector_name(kind)))
    };
    let criterion = match kind {
        SelectorKind::NoUnspentInvitation => Criterion::NoUnspentInvitation(pb::NoUnspentInvitation {}),
        SelectorKind::NeverIssued => Criterion::NeverIssued(pb::NeverIssued { joined_at_least: Some(age()?) }),
        SelectorKind::LastRedeemed => Criterion::LastRedeemed(pb::LastRedeemed { at_least: Some(age()?) }),
    };
    request.selector = Some(pb::Selector { criterion: Some(criterion) });
    request.count = count;
    Ok(())
}

fn matched_count(response: &pb::MintResponse) -> u64 {
    u64::from(response.matched_count)
}
