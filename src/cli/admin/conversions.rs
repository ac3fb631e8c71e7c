//! `invitations admin conversions record|void|review`: one gRPC call each
//! (RecordConversion, VoidConversion, ReviewRewards), printing the
//! conversions as text or JSON.

use std::io::Write;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::args::Output;
use super::{Client, explain, json, timestamp_pb};
use crate::pb;
use crate::pb::conversion_reward::State as RewardState;

#[derive(Debug, Clone, Args)]
pub struct ConversionsArgs {
    #[command(subcommand)]
    pub action: ConversionsAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConversionsAction {
    /// Record that a member did a qualifying action of --kind (once per
    /// member and kind; a repeat shows the first).
    Record {
        #[arg(long)]
        user: String,
        #[arg(long)]
        kind: String,
        /// When it happened (RFC 3339; default: now).
        #[arg(long, value_parser = crate::cli::args::parse_rfc3339)]
        at: Option<time::OffsetDateTime>,
        /// E.g. an amount in minor units.
        #[arg(long)]
        value: Option<i64>,
    },
    /// Void a conversion (a refund, fraud): drop its pending reward, or
    /// revoke the granted invitations still unspent.
    Void {
        #[arg(long, value_name = "UUID")]
        conversion: String,
        #[arg(long)]
        reason: String,
    },
    /// Approve or deny rewards held for review (--conversion, repeated).
    #[command(group(ArgGroup::new("decision").required(true).args(["approve", "deny"])))]
    Review {
        #[arg(long = "conversion", value_name = "UUID", required = true)]
        conversions: Vec<String>,
        #[arg(long)]
        approve: bool,
        #[arg(long)]
        deny: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn run(client: &mut Client, c: ConversionsArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let (summary, conversions) = match c.action {
        ConversionsAction::Record { user, kind, at, value } => {
            let request = pb::RecordConversionRequest {
                user_id: user,
                kind,
                occur_time: at.map(timestamp_pb),
                value,
                request_id: String::new(),
            };
            let r = client.record_conversion(request).await.map_err(explain)?.into_inner();
            (json!({ "created": r.created }), r.conversion.into_iter().collect::<Vec<_>>())
        }
        ConversionsAction::Void { conversion, reason } => {
            let request = pb::VoidConversionRequest { conversion_id: conversion, reason, ..Default::default() };
            let r = client.void_conversion(request).await.map_err(explain)?.into_inner();
            let summary = json!({ "changed": r.changed, "revoked_count": r.revoked_count, "kept_count": r.kept_count });
            (summary, r.conversion.into_iter().collect())
        }
        ConversionsAction::Review { conversions, approve, deny: _, reason } => {
            let decision = if approve { pb::ReviewDecision::Approve } else { pb::ReviewDecision::Reject };
            let request = pb::ReviewRewardsRequest {
                conversion_ids: conversions,
                decision: decision as i32,
                reason,
                reviewed_by: String::new(),
            };
            let r = client.review_rewards(request).await.map_err(explain)?.into_inner();
            (json!({ "changed_count": r.changed_count }), r.conversions)
        }
    };
    match output {
        Output::Json => {
            let mut value = summary;
            value["conversions"] = Value::Array(conversions.iter().map(conversion_json).collect());
            json::write(out, &value)?;
        }
        Output::Text => {
            for (key, value) in summary.as_object().into_iter().flatten() {
                writeln!(out, "{key}: {value}")?;
            }
            for c in &conversions {
                let r = c.reward.clone().unwrap_or_default();
                let inviter = if c.inviter_id.is_empty() { "(nobody)" } else { c.inviter_id.as_str() };
                writeln!(
                    out,
                    "{}  {} {}  inviter {}  reward {} (inviter {}, member {})",
                    c.id,
                    c.user_id,
                    c.kind,
                    inviter,
                    reward_state(r.state),
                    r.inviter_count,
                    r.member_count
                )?;
            }
        }
    }
    Ok(())
}

fn reward_state(state: i32) -> &'static str {
    match RewardState::try_from(state) {
        Ok(RewardState::None) => "none",
        Ok(RewardState::Granted) => "granted",
        Ok(RewardState::Pending) => "pending",
        Ok(RewardState::Voided) => "voided",
        Ok(RewardState::Review) => "review",
        Ok(RewardState::Denied) => "denied",
        _ => "unknown",
    }
}

fn conversion_json(c: &pb::Conversion) -> Value {
    let r = c.reward.clone().unwrap_or_default();
    let or_null = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
    json!({
        "id": c.id, "user_id": c.user_id, "kind": c.kind,
        "occur_time": json::timestamp(c.occur_time.as_ref()), "value": c.value,
        "invitation_id": or_null(&c.invitation_id), "inviter_id": or_null(&c.inviter_id),
        "batch_id": or_null(&c.batch_id), "label": or_null(&c.label),
        "redemption_flags": c.redemption_flags,
        "reward": {
            "state": reward_state(r.state), "inviter_count": r.inviter_count, "member_count": r.member_count,
            "inviter_capped": r.inviter_capped, "hold_until": json::timestamp(r.hold_until.as_ref()),
            "void_reason": or_null(&r.void_reason),
        },
    })
}
