//! `invitations admin …`: the operator CLI. Each subcommand is one or a few
//! gRPC calls to a running service with the crate's generated client; it
//! holds no database access and no business rules (the server checks
//! everything), except the growth planner (`plan`), which seed 2 wants
//! outside the server. Output is for people (`print`) or, with `--output
//! json`, for scripts (`json`); the bearer token comes from
//! `INVITATIONS_TOKEN` only, never a flag (shell history, `ps`).

mod args;
mod conversions;
mod json;
mod lifecycle;
pub mod plan;
mod print;
mod privacy;
mod waitlist;
mod wave;

use std::path::Path;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use args::{AdminArgs, AdminCommand};
use args::{MintArgs, Output, PrivilegesAction, RevokeArgs, StatsArgs};

use crate::pb;
use crate::pb::invitation_service_client::InvitationServiceClient;

/// The environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "INVITATIONS_TOKEN";

pub type Client = InvitationServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Runs one admin subcommand, printing its result on standard output as
/// text or, with `--output json`, as one JSON object (`json`).
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.server, args.ca_cert.as_deref()).await?;
    let out = &mut std::io::stdout().lock();
    let output = args.output;
    match args.command {
        AdminCommand::Mint(m) => {
            let response = client.mint(mint_request(&m)?).await.map_err(explain)?.into_inner();
            match output {
                Output::Text => print::mint(out, &response)?,
                Output::Json => json::write(out, &json::mint(&response))?,
            }
        }
        AdminCommand::Revoke(r) => {
            let response = client.revoke(revoke_request(r)).await.map_err(explain)?.into_inner();
            match output {
                Output::Text => print::revoke(out, &response)?,
                Output::Json => json::write(out, &json::revoke(&response))?,
            }
        }
        AdminCommand::Stats(s) => {
            let response = client.get_stats(stats_request(&s)).await.map_err(explain)?.into_inner();
            match output {
                Output::Text => print::stats(out, &response)?,
                Output::Json => json::write(out, &json::stats(&response))?,
            }
        }
        AdminCommand::Privileges(p) => {
            let (enabled, user, reason, revoke_subtree) = match p.action {
                PrivilegesAction::Enable { user, reason } => (true, user, reason, false),
                PrivilegesAction::Disable { user, reason, revoke_subtree } => (false, user, reason, revoke_subtree),
            };
            let request = pb::SetInvitePrivilegesRequest {
                user_id: user.clone(),
                enabled,
                reason,
                revoke_subtree,
                updated_by: String::new(),
            };
            let response = client.set_invite_privileges(request).await.map_err(explain)?.into_inner();
            match output {
                Output::Text => print::privileges(out, &response)?,
                Output::Json => json::write(out, &json::privileges(&user, &response))?,
            }
        }
        AdminCommand::PlanWave(p) if p.from_waitlist => {
            waitlist::plan_from_waitlist(&mut client, &p, output, out).await?
        }
        AdminCommand::PlanWave(p) => wave::plan_wave(&mut client, &p, output, out).await?,
        AdminCommand::Waitlist(w) => waitlist::run(&mut client, w, output, out).await?,
        AdminCommand::Update(u) => lifecycle::update(&mut client, &u, output, out).await?,
        AdminCommand::Restore(r) => lifecycle::restore(&mut client, &r, output, out).await?,
        AdminCommand::MemberInvite(m) => lifecycle::member_invite(&mut client, &m, output, out).await?,
        AdminCommand::Conversions(c) => conversions::run(&mut client, c, output, out).await?,
        AdminCommand::Erase(e) => privacy::erase(&mut client, &e, output, out).await?,
        AdminCommand::History(h) => privacy::history(&mut client, &h, output, out).await?,
    }
    Ok(())
}

/// A client for `server` (https needs `ca_cert`), with the token from the
/// environment.
pub async fn connect(server: &str, ca_cert: Option<&Path>) -> anyhow::Result<Client> {
    let mut endpoint = Endpoint::from_shared(server.to_owned()).with_context(|| format!("--server {server:?}"))?;
    match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
        }
        None if server.starts_with("https:") => {
            anyhow::bail!("an https server needs --ca-cert (the CA that signed it)")
        }
        None => {}
    }
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {server}"))?;
    let token = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.is_empty() => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| anyhow::anyhow!("{TOKEN_ENV} is not a valid header value"))?,
        ),
        _ => None,
    };
    Ok(InvitationServiceClient::with_interceptor(channel, Bearer(token)))
}

/// A refusal as one readable error: code, reason and the fields named.
pub(crate) fn explain(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        text.push_str(&format!(" [{}]", info.reason));
    }
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(failure) = status.get_details_precondition_failure() {
        for v in failure.violations {
            text.push_str(&format!("\n  {} ({}): {}", v.r#type, v.subject, v.description));
        }
    }
    if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        text.push_str(&format!("\n  retry in {}", print::duration(delay)));
    }
    anyhow::anyhow!(text)
}

fn duration_pb(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn timestamp_pb(t: time::OffsetDateTime) -> prost_types::Timestamp {
    crate::grpc::convert::timestamp(t)
}

fn mint_request(m: &MintArgs) -> anyhow::Result<pb::MintRequest> {
    let mut request = pb::MintRequest {
        user_ids: m.users.clone(),
        per_user: m.per_user.unwrap_or(0),
        unowned_count: m.unowned.unwrap_or(0),
        ttl: m.ttl.map(duration_pb),
        max_uses: m.max_uses.unwrap_or(0),
        label: m.label.clone().unwrap_or_default(),
        note: m.note.clone().unwrap_or_default(),
        dry_run: m.dry_run,
        request_id: m.request_id.clone().unwrap_or_default(),
        attributes: lifecycle::attribute_map(&m.attributes)?,
        custom_code: m.custom_code.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(kind) = m.selector {
        wave::set_selector(&mut request, kind, m.min_age, m.count.unwrap_or(0))?;
    }
    Ok(request)
}

fn revoke_request(r: RevokeArgs) -> pb::RevokeRequest {
    pb::RevokeRequest {
        invitation_ids: r.ids,
        user_id: r.user.unwrap_or_default(),
        reason: r.reason.unwrap_or_default(),
        request_id: r.request_id.unwrap_or_default(),
        revoked_by: String::new(),
    }
}

fn stats_request(s: &StatsArgs) -> pb::GetStatsRequest {
    let end = s.end.unwrap_or_else(time::OffsetDateTime::now_utc);
    let start = s.start.unwrap_or(end - s.since);
    pb::GetStatsRequest {
        start_time: Some(timestamp_pb(start)),
        end_time: Some(timestamp_pb(end)),
        label: s.label.clone().unwrap_or_default(),
        period: if s.week { pb::StatsPeriod::Week } else { pb::StatsPeriod::Day } as i32,
        leaderboard_size: s.top as i32,
        redeemed_within: s.redeemed_within.map(duration_pb),
        converted_within: s.converted_within.map(duration_pb),
        conversion_kind: s.kind.clone().unwrap_or_default(),
    }
}
