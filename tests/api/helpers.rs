//! Test harness: a real server on 127.0.0.1:0 over real gRPC, against a real
//! Postgres database of its own (created here, dropped when the test ends).
//! Logs stay silent unless TEST_LOG is set.

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use clap::Parser;
use invitations::cli::args::{Cli, Command, ServeArgs};
use invitations::pb;
use invitations::pb::invitation_service_client::InvitationServiceClient;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// The server secret test servers use (codes are sealed under it).
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";

/// The Postgres server tests run against: DATABASE_URL, or the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter("info,sqlx=warn").with_test_writer().init();
        }
    });
}

/// A database of the test's own, dropped (with its connections) on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn create() -> Self {
        let admin: PgConnectOptions = server_url().parse().expect("DATABASE_URL is a Postgres URL");
        let name = format!("invtest_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await.expect("connect to the test Postgres server");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        let url = with_database(&server_url(), &name);
        Self { name, url, admin }
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a small one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut conn) = admin.connect().await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Replaces the database name in a Postgres URL (keeping any query string).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin HTTP endpoint (`/metrics`).
    pub admin_addr: SocketAddr,
    pub client: InvitationServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test server beyond the defaults.
pub struct Options {
    pub extra_args: Vec<String>,
    /// Point the server at this URL instead of the test database (a proxy).
    pub database_url: Option<String>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra: &[&str]) -> Self {
        Self::spawn_opts(Options { extra_args: extra.iter().map(|s| s.to_string()).collect(), database_url: None })
            .await
    }

    pub async fn spawn_opts(options: Options) -> Self {
        Self::spawn_over(options, None).await
    }

    /// A server whose gRPC listener speaks TLS; the client uses `tls`.
    pub async fn spawn_tls(extra: &[&str], tls: tonic::transport::ClientTlsConfig) -> Self {
        let extra_args = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn_over(Options { extra_args, database_url: None }, Some(tls)).await
    }

    async fn spawn_over(options: Options, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        init_logging();
        let db = TestDb::create().await;
        let url = options.database_url.clone().unwrap_or_else(|| db.url.clone());
        let (addr, admin_addr, shutdown, server) = start_server(&url, &options.extra_args).await;
        let channel = match tls {
            Some(tls) => connect_tls(addr, tls).await,
            None => connect(addr).await,
        };
        let app = Self {
            addr,
            admin_addr,
            client: InvitationServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            db,
            shutdown: Some(shutdown),
            server: Some(server),
        };
        app.wait_for_health(ServingStatus::Serving).await;
        app
    }

    pub async fn health_status(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let response =
            self.health.clone().check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await?;
        Ok(response.into_inner().status())
    }

    /// Waits (up to 20 s) until health reports `want`.
    pub async fn wait_for_health(&self, want: ServingStatus) {
        wait_until(Duration::from_secs(20), &format!("health to become {want:?}"), || async {
            matches!(self.health_status("").await, Ok(s) if s == want)
        })
        .await;
    }

    /// Signals shutdown and returns the server's result.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task panicked"),
            None => Ok(()),
        }
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn pool(&self) -> PgPool {
        self.db.pool().await
    }

    pub async fn mint_for(&self, user: &str, n: u32) -> Vec<pb::Invitation> {
        self.mint(pb::MintRequest { user_ids: vec![user.into()], per_user: n, ..Default::default() })
            .await
            .expect("mint succeeds")
            .invitations
    }

    pub async fn mint_one(&self, user: &str) -> pb::Invitation {
        self.mint_for(user, 1).await.remove(0)
    }

    pub async fn mint(&self, request: pb::MintRequest) -> Result<pb::MintResponse, tonic::Status> {
        self.client.clone().mint(request).await.map(|r| r.into_inner())
    }

    pub async fn list(&self, request: pb::ListForUserRequest) -> Result<pb::ListForUserResponse, tonic::Status> {
        self.client.clone().list_for_user(request).await.map(|r| r.into_inner())
    }

    pub async fn redeem(&self, code: &str, invitee: &str) -> Result<pb::Invitation, tonic::Status> {
        self.redeem_req(pb::RedeemRequest { code: code.into(), invitee_id: invitee.into(), ..Default::default() }).await
    }

    pub async fn redeem_req(&self, request: pb::RedeemRequest) -> Result<pb::Invitation, tonic::Status> {
        let response = self.client.clone().redeem(request).await?.into_inner();
        Ok(response.invitation.expect("redeem returns the invitation"))
    }

    pub async fn check(&self, code: &str) -> pb::CheckCodeResponse {
        self.client
            .clone()
            .check_code(pb::CheckCodeRequest { code: code.into(), ..Default::default() })
            .await
            .expect("check succeeds")
            .into_inner()
    }

    pub async fn revoke(&self, request: pb::RevokeRequest) -> Result<pb::RevokeResponse, tonic::Status> {
        self.client.clone().revoke(request).await.map(|r| r.into_inner())
    }

    pub async fn graph(&self, request: pb::GetInviteGraphRequest) -> Result<pb::GetInviteGraphResponse, tonic::Status> {
        self.client.clone().get_invite_graph(request).await.map(|r| r.into_inner())
    }

    pub async fn register(
        &self,
        members: Vec<pb::MemberRegistration>,
    ) -> Result<pb::RegisterMembersResponse, tonic::Status> {
        self.client.clone().register_members(pb::RegisterMembersRequest { members }).await.map(|r| r.into_inner())
    }

    pub async fn reparent(&self, request: pb::ReparentRequest) -> Result<pb::ReparentResponse, tonic::Status> {
        self.client.clone().reparent(request).await.map(|r| r.into_inner())
    }

    pub async fn privileges(
        &self,
        request: pb::SetInvitePrivilegesRequest,
    ) -> Result<pb::SetInvitePrivilegesResponse, tonic::Status> {
        self.client.clone().set_invite_privileges(request).await.map(|r| r.into_inner())
    }

    /// The whole stream of a forest walk.
    pub async fn walk(&self, request: pb::WalkInviteForestRequest) -> Result<Vec<pb::MemberNode>, tonic::Status> {
        let mut stream = self.client.clone().walk_invite_forest(request).await?.into_inner();
        let mut nodes = Vec::new();
        while let Some(node) = stream.message().await? {
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// Rows in a table of the test database (to prove a bad call changed nothing).
    pub async fn count(&self, table: &str) -> i64 {
        let pool = self.pool().await;
        let n = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&pool).await.expect("count");
        pool.close().await;
        n
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            handle.abort();
        }
    }
}

async fn start_server(
    database_url: &str,
    extra: &[String],
) -> (SocketAddr, SocketAddr, oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>) {
    let mut argv: Vec<String> =
        vec!["invitations".into(), "serve".into(), "--database-url".into(), database_url.into()];
    // Defaults a test may set itself.
    for (flag, value) in [("--health-interval", "100ms"), ("--db-max-connections", "8")] {
        if !extra.iter().any(|a| a == flag) {
            argv.extend([flag.into(), value.into()]);
        }
    }
    // A NATS_URL in the environment must not give a test a broker it did
    // not ask for (tests that want one pass --nats-url).
    if !extra.iter().any(|a| a.starts_with("--nats-url")) {
        argv.extend(["--nats-url".into(), String::new()]);
    }
    if !extra.iter().any(|a| a == "--secret") {
        argv.extend(["--secret".into(), TEST_SECRET.into()]);
    }
    argv.extend(extra.iter().cloned());
    let args: ServeArgs = match Cli::try_parse_from(argv).expect("valid test arguments").command {
        Command::Serve(args) => args,
        _ => unreachable!("serve was asked for"),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = grpc.local_addr().expect("local addr");
    let admin_addr = admin.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = invitations::app::Listeners { grpc, admin };
    let server = tokio::spawn(invitations::cli::serve(args, listeners, async move {
        let _ = rx.await;
    }));
    (addr, admin_addr, tx, server)
}

pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    wait_until(Duration::from_secs(10), "the server to accept connections", || async {
        endpoint.connect().await.is_ok()
    })
    .await;
    endpoint.connect().await.expect("connect")
}

/// A TLS channel to `addr` (the config names the server, e.g. `domain_name("localhost")`).
pub async fn connect_tls(addr: SocketAddr, tls: tonic::transport::ClientTlsConfig) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS config");
    wait_until(Duration::from_secs(10), "the server to accept TLS connections", || async {
        endpoint.connect().await.is_ok()
    })
    .await;
    endpoint.connect().await.expect("connect")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if condition().await {
            return;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a status's code, ErrorInfo reason and domain, and (if given) that
/// a BadRequest violation names `field`.
#[track_caller]
pub fn assert_error(status: &tonic::Status, code: tonic::Code, reason: &str, field: Option<&str>) {
    assert_eq!(status.code(), code, "status: {status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "status: {status:?}");
    assert_eq!(info.domain, "invitations");
    if let Some(field) = field {
        let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
        assert!(
            bad.field_violations.iter().any(|v| v.field == field),
            "no violation for {field} in {:?}",
            bad.field_violations
        );
    }
}

/// A TCP proxy to the Postgres server that can be cut, to make the database
/// unreachable for one server without touching anything else.
pub struct DbProxy {
    pub port: u16,
    task: JoinHandle<()>,
}

impl DbProxy {
    pub async fn start() -> Self {
        let opts: PgConnectOptions = server_url().parse().expect("Postgres URL");
        let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, task }
    }

    /// Closes the listener and every proxied connection.
    pub fn cut(&self) {
        self.task.abort();
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A registration for RegisterMembers.
pub fn member(user_id: &str, join_time: Option<i64>, hidden: Option<bool>) -> pb::MemberRegistration {
    pb::MemberRegistration {
        user_id: user_id.into(),
        join_time: join_time.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        hidden,
    }
}

/// Waits until one of the server's statements has waited on a lock for more
/// than `ms` milliseconds: a call whose deadline was `ms` is then past it
/// even by the statement's own clock (which starts a moment after the
/// client's), so it fails instead of taking the lock in time and committing.
pub async fn wait_until_a_statement_waited_past(pool: &PgPool, ms: u32) {
    wait_until(Duration::from_secs(10), "the waiting statement to be past its deadline", || async {
        let past: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'invitations' AND wait_event_type = 'Lock' \
             AND clock_timestamp() - query_start > make_interval(secs => $1::float8 / 1000)",
        )
        .bind(f64::from(ms))
        .fetch_one(pool)
        .await
        .expect("activity");
        past == 1
    })
    .await;
}
