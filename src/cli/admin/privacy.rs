//! `invitations admin erase --user ID --reason TEXT`: EraseMember, printing
//! the tombstone that now stands in for the member.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::args::Output;
use super::{Client, explain, json};
use crate::pb;

#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The member to erase.
    #[arg(long)]
    pub user: String,
    /// Why (e.g. the ticket of the request); logged, not stored.
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
