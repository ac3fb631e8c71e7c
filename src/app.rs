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

use crate::crypto::page_token::PageTokens;
use crate::crypto::vault::Vault;
use crate::domain::abuse::AbuseSettings;
use crate::grpc::InvitationApi;
use crate::grpc::auth::{AuthLayer, Callers, auth_layer_policy};
use crate::grpc::connections;
use crate::grpc::convert::View;
use crate::grpc::overload::OverloadLayer;
use crate::outbox::Maintenance;
use crate::outbox::{self, relay};
use crate::pb;
use crate::service::{
    Invitations, Placeholders, fold_counts, grant_earned_invitations, grant_held_rewards, maintain_history, rekey,
    sweep_abuse_records, sweep_expired_invitations, sweep_lapsed_reservations, sweep_request_ids,
};
use crate::store;
use crate::store::replicas::Replicas;
use crate::telemetry::{self, Metrics, RpcLayer};

mod settings;

pub use settings::{Access, Background, Database, Lifecycle, Limits, Settings};

/// How often expired IP hashes and attempt counters are deleted.
const ABUSE_SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// How often stored idempotent answers past the retention are deleted.
const REQUEST_ID_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// The sockets the server answers on, bound by the caller.
pub struct Listeners {
    /// gRPC: the API, health and reflection.
    pub grpc: TcpListener,
    /// Admin HTTP: `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the gRPC and admin addresses (`--listen`, `--admin-listen`).
    pub async fn bind(grpc: std::net::SocketAddr, admin: std::net::SocketAddr) -> anyhow::Result<Self> {
        let grpc_listener = TcpListener::bind(grpc).await.with_context(|| format!("binding {grpc}"))?;
        let admin_listener = TcpListener::bind(admin).await.with_context(|| format!("binding {admin}"))?;
        Ok(Self { grpc: grpc_listener, admin: admin_listener })
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
pub async fn serve(settings: Settings, listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Application::build(settings, listeners).await?.run_until_stopped(shutdown).await
}

/// One process of the service, built and not yet serving: the pools, the
/// metrics endpoint (already answering) and the service. `run_until_stopped`
/// starts the background tasks and the gRPC server.
pub struct Application {
    grpc: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    pool: sqlx::PgPool,
    replicas: Arc<Replicas>,
    metrics: Arc<Metrics>,
    service: Arc<Invitations>,
    vault: Arc<Vault>,
    waker: outbox::Waker,
    admin: AdminEndpoint,
    view: View,
    abuse: Arc<AbuseSettings>,
    relay: Option<outbox::relay::RelaySettings>,
    earn: bool,
    reward_hold: bool,
    outbox: Maintenance,
    background: Background,
    database: settings::Database,
    access: settings::Access,
    limits: Limits,
    lifecycle: Lifecycle,
}

/// `/metrics`, served from `build` on until the end of `run_until_stopped`.
struct AdminEndpoint {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Checks what needs the listeners (the secure-by-default rule), loads
    /// TLS, opens the pools (lazily), migrates if asked, makes the coming
    /// days' outbox partitions and starts the metrics endpoint.
    pub async fn build(settings: Settings, listeners: Listeners) -> anyhow::Result<Self> {
        let Settings {
            codes,
            view,
            secrets,
            access,
            database,
            abuse,
            reservations,
            quotas,
            waitlist,
            member_limits,
            conversions,
            relay,
            code_disclosure,
            outbox: maintenance,
            background,
            limits,
            lifecycle,
        } = settings;
        let Listeners { grpc, admin: admin_listener } = listeners;
        let vault = Arc::new(Vault::new(&secrets));
        let tls = crate::grpc::tls::server_config(&access.tls)?;
        secure_by_default(&access.callers, grpc.local_addr()?, access.insecure_allow_unauthenticated)?;
        let pool = store::connect_lazy(&database.url, database.max_connections, database.acquire_timeout)
            .context("DATABASE_URL is not a valid Postgres URL")?;
        if database.migrate {
            apply_migrations(&pool, database.acquire_timeout).await?;
        }
        outbox::prepare_partitions(&pool).await;

        let statements = store::statements::StatementPool::new(
            store::connect_options("invitations", &database.url).context("DATABASE_URL is not a valid Postgres URL")?,
            database.max_connections,
            database.acquire_timeout,
        )?;
        let metrics = Arc::new(Metrics::new(telemetry::otlp_enabled(telemetry::Signal::Metrics))?);
        metrics.observe_pool(
            pool.clone(),
            {
                let statements = statements.clone();
                move || statements.status()
            },
            statements.max_size(),
        );
        let mut standbys = Vec::with_capacity(database.read_urls.len());
        for url in &database.read_urls {
            let (max, wait) = (database.max_connections, database.acquire_timeout);
            standbys.push((
                store::connect_lazy_as("invitations-read", url, max, wait)
                    .context("--database-read-url: not a valid Postgres URL")?,
                store::statements::StatementPool::new(
                    store::connect_options("invitations-read", url)
                        .context("--database-read-url: not a valid Postgres URL")?,
                    max,
                    wait,
                )?,
            ));
        }
        let replicas = Replicas::new(pool.clone(), standbys, database.max_replica_lag, metrics.meter());
        metrics.observe_replicas({
            let replicas = replicas.clone();
            move || replicas.status()
        });
        let (stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_address = admin_listener.local_addr()?;
        let task = tokio::spawn(telemetry::admin::serve(admin_listener, metrics.clone(), async move {
            let _ = admin_stopped.await;
        }));
        tracing::info!(address = %admin_address, "serving metrics");

        let earn = quotas.earn.is_some();
        let reward_hold = !conversions.hold.is_zero();
        let abuse = Arc::new(abuse);
        let waker = outbox::Waker::default();
        let service = Arc::new(
            Invitations::new(pool.clone(), statements, codes, PageTokens::new(&secrets), vault.clone())
                .with_placeholders(Placeholders::new(&secrets.current))
                .with_metrics(metrics.domain.clone())
                .with_reservations(reservations)
                .with_abuse(AbuseSettings::clone(&abuse))
                .with_code_disclosure(code_disclosure)
                .with_waker(waker.clone())
                .with_quotas(quotas)
                .with_waitlist(waitlist)
                .with_member_limits(member_limits)
                .with_conversions(conversions)
                .with_max_call_time(limits.max_call_time)
                .with_replicas(replicas.clone()),
        );
        Ok(Self {
            grpc,
            tls,
            pool,
            replicas,
            metrics,
            service,
            vault,
            waker,
            admin: AdminEndpoint { stop, task },
            view,
            abuse,
            relay,
            earn,
            reward_hold,
            outbox: maintenance,
            background,
            database,
            access,
            limits,
            lifecycle,
        })
    }

    /// The gRPC port (tests bind port 0).
    pub fn port(&self) -> anyhow::Result<u16> {
        Ok(self.grpc.local_addr()?.port())
    }

    /// Background work, aborted at exit. Any of it may die with the process
    /// at any point: each step is one transaction, redone by the next run.
    fn spawn_background(&self) -> tokio::task::JoinSet<()> {
        let (pool, every) = (&self.pool, &self.background);
        let mut background = tokio::task::JoinSet::new();
        background.spawn(rekey_until_done(pool.clone(), self.vault.clone()));
        background.spawn(sweep_abuse_records(pool.clone(), self.abuse.clone(), ABUSE_SWEEP_INTERVAL));
        if !every.reservation_sweep.is_zero() {
            background.spawn(sweep_lapsed_reservations(pool.clone(), every.reservation_sweep, self.waker.clone()));
        }
        if !every.expiry_sweep.is_zero() {
            background.spawn(sweep_expired_invitations(pool.clone(), every.expiry_sweep, self.waker.clone()));
        }
        background.spawn(outbox::maintain(pool.clone(), self.outbox, self.metrics.outbox.clone()));
        background.spawn(outbox::broadcast(pool.clone(), self.waker.clone()));
        if self.earn {
            background.spawn(grant_earned_invitations(self.service.clone(), every.earn_grant));
        }
        if self.reward_hold {
            background.spawn(grant_held_rewards(self.service.clone(), every.reward_grant));
        }
        if !every.graph_fold.is_zero() {
            background.spawn(fold_counts(pool.clone(), every.graph_fold));
        }
        background.spawn(maintain_history(pool.clone(), every.history_retention, every.history_upkeep));
        if let Some(retention) = every.request_id_retention {
            background.spawn(sweep_request_ids(pool.clone(), retention, REQUEST_ID_SWEEP_INTERVAL));
        }
        background
    }

    /// Serves until `shutdown` completes, then drains (see [`serve`]).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut background = self.spawn_background();
        let api = pb::invitation_service_server::InvitationServiceServer::new(InvitationApi::new(
            self.service.clone(),
            self.view.clone(),
        ))
        .max_decoding_message_size(self.limits.max_request_bytes);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&health_reporter, ServingStatus::NotServing).await;
        health_reporter.set_service_status(LIVENESS_NAME, ServingStatus::Serving).await;
        let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
        let replica_task = tokio::spawn(store::replicas::monitor(
            self.replicas.clone(),
            self.database.replica_check_interval,
            health_stopped.clone(),
        ));
        let health_task = tokio::spawn(watch_database(
            self.replicas.clone(),
            health_reporter.clone(),
            self.database.health_interval,
            health_stopped,
        ));
        match self.relay {
            Some(settings) => {
                tracing::info!(stream = %settings.stream, prefix = %settings.subject_prefix, "relaying events to NATS");
                let wake = self.waker.local();
                let outbox = self.metrics.outbox.clone();
                background.spawn(relay::run(self.pool.clone(), settings, health_reporter.clone(), outbox, wake));
            }
            None => tracing::info!("no NATS_URL: events wait in the outbox (see `invitations outbox`)"),
        }
        background.spawn(
            self.metrics.observe_health(
                health_reporter.clone(),
                &[SERVICE_NAME, WRITES_NAME, LIVENESS_NAME, relay::HEALTH_NAME],
            ),
        );

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let reflection_on = self.access.reflection;
        let auth = AuthLayer::new(auth_layer_policy(self.access.callers, self.access.reflection_public));

        let local = self.grpc.local_addr()?;
        tracing::info!(address = %local, tls = self.tls.is_some(), "serving gRPC");

        let (stop_probe, probe_stopped) = tokio::sync::watch::channel(false);
        let probe_task = match self.lifecycle.health_listen {
            Some(address) => Some(serve_health_only(address, health_service.clone(), probe_stopped).await?),
            None => None,
        };

        let reporter = health_reporter.clone();
        let shutdown_delay = self.lifecycle.shutdown_delay;
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
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let limits = &self.limits;
        let server = builder
            // A client's grpc-timeout is honoured (a shorter one wins over this cap).
            .timeout(limits.max_call_time)
            .layer(RpcLayer::new(self.metrics.rpc.clone()))
            .layer(OverloadLayer::new(limits.max_concurrent_calls))
            .layer(crate::grpc::deadline::DeadlineLayer)
            .layer(auth)
            .add_service(health_service)
            .add_optional_service(reflection_on.then_some(reflection_v1))
            .add_optional_service(reflection_on.then_some(reflection_v1alpha))
            .add_service(api)
            .serve_with_incoming_shutdown(
                connections::limit(incoming(self.grpc), limits.max_connections, self.metrics.meter()),
                stop_accepting,
            );
        tokio::pin!(server);

        // Drain deadline: once draining starts, give in-flight calls drain_timeout.
        let drain_timeout = self.lifecycle.drain_timeout;
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
        let _ = self.admin.stop.send(());
        let _ = self.admin.task.await;
        self.metrics.shutdown();
        self.pool.close().await;
        tracing::info!("stopped");
        result
    }
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
