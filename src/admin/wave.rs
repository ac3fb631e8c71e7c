//! `plan-wave`: measure the yield of past cohorts through GetStats, plan the
//! wave (`plan`), pick a selector by dry-run Mints, print the reasoning, and
//! mint with `--apply`. Also how a selector goes into a MintRequest.

use std::io::Write;

use time::OffsetDateTime;

use super::args::{PlanWaveArgs, SelectorKind};
use super::plan::{self, Candidate, History};
use super::{Client, duration_pb, explain, print, timestamp_pb};
use crate::pb;

/// Preference when the operator names no selector: members with nothing to
/// share first, then those whose last invitation worked, then those never
/// asked.
const PREFERENCE: [SelectorKind; 3] =
    [SelectorKind::NoUnspentInvitation, SelectorKind::LastRedeemed, SelectorKind::NeverIssued];

pub async fn plan_wave(client: &mut Client, p: &PlanWaveArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if p.within <= time::Duration::ZERO {
        anyhow::bail!("--within must be positive");
    }
    if p.history <= p.within {
        anyhow::bail!("--history ({}) must be longer than --within ({})", p.history, p.within);
    }
    let within_std = std::time::Duration::try_from(p.within)?;
    let now = OffsetDateTime::now_utc();
    let (start, end) = (now - p.history, now - p.within);
    let request = pb::GetStatsRequest {
        start_time: Some(timestamp_pb(start)),
        end_time: Some(timestamp_pb(end)),
        label: p.history_label.clone().unwrap_or_default(),
        redeemed_within: Some(duration_pb(within_std)),
        leaderboard_size: 1,
        ..Default::default()
    };
    let stats = client.get_stats(request).await.map_err(explain)?.into_inner();
    let overall = stats.overall.unwrap_or_default();
    let history = History {
        minted: overall.minted,
        redeemed_within: overall.redeemed_within_count,
        redemptions: overall.redemptions,
    };
    let within = print::duration(within_std);
    let label = p.history_label.as_deref().map(|l| format!(" labelled {l:?}")).unwrap_or_default();
    writeln!(out, "History: invitations{label} minted {} to {}", print::time(start), print::time(end))?;
    writeln!(out, "  (only cohorts at least {within} old: their first {within} is fully observed)")?;
    let row = |out: &mut dyn Write, name: &str, value: &dyn std::fmt::Display| writeln!(out, "  {name:<30}{value}");
    row(out, "minted:", &history.minted)?;
    row(out, &format!("redeemed within {within}:"), &history.redeemed_within)?;
    row(out, "redeemed so far:", &history.redemptions)?;
    if let Some(median) = &overall.median_time_to_redeem {
        row(out, "median time to redeem:", &print::duration_pb(median))?;
    }
    let planned = plan::plan(p.target_new_members, &history).map_err(|e| anyhow::anyhow!("{e}"))?;
    writeln!(out, "Model: each redemption is one new member, and a new wave yields what past cohorts did:")?;
    writeln!(
        out,
        "  yield = {} / {} = {:.4} new members per invitation within {within}",
        history.redeemed_within, history.minted, planned.yield_per_invitation
    )?;
    writeln!(
        out,
        "  invitations needed = ceil({} / {:.4}) = {}",
        p.target_new_members, planned.yield_per_invitation, planned.invitations
    )?;

    let kinds: Vec<SelectorKind> = p.selector.map_or(PREFERENCE.to_vec(), |k| vec![k]);
    let count = u32::try_from(planned.invitations).unwrap_or(u32::MAX);
    let mut candidates = Vec::with_capacity(kinds.len());
    writeln!(out, "Selectors (dry run):")?;
    for kind in kinds {
        let response = client.mint(wave_request(p, kind, count, true)?).await.map_err(explain)?.into_inner();
        let matched = matched_count(&response);
        writeln!(out, "  {:<24} matches {matched} members", selector_name(kind))?;
        candidates.push(Candidate { selector: kind, matched });
    }
    let Some(choice) = plan::choose(planned.invitations, &candidates) else {
        anyhow::bail!("no selector to mint for");
    };
    let name = selector_name(choice.selector);
    if choice.short {
        writeln!(
            out,
            "Short: {name} matches only {} members; minting one each reaches about {:.0} new members, not {}.",
            choice.count,
            choice.count as f64 * planned.yield_per_invitation,
            p.target_new_members
        )?;
    }
    writeln!(out, "Plan: mint {} invitations for {name} (label {:?}).", choice.count, p.label)?;
    if !p.apply {
        writeln!(out, "Nothing minted: run again with --apply to mint this wave.")?;
        return Ok(());
    }
    let count = u32::try_from(choice.count).unwrap_or(u32::MAX);
    let response = client.mint(wave_request(p, choice.selector, count, false)?).await.map_err(explain)?.into_inner();
    print::mint(out, &response)
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
