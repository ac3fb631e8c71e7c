//! `invitations admin erase --user ID --reason TEXT`: EraseMember, printing
//! the tombstone that now stands in for the member; `invitations admin
//! history`: ListHistory, following its pages up to `--limit` entries.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::args::Output;
use super::{Client, explain, json, print, timestamp_pb};
use crate::pb;

#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The member to erase.
    #[arg(long)]
    pub user: String,
    /// Why (e.g. the ticket of the request); recorded in the history.
    #[arg(long)]
    pub reason: String,
    /// AIP-155 request id: a retry with the same id answers the same.
    #[arg(long, default_value = "")]
    pub request_id: String,
}

pub async fn erase(client: &mut Client, a: &EraseArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let request =
        pb::EraseMemberRequest { user_id: a.user.clone(), reason: a.reason.clone(), request_id: a.request_id.clone() };
    let r = client.erase_member(request).await.map_err(explain)?.into_inner();
    match output {
        Output::Json => json::write(
            out,
            &json!({ "tombstone": r.tombstone, "changed": r.changed, "revoked_count": r.revoked_count }),
        )?,
        Output::Text => {
            let what = if r.changed { "erased" } else { "already erased" };
            writeln!(out, "{what}: now {} ({} unspent invitations revoked)", r.tombstone, r.revoked_count)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Changes that named this invitation (or the batch minted with it).
    #[arg(long)]
    pub invitation: Option<String>,
    /// Changes made by this member or naming it as a target.
    #[arg(long)]
    pub user: Option<String>,
    /// Changes recorded with exactly this caller (e.g. `admin`).
    #[arg(long)]
    pub caller: Option<String>,
    /// One operation (mint, revoke, privileges, redeem, ...).
    #[arg(long)]
    pub operation: Option<String>,
    /// Changes at or after this time (RFC 3339).
    #[arg(long, value_parser = crate::cli::args::parse_rfc3339)]
    pub since: Option<time::OffsetDateTime>,
    /// Changes before this time (RFC 3339).
    #[arg(long, value_parser = crate::cli::args::parse_rfc3339)]
    pub until: Option<time::OffsetDateTime>,
    /// Most entries printed, newest first (pages are followed).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

pub async fn history(client: &mut Client, a: &HistoryArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    while entries.len() < a.limit as usize {
        let want = (a.limit as usize - entries.len()).min(crate::service::MAX_HISTORY_PAGE as usize);
        let request = pb::ListHistoryRequest {
            invitation_id: a.invitation.clone().unwrap_or_default(),
            user_id: a.user.clone().unwrap_or_default(),
            caller: a.caller.clone().unwrap_or_default(),
            operation: a.operation.clone().unwrap_or_default(),
            start_time: a.since.map(timestamp_pb),
            end_time: a.until.map(timestamp_pb),
            page_size: i32::try_from(want).unwrap_or(i32::MAX),
            page_token: std::mem::take(&mut page_token),
        };
        let r = client.list_history(request).await.map_err(explain)?.into_inner();
        entries.extend(r.entries);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    match output {
        Output::Json => {
            let list: Vec<_> = entries.iter().map(history_json).collect();
            json::write(out, &json!({ "entries": list }))?
        }
        Output::Text => {
            if entries.is_empty() {
                writeln!(out, "no changes")?;
            }
            for e in &entries {
                writeln!(out, "{}", history_line(e))?;
            }
        }
    }
    Ok(())
}

fn history_json(e: &pb::HistoryEntry) -> serde_json::Value {
    json!({
        "occur_time": json::timestamp(e.occur_time.as_ref()),
        "caller": e.caller,
        "operation": e.operation,
        "invitation_ids": e.invitation_ids,
        "batch_id": e.batch_id,
        "user_ids": e.user_ids,
        "reason": e.reason,
        "request_id": e.request_id,
        "details": e.details,
    })
}

/// `TIME OPERATION by CALLER: users [..] invitations N batch B "reason" k=v`
fn history_line(e: &pb::HistoryEntry) -> String {
    let mut line = format!("{} {}", print::timestamp(e.occur_time.as_ref()), e.operation);
    if !e.caller.is_empty() {
        line.push_str(&format!(" by {}", e.caller));
    }
    if !e.user_ids.is_empty() {
        line.push_str(&format!(" users {}", e.user_ids.join(",")));
    }
    match e.invitation_ids.as_slice() {
        [] => {}
        [one] => line.push_str(&format!(" invitation {one}")),
        many => line.push_str(&format!(" invitations {}", many.len())),
    }
    if !e.batch_id.is_empty() {
        line.push_str(&format!(" batch {}", e.batch_id));
    }
    if !e.reason.is_empty() {
        line.push_str(&format!(" {:?}", e.reason));
    }
    let mut details: Vec<_> = e.details.iter().collect();
    details.sort();
    for (k, v) in details {
        line.push_str(&format!(" {k}={v}"));
    }
    line
}
