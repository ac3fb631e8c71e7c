//! `invitations admin update`, `restore` and `member-invite`: edit an
//! invitation (only the fields given become the update mask), un-revoke
//! one, and create one on behalf of a member within the operator's member
//! limits (CreateMemberInvitation). The server checks everything.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::args::Output;
use super::{Client, explain, json, print, timestamp_pb};
use crate::pb;

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// The invitation's id.
    #[arg(long, value_name = "UUID")]
    pub id: String,
    /// New lifetime from now, e.g. 14d.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "no_expiry")]
    pub expires_in: Option<Duration>,
    /// Make it never expire.
    #[arg(long)]
    pub no_expiry: bool,
    #[arg(long)]
    pub max_uses: Option<u32>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub note: Option<String>,
    /// Replace the attributes with these `key=value` pairs (repeat for several).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Remove every attribute.
    #[arg(long, conflicts_with = "attributes")]
    pub clear_attributes: bool,
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The revoked invitation's id.
    #[arg(long, value_name = "UUID")]
    pub id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MemberInviteArgs {
    /// The member the invitation is for (its inviter).
    #[arg(long = "user", value_name = "ID")]
    pub user: String,
    /// Uses (default 1; at most --member-max-uses).
    #[arg(long)]
    pub max_uses: Option<u32>,
    /// Lifetime, e.g. 7d (required when the server sets --member-max-ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[arg(long)]
    pub label: Option<String>,
    /// An attribute, `key=value`, of the keys --member-attribute-keys allows
    /// (repeat for several).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    #[arg(long)]
    pub request_id: Option<String>,
}

/// `key=value` pairs as a map (the server checks the limits).
pub fn attribute_map(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--attribute {pair:?} is not KEY=VALUE"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn update_request(u: &UpdateArgs) -> anyhow::Result<pb::UpdateInvitationRequest> {
    let mut paths = Vec::new();
    let mut update = pb::InvitationUpdate::default();
    if let Some(d) = u.expires_in {
        let d = time::Duration::try_from(d)?;
        update.expire_time = Some(timestamp_pb(time::OffsetDateTime::now_utc() + d));
        paths.push("expire_time");
    } else if u.no_expiry {
        paths.push("expire_time");
    }
    if let Some(m) = u.max_uses {
        update.max_uses = m;
        paths.push("max_uses");
    }
    if let Some(label) = &u.label {
        update.label = label.clone();
        paths.push("label");
    }
    if let Some(note) = &u.note {
        update.note = note.clone();
        paths.push("note");
    }
    if !u.attributes.is_empty() || u.clear_attributes {
        update.attributes = attribute_map(&u.attributes)?;
        paths.push("attributes");
    }
    anyhow::ensure!(
        !paths.is_empty(),
        "nothing to change: give --expires-in, --no-expiry, --max-uses, --label, --note, --attribute or --clear-attributes"
    );
    Ok(pb::UpdateInvitationRequest {
        invitation_id: u.id.clone(),
        invitation: Some(update),
        update_mask: Some(prost_types::FieldMask { paths: paths.into_iter().map(String::from).collect() }),
        updated_by: String::new(),
        request_id: u.request_id.clone().unwrap_or_default(),
    })
}

pub async fn update(client: &mut Client, u: &UpdateArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let response = client.update_invitation(update_request(u)?).await.map_err(explain)?.into_inner();
    show(out, "Updated", &response.invitation.unwrap_or_default(), output)
}

pub async fn restore(client: &mut Client, r: &RestoreArgs, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let request = pb::RestoreInvitationRequest {
        invitation_id: r.id.clone(),
        reason: r.reason.clone(),
        restored_by: String::new(),
        request_id: r.request_id.clone().unwrap_or_default(),
    };
    let response = client.restore_invitation(request).await.map_err(explain)?.into_inner();
    show(out, "Restored", &response.invitation.unwrap_or_default(), output)
}

pub async fn member_invite(
    client: &mut Client,
    m: &MemberInviteArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::CreateMemberInvitationRequest {
        user_id: m.user.clone(),
        max_uses: m.max_uses.unwrap_or_default(),
        ttl: m.ttl.map(super::duration_pb),
        label: m.label.clone().unwrap_or_default(),
        attributes: attribute_map(&m.attributes)?,
        request_id: m.request_id.clone().unwrap_or_default(),
    };
    let response = client.create_member_invitation(request).await.map_err(explain)?.into_inner();
    show(out, "Created", &response.invitation.unwrap_or_default(), output)
}

fn show(out: &mut impl Write, verb: &str, inv: &pb::Invitation, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => print::invitation(out, verb, inv),
        Output::Json => json::write(out, &json::invitation(inv)),
    }
}
