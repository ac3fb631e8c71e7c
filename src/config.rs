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

fn parse_rfc3339(value: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e})"))
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Most database connections this process opens.
    #[arg(long, env = "INVITATIONS_DB_MAX_CONNECTIONS", default_value_t = 16)]
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

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Apply migrations at start.
    #[arg(long, env = "INVITATIONS_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub migrate: bool,

    /// Registration link; `{code}` is replaced by the invitation code.
    #[arg(long, env = "INVITATIONS_LINK_TEMPLATE", default_value = "https://example.com/join?code={code}")]
    pub link_template: String,

    /// Random symbols per code (8-29); each carries log2(31) ≈ 4.95 bits. A
    /// check symbol is added. The default 15 gives about 74 bits.
    #[arg(long, env = "INVITATIONS_CODE_LENGTH", default_value_t = crate::code::DEFAULT_RANDOM_SYMBOLS)]
    pub code_length: usize,

    /// Optional prefix shown before codes (letters and digits), e.g. `INV`.
    #[arg(long, env = "INVITATIONS_CODE_PREFIX", default_value = "")]
    pub code_prefix: String,

    /// Server secret (at least 32 bytes) from which page-token keys are
    /// derived. Unset: a random one per process (tokens then do not survive
    /// restarts or cross replicas).
    #[arg(long, env = "INVITATIONS_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

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
    /// replay`) before they are deleted.
    #[arg(long, env = "INVITATIONS_OUTBOX_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,

    /// How often the backlog gauges are refreshed and sent events pruned.
    #[arg(long, env = "INVITATIONS_OUTBOX_STATS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub outbox_stats_interval: Duration,

    /// TEST ONLY: the relay stops after its first publish, before marking
    /// the events sent (a crash at the worst moment). Hidden from --help.
    #[arg(long, hide = true, default_value_t = false)]
    pub outbox_test_crash_after_publish: bool,
}
