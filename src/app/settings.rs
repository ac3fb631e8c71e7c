//! What one process of the service runs with: every setting already checked
//! and converted from its flag by `cli::settings::serve`, so this layer and
//! the ones below it never see clap. Grouped as the wiring uses them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::secret::Secrets;
use crate::domain::abuse::AbuseSettings;
use crate::domain::code::CodeGenerator;
use crate::domain::events::CodeDisclosure;
use crate::grpc::auth::Callers;
use crate::grpc::convert::View;
use crate::grpc::tls::TlsSettings;
use crate::outbox::Maintenance;
use crate::outbox::relay::RelaySettings;
use crate::service::{ConversionSettings, MemberLimits, Quotas, ReservationSettings, WaitlistSettings};

/// The whole of a `serve`'s configuration.
pub struct Settings {
    pub codes: CodeGenerator,
    /// The code prefix, link template and vanity codes, as answers show them.
    pub view: View,
    pub secrets: Secrets,
    pub access: Access,
    pub database: Database,
    pub abuse: AbuseSettings,
    pub reservations: ReservationSettings,
    pub quotas: Quotas,
    pub waitlist: WaitlistSettings,
    pub member_limits: MemberLimits,
    pub conversions: ConversionSettings,
    /// None: no broker; events wait in the outbox.
    pub relay: Option<RelaySettings>,
    /// Set when events carry codes and links (`--events-include-codes`).
    pub code_disclosure: Option<CodeDisclosure>,
    pub outbox: Maintenance,
    pub background: Background,
    pub limits: Limits,
    pub lifecycle: Lifecycle,
}

/// Who may call, over what.
pub struct Access {
    pub callers: Callers,
    pub tls: TlsSettings,
    /// Serve a non-loopback address without caller credentials.
    pub insecure_allow_unauthenticated: bool,
    pub reflection: bool,
    /// Reflection answers callers without credentials.
    pub reflection_public: bool,
}

/// The primary, the standbys and how they are watched.
pub struct Database {
    pub url: String,
    /// Standbys (or a pooler in front of them) for the read-only calls.
    pub read_urls: Vec<String>,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Apply the embedded migrations before serving.
    pub migrate: bool,
    pub max_replica_lag: Duration,
    pub replica_check_interval: Duration,
    /// How often readiness pings the primary.
    pub health_interval: Duration,
}

/// How often each background task runs; zero turns a sweeper off.
pub struct Background {
    pub reservation_sweep: Duration,
    pub expiry_sweep: Duration,
    /// Only used while the earn quota is configured.
    pub earn_grant: Duration,
    /// Only used while rewards are held.
    pub reward_grant: Duration,
    pub graph_fold: Duration,
    /// The history's partition upkeep.
    pub history_upkeep: Duration,
    /// None keeps the history forever.
    pub history_retention: Option<Duration>,
    /// Stored idempotent answers; None keeps them forever.
    pub request_id_retention: Option<Duration>,
}

/// What one call, one connection and the whole server may take.
pub struct Limits {
    pub max_concurrent_calls: usize,
    pub max_connections: usize,
    pub max_call_time: Duration,
    pub max_request_bytes: usize,
}

/// Startup and shutdown.
pub struct Lifecycle {
    /// The plaintext health-only listener, if any.
    pub health_listen: Option<SocketAddr>,
    /// NOT_SERVING this long before calls stop being taken.
    pub shutdown_delay: Duration,
    /// In-flight calls get this long once draining starts.
    pub drain_timeout: Duration,
}
