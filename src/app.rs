//! Wiring: the pool, migrations, health, reflection, telemetry, caller
//! authentication, TLS, load shedding and the gRPC service on listeners the
//! caller provides (gRPC and admin), until the caller's shutdown future
//! fires. Tests start it on `127.0.0.1:0`; `main` on the configured addresses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cli::args::ServeArgs;
use crate::cli::settings;
use crate::crypto::page_token::PageTokens;
use crate::crypto::secret::Secrets;
use crate::crypto::vault::Vault;
use crate::domain::abuse::AbuseSettings;
use crate::domain::code::{CodeGenerator, validate_prefix};
use crate::domain::events::CodeDisclosure;
use crate::grpc::InvitationApi;
use crate::grpc::auth::{AuthLayer, Callers, auth_layer_policy};
use crate::grpc::connections;
use crate::grpc::convert::View;
use crate::grpc::overload::OverloadLayer;
use crate::outbox::Maintenance;
use crate::outbox::{self, relay};
use crate::pb;
use crate::service::{
    Invitations, Placeholders, ReservationSettings, fold_counts, grant_earned_invitations, grant_held_rewards, rekey,
    sweep_abuse_records, sweep_expired_invitations, sweep_lapsed_reservations,
};
use crate::store;
use crate::store::replicas::Replicas;
use crate::telemetry::{self, Metrics, RpcLayer};

/// How often expired IP hashes and attempt counters are deleted.
const ABUSE_SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// The sockets the server answers on, bound by the caller.
pub struct Listeners {
    /// gRPC: the API, health and reflection.
    pub grpc: TcpListener,
    /// Admin HTTP: `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured `--listen` and `--admin-listen` addresses.
    pub async fn bind(args: &ServeArgs) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let admin =
            TcpListener::bind(args.admin_listen).await.with_context(|| format!("binding {}", args.admin_listen))?;
        Ok(Self { grpc, admin })
    }
}

/// Accepted connections with Nagle's algorithm off. A unary answer leaves as
/// small writes (headers, message, trailers); with Nagle on, the last of them
/// can wait for the client's delayed ACK (up to 40 ms on Linux), which put
/// every call's p99 in the tens of milliseconds (docs/performance.md).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The health service name of the invitation API (the empty name "" covers
/// the whole server and reports the same).
pub const SERVICE_NAME: &str = "invitations.v1.InvitationService";

/// The health name that is SERVING while calls that write can succeed: the
/// primary answers. Without standbys it reports what [`SERVICE_NAME`] does;
/// with them, `SERVICE_NAME` stays SERVING while a standby serves reads and
/// only this name says that writes fail (docs/operations.md, "Reads from
/// standbys").
pub const WRITES_NAME: &str = "writes";

/// The health name for liveness probes: SERVING while the process answers
/// gRPC at all, whatever the database does (restarting pods does not bring a
/// database back), and through shutdown until exit.
pub const LIVENESS_NAME: &str = "liveness";

/// Runs the service on `listeners` until `shutdown` completes, then reports
/// NOT_SERVING, waits `shutdown_delay`, stops taking calls and lets in-flight
/// ones finish (up to `drain_timeout`). The admin endpoint answers until the
/// end.
pub async fn serve(args: ServeArgs, listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Listeners { grpc: listener, admin: admin_listener } = listeners;
    let codes = CodeGenerator::new(args.code_length).map_err(anyhow::Error::msg)?;
    validate_prefix(&args.code_prefix).map_err(anyhow::Error::msg)?;
    if !args.link_template.contains("{code}") {
        anyhow::bail!("the link template must contain {{code}}");
    }
    let secrets = Secrets::parse(&args.secrets.secret, &args.secrets.previous_secrets).map_err(anyhow::Error::msg)?;
    let vault = Arc::new(Vault::new(&secrets));
    let callers = Callers::parse(&args.auth.caller_tokens, &args.auth.client_identities).map_err(anyhow::Error::msg)?;
    let tls = crate::grpc::tls::server_config(&(&args.tls).into())?;
    if callers.has_identities() && args.tls.tls_client_ca.is_none() {
        anyhow::bail!("--client-identities needs --tls-client-ca (client certificates are verified against it)");
    }
    secure_by_default(&callers, listener.local_addr()?, args.auth.insecure_allow_unauthenticated)?;
    let abuse = Arc::new(settings::abuse(&args.abuse).map_err(anyhow::Error::msg)?);
    let db = &args.database;
    let pool = store::connect_lazy(&db.database_url, db.db_max_connections, db.db_acquire_timeout)
        .context("DATABASE_URL is not a valid Postgres URL")?;
    if args.migrate {
        apply_migrations(&pool, db.db_acquire_timeout).await?;
    }
    outbox::prepare_partitions(&pool).await;

    let metrics = Arc::new(Metrics::new(telemetry::otlp_enabled(telemetry::Signal::Metrics))?);
    metrics.observe_pool(pool.clone());
    let mut standbys = Vec::with_capacity(args.database_read_url.len());
    for url in args.database_read_url.iter().filter(|u| !u.trim().is_empty()) {
        standbys.push(
            store::connect_lazy_as("invitations-read", url.trim(), db.db_max_connections, db.db_acquire_timeout)
                .context("--database-read-url: not a valid Postgres URL")?,
        );
    }
    let replicas = Replicas::new(pool.clone(), standbys, args.max_replica_lag, metrics.meter());
    metrics.observe_replicas({
        let replicas = replicas.clone();
        move || replicas.status()
    });
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_address = admin_listener.local_addr()?;
    let admin_task = tokio::spawn(telemetry::admin::serve(admin_listener, metrics.clone(), async move {
        let _ = admin_stopped.await;
    }));
    tracing::info!(address = %admin_address, "serving metrics");

    let reservations = reservation_settings(&args)?;
    let quotas = settings::quotas(&args.quotas).map_err(anyhow::Error::msg)?;
    let relay_settings = settings::relay(&args.events)?;
    let conversions = settings::conversions(&args.conversions).map_err(anyhow::Error::msg)?;
    let reward_hold = !conversions.hold.is_zero();
    let code_disclosure = args
        .events
        .events_include_codes
        .then(|| CodeDisclosure { code_prefix: args.code_prefix.clone(), link_template: args.link_template.clone() });
    let waker = outbox::Waker::default();
    let service = Arc::new(
        Invitations::new(pool.clone(), codes, PageTokens::new(&secrets), vault.clone())
            .with_placeholders(Placeholders::new(&secrets.current))
            .with_metrics(metrics.domain.clone())
            .with_reservations(reservations)
            .with_abuse(AbuseSettings::clone(&abuse))
            .with_code_disclosure(code_disclosure)
            .with_waker(waker.clone())
            .with_quotas(quotas.clone())
            .with_waitlist(settings::waitlist(&args.waitlist).map_err(anyhow::Error::msg)?)
            .with_member_limits(settings::member_limits(&args.members).map_err(anyhow::Error::msg)?)
            .with_conversions(conversions)
            .with_max_call_time(args.limits.max_call_time)
            .with_replicas(replicas.clone()),
    );
    // Background work, aborted at exit. Any of it may die with the process at
    // any point: each step is one transaction, redone by the next run.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(rekey_until_done(pool.clone(), vault.clone()));
    background.spawn(sweep_abuse_records(pool.clone(), abuse, ABUSE_SWEEP_INTERVAL));
    if !args.reservation_sweep_interval.is_zero() {
        background.spawn(sweep_lapsed_reservations(pool.clone(), args.reservation_sweep_interval, waker.clone()));
    }
    if !args.expiry_sweep_interval.is_zero() {
        background.spawn(sweep_expired_invitations(pool.clone(), args.expiry_sweep_interval, waker.clone()));
    }
    let maintenance = Maintenance {
        interval: args.events.outbox_stats_interval.max(Duration::from_millis(10)),
        retention: args.events.outbox_retention,
    };
    background.spawn(outbox::maintain(pool.clone(), maintenance, metrics.outbox.clone()));
    background.spawn(outbox::broadcast(pool.clone(), waker.clone()));
    if quotas.earn.is_some() {
        let every = args.quotas.earn_grant_interval.max(Duration::from_millis(10));
        background.spawn(grant_earned_invitations(service.clone(), every));
    }
    if reward_hold {
        let every = args.conversions.reward_grant_interval.max(Duration::from_millis(10));
        background.spawn(grant_held_rewards(service.clone(), every));
    }
    if !args.graph_fold_interval.is_zero() {
        background.spawn(fold_counts(pool.clone(), args.graph_fold_interval));
    }
    let view = View {
        code_prefix: args.code_prefix.clone(),
        link_template: args.link_template.clone(),
        vanity_codes: args.vanity_codes,
    };
    let api = pb::invitation_service_server::InvitationServiceServer::new(InvitationApi::new(service, view))
        .max_decoding_message_size(args.limits.max_request_bytes);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, ServingStatus::NotServing).await;
    health_reporter.set_service_status(LIVENESS_NAME, ServingStatus::Serving).await;
    let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
    let replica_task =
        tokio::spawn(store::replicas::monitor(replicas.clone(), args.replica_check_interval, health_stopped.clone()));
    let health_task =
        tokio::spawn(watch_database(replicas.clone(), health_reporter.clone(), args.health_interval, health_stopped));
    match relay_settings {
        Some(settings) => {
            tracing::info!(stream = %settings.stream, prefix = %settings.subject_prefix, "relaying events to NATS");
            let wake = waker.local();
            background.spawn(relay::run(pool.clone(), settings, health_reporter.clone(), metrics.outbox.clone(), wake));
        }
        None => tracing::info!("no NATS_URL: events wait in the outbox (see `invitations outbox`)"),
    }
    background.spawn(
        metrics
            .observe_health(health_reporter.clone(), &[SERVICE_NAME, WRITES_NAME, LIVENESS_NAME, relay::HEALTH_NAME]),
    );

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection_on = args.reflection;
    let auth = AuthLayer::new(auth_layer_policy(callers, args.auth.reflection_public));

    let local = listener.local_addr()?;
    tracing::info!(address = %local, tls = tls.is_some(), "serving gRPC");

    let (stop_probe, probe_stopped) = tokio::sync::watch::channel(false);
    let probe_task = match args.health_listen {
        Some(address) => Some(serve_health_only(address, health_service.clone(), probe_stopped).await?),
        None => None,
    };

    let reporter = health_reporter.clone();
    let shutdown_delay = args.shutdown_delay;
    let (drain_started, mut drain_started_rx) = tokio::sync::watch::channel(false);
    let stop_accepting = async move {
        shutdown.await;
        tracing::info!("shutting down: reporting NOT_SERVING");
        let _ = stop_health.send(true);
        set_health(&reporter, ServingStatus::NotServing).await;
        tokio::time::sleep(shutdown_delay).await;
        let _ = drain_started.send(true);
        tracing::info!("no longer taking calls; draining in-flight ones");
    };

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        // A client's grpc-timeout is honoured (a shorter one wins over this cap).
        .timeout(args.limits.max_call_time)
        .layer(RpcLayer::new(metrics.rpc.clone()))
        .layer(OverloadLayer::new(args.limits.max_concurrent_calls))
        .layer(crate::grpc::deadline::DeadlineLayer)
        .layer(auth)
        .add_service(health_service)
        .add_optional_service(reflection_on.then_some(reflection_v1))
        .add_optional_service(reflection_on.then_some(reflection_v1alpha))
        .add_service(api)
        .serve_with_incoming_shutdown(
            connections::limit(incoming(listener), args.limits.max_connections, metrics.meter()),
            stop_accepting,
        );
    tokio::pin!(server);

    // Drain deadline: once draining starts, give in-flight calls drain_timeout.
    let drain_timeout = args.drain_timeout;
    let result = tokio::select! {
        r = &mut server => r.map_err(anyhow::Error::from),
        () = async {
            let _ = drain_started_rx.wait_for(|started| *started).await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!("drain timeout passed with calls still in flight; exiting");
            Ok(())
        }
    };
    health_task.abort();
    replica_task.abort();
    let _ = stop_probe.send(true);
    if let Some(task) = probe_task {
        let _ = task.await;
    }
    background.shutdown().await;
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    metrics.shutdown();
    pool.close().await;
    tracing::info!("stopped");
    result
}

/// What reflection serves: the API and event schema, health, and the error
/// details every refusal carries (`google.rpc.ErrorInfo`, `BadRequest`,
/// `RetryInfo`, `PreconditionFailure`, … and `google.rpc.Status`), so
/// grpcurl, Evans, Postman and grpcui decode them instead of printing bytes.
/// The details' descriptors are the ones `tonic-types` encodes them with,
/// so they cannot drift from what goes on the wire.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// The plaintext health-only listener (`--health-listen`): the same health
/// reporter as the main port, nothing else, until `stopped` turns true.
async fn serve_health_only<S>(
    address: std::net::SocketAddr,
    health: S,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving plaintext health");
    let server = tonic::transport::Server::builder().add_service(health).serve_with_incoming_shutdown(
        incoming(listener),
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "the health listener failed");
        }
    }))
}

/// Secure by default: without caller credentials every call is allowed, so
/// the listener must be loopback unless the operator says otherwise.
fn secure_by_default(callers: &Callers, local: std::net::SocketAddr, insecure: bool) -> anyhow::Result<()> {
    if !callers.is_empty() {
        return Ok(());
    }
    if local.ip().is_loopback() {
        tracing::warn!(
            address = %local,
            "no caller credentials configured (--caller-tokens, --client-identities): every call is allowed; \
             listening on loopback only"
        );
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            address = %local,
            "no caller credentials configured and --insecure-allow-unauthenticated: anyone who reaches this \
             address may call every RPC"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {local} without caller credentials: configure --caller-tokens or \
         --client-identities, listen on loopback, or pass --insecure-allow-unauthenticated"
    )
}

/// Applies the embedded migrations over a connection of its own (with the
/// pool's settings), so a database that cannot be reached fails with the
/// reason (connection refused, authentication, DNS, no such database), not
/// the pool's "timed out while waiting for an open connection", which
/// retries until `timeout` and forgets why.
pub async fn apply_migrations(pool: &sqlx::PgPool, timeout: Duration) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let options = pool.connect_options();
    let target = format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or(""));
    let mut conn = match tokio::time::timeout(timeout, options.connect()).await {
        Ok(connected) => connected.with_context(|| format!("connecting to the database at {target}"))?,
        Err(_) => anyhow::bail!("connecting to the database at {target}: no answer within {timeout:?}"),
    };
    // run_direct, not run: `run` goes through `Acquire`, whose future rustc
    // cannot prove `Send` for a borrowed connection inside `serve`.
    store::MIGRATOR.run_direct(&mut conn).await.context("applying migrations")?;
    let _ = conn.close().await;
    Ok(())
}

/// Moves codes and stored answers onto the current secret in the background
/// (plaintext rows from before they were sealed, rows under previous
/// secrets), retrying while the database is away.
async fn rekey_until_done(pool: sqlx::PgPool, vault: Arc<Vault>) {
    loop {
        match rekey::run(&pool, &vault).await {
            Ok(report) => {
                rekey::log_report(&report);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "rekeying stored codes failed; retrying in 5s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn reservation_settings(args: &ServeArgs) -> anyhow::Result<ReservationSettings> {
    let default_ttl = time::Duration::try_from(args.reservation_ttl)?;
    let max_ttl = time::Duration::try_from(args.reservation_max_ttl)?;
    if default_ttl.is_zero() || default_ttl > max_ttl {
        anyhow::bail!("the reservation ttl must be positive and at most the reservation max ttl");
    }
    Ok(ReservationSettings { default_ttl, max_ttl })
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
    reporter.set_service_status(WRITES_NAME, status).await;
}

fn serving(ok: bool) -> ServingStatus {
    if ok { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// The API SERVING while the primary answers or a standby serves reads;
/// [`WRITES_NAME`] only while the primary answers.
async fn watch_database(
    replicas: Arc<Replicas>,
    reporter: HealthReporter,
    interval: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        if *stopped.borrow() {
            return;
        }
        let primary = replicas.primary();
        let ok = matches!(
            tokio::time::timeout(interval.max(Duration::from_secs(1)), store::ping(primary)).await,
            Ok(Ok(()))
        );
        let reads = ok || replicas.any_usable();
        if last != Some((ok, reads)) {
            match (ok, reads) {
                (true, _) => tracing::info!("database reachable: SERVING"),
                (false, true) => tracing::warn!("primary unreachable: reads from standbys SERVING, writes NOT_SERVING"),
                (false, false) => tracing::warn!("database unreachable: NOT_SERVING"),
            }
            last = Some((ok, reads));
        }
        // The shutdown path may have flipped to NOT_SERVING meanwhile.
        if *stopped.borrow() {
            return;
        }
        reporter.set_service_status("", serving(reads)).await;
        reporter.set_service_status(SERVICE_NAME, serving(reads)).await;
        reporter.set_service_status(WRITES_NAME, serving(ok)).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
    }
}
