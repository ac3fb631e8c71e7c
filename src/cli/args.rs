//! Command line and environment: every setting is a flag with an env twin.
//! `docs/operations.md` lists them in a table that `scripts/check-settings`
//! generates from `serve --help` (CI fails when it is stale).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "invitations", version, about = "Invite-only growth as a gRPC service on Postgres")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, env = "INVITATIONS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info,sqlx=warn`.
    #[arg(long, env = "INVITATIONS_LOG", default_value = "info,sqlx=warn", global = true)]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Show the outbox backlog (events not yet published), or replay events.
    Outbox(OutboxArgs),
    /// Rewrite every code and stored answer under the current secret (after a
    /// rotation: `--secret NEW --previous-secrets OLD`), report what is left, and exit.
    Rekey(RekeyArgs),
    /// Print the SHA-256 (hex) of a caller token read from standard input, for
    /// `--caller-tokens`; with `--generate`, make a new random token and print both.
    HashToken(HashTokenArgs),
    /// Operator commands against a running service over gRPC: mint, revoke,
    /// update, restore, member-invite, stats, privileges, plan-wave,
    /// waitlist, conversions, erase, history. The bearer token comes from
    /// INVITATIONS_TOKEN.
    Admin(crate::cli::admin::AdminArgs),
}

#[derive(Debug, Clone, Args)]
pub struct OutboxArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub action: Option<OutboxAction>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum OutboxAction {
    /// Pending events: how many, the oldest one's age, counts by type (the default).
    Status,
    /// Mark sent events as pending again, so the relays publish them once more
    /// (same event ids: JetStream drops those still inside its duplicate window).
    Replay {
        /// Events created at or after this time (RFC 3339, e.g. 2026-11-21T10:00:00Z).
        #[arg(long, value_parser = parse_rfc3339)]
        since: time::OffsetDateTime,
        /// ...and before this time (default: now).
        #[arg(long, value_parser = parse_rfc3339)]
        until: Option<time::OffsetDateTime>,
        /// Only events of this type (e.g. `redeemed`, `reservation.lapsed`).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Count what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn parse_rfc3339(value: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e})"))
}

#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// Server secret (at least 32 bytes; all replicas share it). Codes are
    /// looked up by keyed hashes and kept encrypted under keys derived from
    /// it, as are IP hashes and page tokens: losing it makes stored codes
    /// unusable. `scripts/run` generates a development one under `.data/`.
    #[arg(long, env = "INVITATIONS_SECRET", hide_env_values = true)]
    pub secret: String,

    /// Secrets being rotated out, comma-separated: what was stored under them
    /// stays readable until `invitations rekey` (or the start-up rekey) has
    /// moved it to `--secret`.
    #[arg(long, env = "INVITATIONS_PREVIOUS_SECRETS", hide_env_values = true, value_delimiter = ',')]
    pub previous_secrets: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HashTokenArgs {
    /// Generate a new random token (printed once) instead of reading one.
    #[arg(long)]
    pub generate: bool,
}

/// What an abuse check does when it fires: `block` refuses the call, `flag`
/// allows it and records the signal on the redemption, `off` does not check.
// No doc comments on the variants: clap would print them as a list, which
// the settings table (scripts/settings.py) does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckMode {
    Block,
    Flag,
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Most connections of each of the two database pools (the common path's and the general one).
    #[arg(long, env = "INVITATIONS_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// How long a call waits for a free database connection before failing.
    #[arg(long, env = "INVITATIONS_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "INVITATIONS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP endpoint (`GET /metrics`, Prometheus format).
    #[arg(long, env = "INVITATIONS_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Optional plaintext gRPC listener serving only grpc.health.v1 (and no
    /// credentials needed), for Kubernetes' native gRPC probes, which cannot
    /// speak TLS, when `--listen` serves TLS.
    #[arg(long, env = "INVITATIONS_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Postgres hot standbys for the read-only calls (CheckCode, ListForUser,
    /// GetInviteGraph, WalkInviteForest, GetStats, GetWaitlistEntry):
    /// comma-separated URLs, or one pooler address. Unset: every read goes to
    /// the primary.
    #[arg(long, env = "INVITATIONS_DATABASE_READ_URL", hide_env_values = true, value_delimiter = ',')]
    pub database_read_url: Vec<String>,

    /// A standby further behind the primary than this serves no reads (they go
    /// to the primary until it catches up).
    #[arg(long, env = "INVITATIONS_MAX_REPLICA_LAG", default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_replica_lag: Duration,

    /// How often the standbys' replay position is compared with the primary's.
    #[arg(long, env = "INVITATIONS_REPLICA_CHECK_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub replica_check_interval: Duration,

    /// Apply migrations at start.
    #[arg(long, env = "INVITATIONS_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub migrate: bool,

    /// Registration link; `{code}` is replaced by the invitation code.
    #[arg(long, env = "INVITATIONS_LINK_TEMPLATE", default_value = "https://example.com/join?code={code}")]
    pub link_template: String,

    /// Random symbols per code (8-29); each carries log2(31) ≈ 4.95 bits. A
    /// check symbol is added. The default 15 gives about 74 bits.
    #[arg(long, env = "INVITATIONS_CODE_LENGTH", default_value_t = crate::domain::code::DEFAULT_RANDOM_SYMBOLS)]
    pub code_length: usize,

    /// Optional prefix shown before codes (letters and digits), e.g. `INV`.
    #[arg(long, env = "INVITATIONS_CODE_PREFIX", default_value = "")]
    pub code_prefix: String,

    /// Allow vanity codes (Mint's custom_code). Also makes CheckCode, Reserve
    /// and Redeem look up input that is not a generated code's format but is
    /// vanity-shaped (CODE_NOT_FOUND, a counted attempt, instead of
    /// INVALID_CODE_FORMAT without a lookup).
    #[arg(long, env = "INVITATIONS_VANITY_CODES", default_value_t = false, action = clap::ArgAction::Set)]
    pub vanity_codes: bool,

    #[command(flatten)]
    pub secrets: SecretArgs,

    /// How often health pings the database.
    #[arg(long, env = "INVITATIONS_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// After SIGTERM: how long to keep serving while reporting NOT_SERVING, so
    /// load balancers stop sending new calls first.
    #[arg(long, env = "INVITATIONS_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// After the delay: how long in-flight calls may take to finish.
    #[arg(long, env = "INVITATIONS_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Serve gRPC server reflection (v1 and v1alpha).
    #[arg(long, env = "INVITATIONS_REFLECTION", default_value_t = true, action = ArgAction::Set)]
    pub reflection: bool,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub abuse: AbuseArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub quotas: QuotaArgs,

    #[command(flatten)]
    pub waitlist: WaitlistArgs,

    #[command(flatten)]
    pub members: MemberArgs,

    #[command(flatten)]
    pub conversions: ConversionArgs,

    /// Lease of a Reserve call that names no ttl.
    #[arg(long, env = "INVITATIONS_RESERVATION_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,

    /// Longest lease a Reserve call gets; longer requests are clamped to it.
    #[arg(long, env = "INVITATIONS_RESERVATION_MAX_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub reservation_max_ttl: Duration,

    /// How often lapsed reservations are marked as such (tidying and stats
    /// only; correctness does not depend on it). `0s` turns the sweeper off.
    #[arg(long, env = "INVITATIONS_RESERVATION_SWEEP_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub reservation_sweep_interval: Duration,

    /// How often invitations past their expiry are found and announced
    /// (`expired` events, once each). `0s` turns the sweeper off.
    #[arg(long, env = "INVITATIONS_EXPIRY_SWEEP_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub expiry_sweep_interval: Duration,

    /// How often the count deltas appended by every redeem and revoke (the
    /// invite graph's per-member counts, the stats' per-batch counts) are
    /// folded into their counters. Counts are exact either way; folding
    /// keeps reading them cheap. `0s` turns it off (tests only: the
    /// deltas then grow without bound).
    #[arg(long, env = "INVITATIONS_GRAPH_FOLD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub graph_fold_interval: Duration,

    /// How long the history of changes (ListHistory) is kept, a calendar
    /// month at a time: a month is dropped once it ended longer ago than
    /// this. Unset keeps it forever (the default).
    #[arg(long, env = "INVITATIONS_HISTORY_RETENTION", value_parser = humantime::parse_duration)]
    pub history_retention: Option<Duration>,

    /// How often the history's coming months are made and, with a
    /// retention, its expired months dropped.
    #[arg(long, env = "INVITATIONS_HISTORY_UPKEEP_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub history_upkeep_interval: Duration,

    /// How long a `request_id` is honoured: a retry within it replays the
    /// first answer; past it the stored answer is deleted and the same id
    /// is a new call. `0s` keeps them forever.
    #[arg(long, env = "INVITATIONS_REQUEST_ID_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub request_id_retention: Duration,

    #[command(flatten)]
    pub events: EventArgs,
}

/// Notifications: the outbox and its relay to NATS JetStream.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// NATS server(s) to publish events to, comma-separated (credentials may
    /// go in the URL: `nats://user:password@host:4222`). Unset: events wait
    /// in the outbox and nothing is published.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// JetStream stream the events go to (created if missing).
    #[arg(long, env = "INVITATIONS_NATS_STREAM", default_value = "INVITATIONS")]
    pub nats_stream: String,

    /// Subject prefix: events go to `<prefix>.<type>`, e.g. `invitations.v1.minted`;
    /// the stream takes `<prefix>.>`.
    #[arg(long, env = "INVITATIONS_NATS_SUBJECT_PREFIX", default_value = "invitations.v1")]
    pub nats_subject_prefix: String,

    /// JetStream duplicate window of a stream this service creates: a
    /// re-publish of an event within it is dropped. Must exceed the longest
    /// relay retry (see --outbox-max-backoff).
    #[arg(long, env = "INVITATIONS_NATS_DUPLICATE_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub nats_duplicate_window: Duration,

    /// How long the relay waits for JetStream's acknowledgement of a publish.
    #[arg(long, env = "INVITATIONS_NATS_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub nats_publish_timeout: Duration,

    /// CloudEvents `source` attribute (ce-source) of every event.
    #[arg(long, env = "INVITATIONS_EVENTS_SOURCE", default_value = "invitations")]
    pub events_source: String,

    /// Put invitation codes and links in `minted` events. Codes are
    /// credentials: with this on, they are stored in the outbox until pruned
    /// and readable by every consumer of the stream.
    #[arg(long, env = "INVITATIONS_EVENTS_INCLUDE_CODES", default_value_t = false, action = ArgAction::Set)]
    pub events_include_codes: bool,

    /// Most events one relay round publishes.
    #[arg(long, env = "INVITATIONS_OUTBOX_BATCH_SIZE", default_value_t = 500)]
    pub outbox_batch_size: u32,

    /// The relay also looks for events this often (a safety net: commits
    /// wake it at once, in process or through Postgres LISTEN/NOTIFY).
    #[arg(long, env = "INVITATIONS_OUTBOX_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub outbox_poll_interval: Duration,

    /// Longest wait between relay retries while the broker fails (the wait
    /// doubles from 100 ms up to this).
    #[arg(long, env = "INVITATIONS_OUTBOX_MAX_BACKOFF", default_value = "30s", value_parser = humantime::parse_duration)]
    pub outbox_max_backoff: Duration,

    /// How long sent events stay in the outbox (for `invitations outbox
    /// replay`) before they are dropped, a UTC day at a time (a day goes
    /// once every event in it was sent longer ago than this).
    #[arg(long, env = "INVITATIONS_OUTBOX_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,

    /// How often the backlog gauges are refreshed, the coming days' outbox
    /// partitions made and sent days dropped.
    #[arg(long, env = "INVITATIONS_OUTBOX_STATS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub outbox_stats_interval: Duration,

    /// TEST ONLY: the relay stops after its first publish, before marking
    /// the events sent (a crash at the worst moment). Hidden from --help,
    /// and only built with the `test-hooks` feature (the tests' own).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, default_value_t = false)]
    pub outbox_test_crash_after_publish: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Callers allowed in with a bearer token: `name:scopes:sha256hex`
    /// entries separated by commas or whitespace; scopes are `admin`, `signup`,
    /// `read` and `member`, joined with `+`. Only the SHA-256 of each token is configured
    /// (`invitations hash-token`).
    #[arg(long, env = "INVITATIONS_CALLER_TOKENS", hide_env_values = true, default_value = "")]
    pub caller_tokens: String,

    /// Callers allowed in with a TLS client certificate (needs
    /// `--tls-client-ca`): `identity:scopes` entries, the identity being a
    /// DNS or URI subject alternative name, or the common name, of the certificate.
    #[arg(long, env = "INVITATIONS_CLIENT_IDENTITIES", default_value = "")]
    pub client_identities: String,

    /// Serve without caller credentials on a non-loopback address (every call
    /// allowed). Without credentials and without this flag, the service only
    /// listens on loopback.
    #[arg(long, env = "INVITATIONS_INSECURE_ALLOW_UNAUTHENTICATED", default_value_t = false, action = ArgAction::Set)]
    pub insecure_allow_unauthenticated: bool,

    /// Let anyone call reflection (list and describe the API). Otherwise,
    /// once credentials are configured, reflection needs an authenticated caller.
    #[arg(long, env = "INVITATIONS_REFLECTION_PUBLIC", default_value_t = false, action = ArgAction::Set)]
    pub reflection_public: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve gRPC over TLS (with `--tls-key`).
    #[arg(long, env = "INVITATIONS_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "INVITATIONS_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificate(s) that client certificates must chain to (mutual
    /// TLS). Clients without a certificate may still present a token.
    #[arg(long, env = "INVITATIONS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AbuseArgs {
    /// Redeem and Reserve from an IP prefix that already redeemed within
    /// `--abuse-ip-window`: `block` (IP_ALREADY_USED), `flag` or `off`.
    #[arg(long, env = "INVITATIONS_ABUSE_IP_REUSE", value_enum, default_value_t = CheckMode::Flag)]
    pub abuse_ip_reuse: CheckMode,

    /// How long a redemption's IP prefix is kept (hashed) and counts for
    /// the IP checks; dropped afterwards.
    #[arg(long, env = "INVITATIONS_ABUSE_IP_WINDOW", default_value = "30days", value_parser = humantime::parse_duration)]
    pub abuse_ip_window: Duration,

    /// IPv4 prefix length that counts as one IP (32: the address; 24: its /24).
    #[arg(long, env = "INVITATIONS_ABUSE_IPV4_PREFIX", value_name = "BITS", default_value_t = 32, value_parser = clap::value_parser!(u8).range(8..=32))]
    pub abuse_ipv4_prefix: u8,

    /// IPv6 prefix length that counts as one IP (64: one subscriber's network).
    #[arg(long, env = "INVITATIONS_ABUSE_IPV6_PREFIX", value_name = "BITS", default_value_t = 64, value_parser = clap::value_parser!(u8).range(16..=128))]
    pub abuse_ipv6_prefix: u8,

    /// Invitee redeeming from the IP prefix the inviter joined from (within
    /// the window): `block` (SAME_IP_AS_INVITER), `flag` or `off`.
    #[arg(long, env = "INVITATIONS_ABUSE_SAME_IP", value_enum, default_value_t = CheckMode::Flag)]
    pub abuse_same_ip: CheckMode,

    /// E-mail at a disposable domain (bundled list plus
    /// `--disposable-domains`): `block` (DISPOSABLE_EMAIL), `flag` or `off`.
    #[arg(long, env = "INVITATIONS_ABUSE_DISPOSABLE_EMAIL", value_enum, default_value_t = CheckMode::Block)]
    pub abuse_disposable_email: CheckMode,

    /// More disposable domains (comma-separated), added to the bundled list.
    #[arg(long, env = "INVITATIONS_DISPOSABLE_DOMAINS", default_value = "")]
    pub disposable_domains: String,

    /// Failed Redeem/CheckCode/Reserve attempts (well-formed codes or
    /// reservation ids that do not exist) per client IP prefix and per
    /// invitee: `block` (RESOURCE_EXHAUSTED once over the limit, for every
    /// attempt until the window ends), `flag` or `off`.
    #[arg(long, env = "INVITATIONS_ABUSE_ATTEMPTS", value_enum, default_value_t = CheckMode::Block)]
    pub abuse_attempts: CheckMode,

    /// Failed attempts allowed per window, per client IP prefix and per invitee.
    #[arg(long, env = "INVITATIONS_ATTEMPT_LIMIT", default_value_t = 5)]
    pub attempt_limit: u32,

    /// The window of `--attempt-limit`.
    #[arg(long, env = "INVITATIONS_ATTEMPT_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub attempt_window: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Calls served at once (health excluded); more are refused at once with
    /// UNAVAILABLE (reason OVERLOADED) instead of queueing.
    #[arg(long, env = "INVITATIONS_MAX_CONCURRENT_CALLS", default_value_t = 512)]
    pub max_concurrent_calls: usize,

    /// gRPC connections open at once (the --health-listen port excluded);
    /// one more is closed on arrival. Each idle connection holds about
    /// 36 KiB, so the default keeps a connection storm near 70 MiB.
    #[arg(
        long,
        env = "INVITATIONS_MAX_CONNECTIONS",
        default_value_t = 2000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_connections: usize,

    /// Longest a call may run; a shorter client deadline (grpc-timeout) wins.
    #[arg(long, env = "INVITATIONS_MAX_CALL_TIME", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_call_time: Duration,

    /// Largest request message accepted, in bytes (OUT_OF_RANGE beyond, from
    /// the decoder). The default fits a Mint of 10,000 ids of 128 bytes.
    #[arg(long, env = "INVITATIONS_MAX_REQUEST_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_request_bytes: usize,
}

/// Quota policies: invitations the service grants by itself, all off by
/// default (docs/design.md, "Quotas").
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Welcome grant: invitations a member receives on joining (RegisterMembers
    /// or Redeem, in that call's transaction), at most 100. `0` turns it off.
    #[arg(long, env = "INVITATIONS_WELCOME_GRANT", default_value_t = 0)]
    pub welcome_grant: u32,

    /// Refill: when one of a member's invitations is redeemed, top their
    /// unspent ones up to this many (in the Redeem), at most 100. `0` turns it
    /// off.
    #[arg(long, env = "INVITATIONS_REFILL_TO", default_value_t = 0)]
    pub refill_to: u32,

    /// Earn: a member earns one invitation per this interval since joining
    /// (while below --earn-cap unspent). `0s` turns it off.
    #[arg(long, env = "INVITATIONS_EARN_INTERVAL", default_value = "0s", value_parser = humantime::parse_duration)]
    pub earn_interval: Duration,

    /// Earn: a member never earns while holding this many unspent
    /// invitations (a tick at the cap grants nothing). Required (at least 1)
    /// with --earn-interval.
    #[arg(long, env = "INVITATIONS_EARN_CAP", default_value_t = 0)]
    pub earn_cap: u32,

    /// How often the earn granter looks for members whose next invitation is
    /// due (replicas share the work). Grants arrive up to this late.
    #[arg(long, env = "INVITATIONS_EARN_GRANT_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub earn_grant_interval: Duration,

    /// Attributes every quota grant's invitations carry (welcome, refill and
    /// earn), as `key=value` pairs separated by commas, e.g.
    /// `source=welcome,group=beta`. The limits of Invitation.attributes apply.
    #[arg(long, env = "INVITATIONS_GRANT_ATTRIBUTES", value_delimiter = ',')]
    pub grant_attributes: Vec<String>,
}

/// What members may create themselves (CreateMemberInvitation).
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// Let the product create invitations on behalf of members
    /// (CreateMemberInvitation, `member` scope) within the limits below.
    #[arg(long, env = "INVITATIONS_MEMBER_INVITATIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub member_invitations: bool,

    /// Most uses of an invitation a member creates.
    #[arg(long, env = "INVITATIONS_MEMBER_MAX_USES", default_value_t = 1)]
    pub member_max_uses: u32,

    /// Longest lifetime of an invitation a member creates; when set (not
    /// `0s`), a ttl is required.
    #[arg(long, env = "INVITATIONS_MEMBER_MAX_TTL", default_value = "0s", value_parser = humantime::parse_duration)]
    pub member_max_ttl: Duration,

    /// How long someone must have been a member (since joining) to create
    /// invitations; `0s`: no minimum.
    #[arg(long, env = "INVITATIONS_MEMBER_MIN_AGE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub member_min_age: Duration,

    /// At most this many created per --member-rate-period per member; `0`:
    /// no rate limit.
    #[arg(long, env = "INVITATIONS_MEMBER_RATE", default_value_t = 0)]
    pub member_rate: u32,

    /// The period of --member-rate (a sliding window).
    #[arg(long, env = "INVITATIONS_MEMBER_RATE_PERIOD", default_value = "1d", value_parser = humantime::parse_duration)]
    pub member_rate_period: Duration,

    /// No more while the member holds this many unspent invitations (of any
    /// origin); `0`: no limit.
    #[arg(long, env = "INVITATIONS_MEMBER_MAX_UNSPENT", default_value_t = 0)]
    pub member_max_unspent: u32,

    /// Attribute keys a member's invitation may carry (comma-separated);
    /// empty: none.
    #[arg(long, env = "INVITATIONS_MEMBER_ATTRIBUTE_KEYS", value_delimiter = ',')]
    pub member_attribute_keys: Vec<String>,
}

/// Whether the waitlist admits only entries a reviewer approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewMode {
    Required,
    Off,
}

/// The waitlist (docs/design.md, "Waitlist").
#[derive(Debug, Clone, Args)]
pub struct WaitlistArgs {
    /// `required`: AdmitFromWaitlist admits only entries approved with
    /// ReviewWaitlistEntries; `off`: any entry in the line.
    #[arg(long, env = "INVITATIONS_WAITLIST_REVIEW", value_enum, default_value_t = ReviewMode::Off)]
    pub waitlist_review: ReviewMode,

    /// Places an entry moves up for each applicant who joins through its
    /// referral handle.
    #[arg(long, env = "INVITATIONS_WAITLIST_REFERRAL_BUMP", default_value_t = 10)]
    pub waitlist_referral_bump: u32,

    /// Places an entry moves up, in addition, for each of those applicants
    /// who is admitted and redeems.
    #[arg(long, env = "INVITATIONS_WAITLIST_REDEEM_BUMP", default_value_t = 50)]
    pub waitlist_redeem_bump: u32,

    /// The most places an entry moves up in all.
    #[arg(long, env = "INVITATIONS_WAITLIST_MAX_BUMP", default_value_t = 1000)]
    pub waitlist_max_bump: u32,

    /// How long a rejected applicant waits before JoinWaitlist takes it back
    /// into the line (at the back).
    #[arg(long, env = "INVITATIONS_WAITLIST_REAPPLY_AFTER", default_value = "30days", value_parser = humantime::parse_duration)]
    pub waitlist_reapply_after: Duration,
}

/// Conversions and rewards (docs/design.md, "Conversions and rewards").
#[derive(Debug, Clone, Args)]
pub struct ConversionArgs {
    /// The kinds of qualifying action RecordConversion accepts,
    /// comma-separated (e.g. `activated,paid`). Empty: conversions are off
    /// (RecordConversion answers FAILED_PRECONDITION CONVERSIONS_DISABLED).
    #[arg(long, env = "INVITATIONS_CONVERSION_KINDS", default_value = "")]
    pub conversion_kinds: String,

    /// Rewards per kind, comma-separated `KIND=INVITER:MEMBER`: on a
    /// conversion of KIND, the member's inviter gets INVITER invitations and
    /// the member MEMBER (label `reward:KIND`), in the same transaction.
    /// Members who joined without an inviter reward nobody. Empty: off.
    #[arg(long, env = "INVITATIONS_REWARD_RULE", default_value = "")]
    pub reward_rule: String,

    /// The most conversions that reward one inviter per --reward-cap-period
    /// (the members are still rewarded). `0`: no cap.
    #[arg(long, env = "INVITATIONS_REWARD_CAP", default_value_t = 0)]
    pub reward_cap: u32,

    /// The period of --reward-cap (a sliding window).
    #[arg(long, env = "INVITATIONS_REWARD_CAP_PERIOD", default_value = "30days", value_parser = humantime::parse_duration)]
    pub reward_cap_period: Duration,

    /// Hold rewards this long (e.g. `7d`, for refunds and fraud to show):
    /// they are pending, VoidConversion drops them, and the background
    /// granter grants the rest when the hold ends. `0s`: granted with the
    /// conversion.
    #[arg(long, env = "INVITATIONS_REWARD_HOLD", default_value = "0s", value_parser = humantime::parse_duration)]
    pub reward_hold: Duration,

    /// How often the granter looks for held rewards whose hold ended
    /// (they are granted up to this late).
    #[arg(long, env = "INVITATIONS_REWARD_GRANT_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub reward_grant_interval: Duration,

    /// Rewards of a conversion whose member's redemption the abuse checks
    /// flagged (checks in `flag` mode): `grant` as any other, `hold` for
    /// ReviewRewards to approve or deny, `deny` none.
    #[arg(long, env = "INVITATIONS_REWARD_FLAGGED", value_enum, default_value_t = FlaggedMode::Grant)]
    pub reward_flagged: FlaggedMode,
}

/// `--reward-flagged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlaggedMode {
    Grant,
    Hold,
    Deny,
}
