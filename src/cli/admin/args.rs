//! The admin subcommands' flags (clap). Connection flags are global, so
//! they may follow the subcommand (`invitations admin mint --server …`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The service's gRPC address (https needs --ca-cert). The bearer token
    /// comes from INVITATIONS_TOKEN (never a flag).
    #[arg(long, env = "INVITATIONS_SERVER", default_value = "http://127.0.0.1:50051", global = true)]
    pub server: String,

    /// PEM file of the CA that signed the server's TLS certificate.
    #[arg(long, env = "INVITATIONS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,

    /// What to print: text for people, or json, one object on one line
    /// with stable field names, for scripts (see docs/operations.md).
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Mint invitations: for named users (--user, repeated; --per-user each),
    /// unowned ones (--unowned N), or a wave by selector (--selector … --count N).
    Mint(MintArgs),
    /// Revoke invitations by id (--id, repeated) or every unspent one of a user (--user).
    Revoke(RevokeArgs),
    /// Show GetStats for a window (default: the last 30 days).
    Stats(StatsArgs),
    /// Enable or disable a member's invite privileges.
    Privileges(PrivilegesArgs),
    /// Compute how many invitations to mint (and for which selector) to reach
    /// a number of new members within a time, from the measured redemption
    /// rate; print the reasoning; mint with --apply.
    PlanWave(PlanWaveArgs),
    /// The waitlist: show an entry, review entries, admit a wave.
    Waitlist(super::waitlist::WaitlistArgs),
    /// Edit an invitation: only the fields given change (its expiry, max
    /// uses, label, note, attributes).
    Update(super::lifecycle::UpdateArgs),
    /// Un-revoke an invitation revoked by mistake.
    Restore(super::lifecycle::RestoreArgs),
    /// Create an invitation on behalf of a member, within the operator's
    /// member limits (CreateMemberInvitation; the token needs the member or
    /// admin scope).
    MemberInvite(super::lifecycle::MemberInviteArgs),
    /// Conversions: record one, void one, review held rewards.
    Conversions(super::conversions::ConversionsArgs),
    /// Erase a member (a GDPR request): its user id is replaced everywhere
    /// by a tombstone, the invite graph keeps its shape.
    Erase(super::privacy::EraseArgs),
    /// The history of changes, newest first: who minted, revoked, changed
    /// privileges, erased, ... and why; redemptions and grants joined in.
    History(super::privacy::HistoryArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Who receives a wave (Mint by selector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectorKind {
    /// Members with no unspent invitation right now.
    NoUnspentInvitation,
    /// Members never issued an invitation who joined at least --min-age ago.
    NeverIssued,
    /// Members whose last invitation was redeemed at least --min-age ago.
    LastRedeemed,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("form").required(true).multiple(true).args(["users", "unowned", "selector"])))]
pub struct MintArgs {
    /// A user to mint for (repeat for several).
    #[arg(long = "user", value_name = "ID")]
    pub users: Vec<String>,
    /// Invitations per named user (default 1).
    #[arg(long, requires = "users")]
    pub per_user: Option<u32>,
    /// Unowned invitations to mint (handed out by the operator).
    #[arg(long, value_name = "N")]
    pub unowned: Option<u32>,
    /// Mint one invitation each for up to --count members matching this.
    #[arg(long, value_enum, requires = "count", conflicts_with_all = ["users", "unowned"])]
    pub selector: Option<SelectorKind>,
    /// How long ago: joined (never-issued) or last redeemed (last-redeemed), e.g. 30d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub min_age: Option<Duration>,
    /// How many members of the selector receive one (chosen at random).
    #[arg(long, requires = "selector")]
    pub count: Option<u32>,
    /// Lifetime of each invitation, e.g. 14d (default: no expiry).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Uses per invitation (default 1).
    #[arg(long)]
    pub max_uses: Option<u32>,
    /// The batch's label (e.g. the wave's name).
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub note: Option<String>,
    /// A vanity code for the one invitation minted (e.g. LAUNCH-2026; needs
    /// --max-uses and --ttl).
    #[arg(long)]
    pub custom_code: Option<String>,
    /// An attribute every minted invitation carries, `key=value` (repeat
    /// for several).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Say what would be minted (and for a selector, how many match), mint nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Idempotency key: the same id replays the first answer (safe retries).
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["ids", "user"])))]
pub struct RevokeArgs {
    /// An invitation id (repeat for several).
    #[arg(long = "id", value_name = "UUID")]
    pub ids: Vec<String>,
    /// Revoke every unspent invitation of this user.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The window's length, ending at --end (e.g. 7d).
    #[arg(long, default_value = "30d", value_parser = parse_time_duration, conflicts_with = "start")]
    pub since: time::Duration,
    /// The window's start (RFC 3339).
    #[arg(long, value_parser = crate::cli::args::parse_rfc3339)]
    pub start: Option<time::OffsetDateTime>,
    /// The window's end (RFC 3339; default now).
    #[arg(long, value_parser = crate::cli::args::parse_rfc3339)]
    pub end: Option<time::OffsetDateTime>,
    /// Only batches with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Group by ISO week of minting instead of day.
    #[arg(long)]
    pub week: bool,
    /// Inviters in the leaderboard (at most 100).
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    /// Also count redemptions within this long of minting.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub redeemed_within: Option<Duration>,
    /// Conversions: count only those within this long of the redeem.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub converted_within: Option<Duration>,
    /// Conversions: the kind the top converters are ranked by (default any).
    #[arg(long)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PrivilegesArgs {
    #[command(subcommand)]
    pub action: PrivilegesAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PrivilegesAction {
    /// Let the member receive invitations and make theirs work again.
    Enable {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop the member receiving invitations; their unspent ones stop working.
    Disable {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Also revoke the unspent invitations of everyone below them.
        #[arg(long)]
        revoke_subtree: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PlanWaveArgs {
    /// New members wanted (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), required_unless_present = "target_conversions")]
    pub target_new_members: Option<u64>,
    /// Plan for converted members instead (RecordConversion of --kind, at
    /// least 1): the yield is the cohorts' invitees who converted within
    /// --within of redeeming, per invitation minted.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), requires = "kind",
          conflicts_with_all = ["target_new_members", "from_waitlist"])]
    pub target_conversions: Option<u64>,
    /// The conversion kind --target-conversions counts.
    #[arg(long, requires = "target_conversions")]
    pub kind: Option<String>,
    /// ...within this long of minting (e.g. 7d).
    #[arg(long, value_parser = parse_time_duration)]
    pub within: time::Duration,
    /// Mint for this selector (default: the first of no-unspent-invitation,
    /// last-redeemed, never-issued that matches enough members).
    #[arg(long, value_enum)]
    pub selector: Option<SelectorKind>,
    /// --min-age for last-redeemed and never-issued.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub min_age: Duration,
    /// How far back to measure: cohorts minted between --history and
    /// --within ago (only those have a fully observed --within).
    #[arg(long, default_value = "90d", value_parser = parse_time_duration)]
    pub history: time::Duration,
    /// Measure only batches with this label (e.g. earlier waves).
    #[arg(long)]
    pub history_label: Option<String>,
    /// The new wave's label.
    #[arg(long, default_value = "wave")]
    pub label: String,
    /// Lifetime of the new invitations (default: --within).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Fill the target from the waitlist instead: admit entries, planned
    /// with the measured rate at which admitted entries redeem (--selector,
    /// --min-age and --history-label do not apply).
    #[arg(long, conflicts_with_all = ["selector", "history_label"])]
    pub from_waitlist: bool,
    /// Mint the planned wave (otherwise only print the plan).
    #[arg(long)]
    pub apply: bool,
    /// Idempotency key for the --apply mint.
    #[arg(long)]
    pub request_id: Option<String>,
}

impl PlanWaveArgs {
    /// What the plan aims for: converted members with --target-conversions,
    /// new members otherwise (clap requires one of them).
    pub fn target(&self) -> u64 {
        self.target_conversions.or(self.target_new_members).unwrap_or(1)
    }
}

fn parse_time_duration(value: &str) -> Result<time::Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    time::Duration::try_from(d).map_err(|e| e.to_string())
}
