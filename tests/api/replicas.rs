//! Reads from a real streaming standby (`--database-read-url`): each test
//! starts its own private primary (initdb) and a standby of it
//! (pg_basebackup -R), never touching the machine's shared Postgres.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use invitations::pb;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Options, TestApp, assert_error, wait_until};
use crate::metrics::Scrape;

/// A private Postgres cluster in a temporary directory, stopped and removed
/// on drop.
struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries (scripts/test installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb under /usr/lib/postgresql")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Runs a server binary as `postgres` when we are root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) {
    let root = is_root();
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    let out = command.args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

impl Cluster {
    fn new_dir() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("inv-replica-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if is_root() {
            let status = Command::new("chown").args(["postgres"]).arg(&dir).status().expect("chown");
            assert!(status.success());
        }
        let data = dir.join("data");
        (dir, data)
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("server.log");
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-w", "-l", &log.to_string_lossy(), "-o", &options, "start"],
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        run(&self.bin, "pg_ctl", &["-D", &data.to_string_lossy(), "-w", "-m", "fast", "stop"]);
    }

    fn primary() -> Self {
        let bin = pg_bin();
        let (dir, data) = Self::new_dir();
        run(&bin, "initdb", &["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "--no-sync"]);
        let cluster = Self { dir, port: free_port(), bin };
        cluster.start();
        cluster
    }

    fn standby_of(primary: &Cluster) -> Self {
        let (dir, data) = Self::new_dir();
        let port = primary.port.to_string();
        run(
            &primary.bin,
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &data.to_string_lossy(), "-R", "-X", "stream"],
        );
        let cluster = Self { dir, port: free_port(), bin: primary.bin.clone() };
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn execute(&self, sql: &str) {
        let options: PgConnectOptions = self.url().parse().expect("url");
        let mut conn = options.connect().await.expect("connect to the private cluster");
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
        conn.close().await.expect("close");
    }

    async fn count(&self, sql: &str) -> i64 {
        let options: PgConnectOptions = self.url().parse().expect("url");
        let mut conn = options.connect().await.expect("connect to the private cluster");
        let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect(sql);
        conn.close().await.expect("close");
        n
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() { vec!["-u", "postgres", "--"] } else { vec![] })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn app_over(primary: &Cluster, standby: &Cluster, max_lag: &str) -> TestApp {
    app_checking(primary, standby, max_lag, "50ms").await
}

/// A replica whose lag monitor runs every `check`.
async fn app_checking(primary: &Cluster, standby: &Cluster, max_lag: &str, check: &str) -> TestApp {
    let extra_args = [
        "--database-read-url",
        &standby.url(),
        "--max-replica-lag",
        max_lag,
        "--replica-check-interval",
        check,
        "--health-interval",
        "100ms",
        "--db-acquire-timeout",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    TestApp::spawn_opts(Options { extra_args, database_url: Some(primary.url()) }).await
}

async fn standby_serving(app: &TestApp) -> f64 {
    Scrape::fetch(app.admin_addr).await.value("invitations_db_replica_serving", &[("standby", "0")])
}

async fn wait_standby_serving(app: &TestApp, want: f64) {
    wait_until(Duration::from_secs(30), &format!("the standby's serving gauge to be {want}"), || async {
        standby_serving(app).await == want
    })
    .await;
}

fn list_of(user: &str) -> pb::ListForUserRequest {
    pb::ListForUserRequest { user_id: user.into(), ..Default::default() }
}

fn from_primary<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-invitations-read", "primary".parse().expect("ascii"));
    request
}

async fn listed(app: &TestApp, request: tonic::Request<pb::ListForUserRequest>) -> usize {
    app.client.clone().list_for_user(request).await.expect("list").into_inner().invitations.len()
}

#[tokio::test]
async fn reads_come_from_the_standby_and_fall_back_when_it_lags_or_stops() {
    let primary = Cluster::primary();
    let standby = Cluster::standby_of(&primary);
    // Two replicas of the service: one tolerates an hour of lag, one a second.
    let patient = app_over(&primary, &standby, "1h").await;
    let strict = app_over(&primary, &standby, "1s").await;
    // A third checks the standby only hourly: it will not notice it stop.
    let unaware = app_checking(&primary, &standby, "1h", "1h").await;
    wait_standby_serving(&patient, 1.0).await;
    wait_standby_serving(&strict, 1.0).await;
    wait_standby_serving(&unaware, 1.0).await;
    // Reads use the standby's pools, named for pg_stat_activity.
    listed(&patient, tonic::Request::new(list_of("ann"))).await;
    let named = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'invitations-read'";
    assert!(standby.count(named).await >= 1, "the read pools connect as invitations-read");

    // Replay paused: a write on the primary does not reach the standby.
    standby.execute("SELECT pg_wal_replay_pause()").await;
    let inv = patient.mint_one("ann").await;
    // The patient replica reads the standby: ann has nothing there yet,
    // unless the caller asks for the primary.
    assert_eq!(listed(&patient, tonic::Request::new(list_of("ann"))).await, 0, "read from the paused standby");
    assert_eq!(listed(&patient, from_primary(list_of("ann"))).await, 1, "x-invitations-read: primary");
    // CheckCode never says "no such code" from a standby: the miss is asked
    // of the primary.
    assert!(patient.check(&inv.code).await.redeemable, "a code minted a moment ago is found");
    // GetInviteGraph never says NOT_FOUND from a standby either: bo, who
    // signed up a moment ago, is looked up on the primary.
    patient.redeem(&inv.code, "bo").await.expect("redeem on the primary");
    let graph = patient.graph(pb::GetInviteGraphRequest { user_id: "bo".into(), ..Default::default() }).await;
    let bo = graph.expect("bo from the primary").member.expect("member");
    assert_eq!((bo.user_id.as_str(), bo.inviter_id.as_str()), ("bo", "ann"));
    let scrape = Scrape::fetch(patient.admin_addr).await;
    assert!(scrape.value("invitations_db_read_fallbacks_total", &[("reason", "not_found")]) >= 1.0);
    let bad = {
        let mut r = tonic::Request::new(list_of("ann"));
        r.metadata_mut().insert("x-invitations-read", "nearest".parse().expect("ascii"));
        r
    };
    let err = patient.client.clone().list_for_user(bad).await.expect_err("bad header");
    assert_error(&err, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("x-invitations-read"));

    // The strict replica stops using the standby once it is a second behind.
    wait_standby_serving(&strict, 0.0).await;
    assert_eq!(listed(&strict, tonic::Request::new(list_of("ann"))).await, 1, "fell back to the primary");
    let fallbacks = Scrape::fetch(strict.admin_addr).await;
    assert!(fallbacks.value("invitations_db_read_fallbacks_total", &[("reason", "lagging")]) >= 1.0);
    assert_eq!(standby_serving(&patient).await, 1.0, "an hour of lag is still tolerated");

    // Replay resumed: the standby catches up and serves again.
    standby.execute("SELECT pg_wal_replay_resume()").await;
    wait_standby_serving(&strict, 1.0).await;
    assert_eq!(listed(&patient, tonic::Request::new(list_of("ann"))).await, 1, "caught up");

    // Stopped: reads fall back, nothing fails, readiness stays SERVING.
    standby.stop();
    wait_standby_serving(&patient, 0.0).await;
    assert_eq!(listed(&patient, tonic::Request::new(list_of("ann"))).await, 1);
    assert_eq!(patient.health_status(invitations::app::SERVICE_NAME).await.expect("health"), ServingStatus::Serving);
    assert_eq!(patient.health_status(invitations::app::WRITES_NAME).await.expect("health"), ServingStatus::Serving);

    // The replica that has not noticed still sends reads to the stopped
    // standby: each fails there and is answered by the primary.
    assert_eq!(standby_serving(&unaware).await, 1.0, "not noticed yet");
    assert_eq!(listed(&unaware, tonic::Request::new(list_of("ann"))).await, 1);
    let check = unaware.check(&inv.code).await;
    assert_eq!((check.reason.as_str(), check.inviter_id.as_str()), ("ALREADY_REDEEMED", "ann"));
    let graph = unaware.graph(pb::GetInviteGraphRequest { user_id: "ann".into(), ..Default::default() }).await;
    assert_eq!(graph.expect("graph").member.expect("ann").direct_invitee_count, 1);
    unaware.client.clone().get_stats(pb::GetStatsRequest::default()).await.expect("stats");
    let scrape = Scrape::fetch(unaware.admin_addr).await;
    assert!(scrape.value("invitations_db_read_fallbacks_total", &[("reason", "standby_error")]) >= 4.0);
}

#[tokio::test]
async fn with_the_primary_down_reads_keep_serving_from_the_standby_and_writes_fail() {
    let primary = Cluster::primary();
    let standby = Cluster::standby_of(&primary);
    let app = app_over(&primary, &standby, "5s").await;
    let inv = app.mint_one("cat").await;
    wait_until(Duration::from_secs(30), "the standby to have cat's invitation", || async {
        standby_serving(&app).await == 1.0 && listed(&app, tonic::Request::new(list_of("cat"))).await == 1
    })
    .await;

    primary.stop();
    wait_until(Duration::from_secs(30), "writes to report NOT_SERVING", || async {
        matches!(app.health_status(invitations::app::WRITES_NAME).await, Ok(ServingStatus::NotServing))
    })
    .await;
    assert_eq!(app.health_status(invitations::app::SERVICE_NAME).await.expect("health"), ServingStatus::Serving);
    // Reads are answered by the standby.
    assert_eq!(listed(&app, tonic::Request::new(list_of("cat"))).await, 1);
    assert!(app.check(&inv.code).await.redeemable);
    let graph = app.graph(pb::GetInviteGraphRequest { user_id: "cat".into(), ..Default::default() }).await;
    assert_eq!(graph.expect("graph from the standby").member.map(|m| m.user_id).as_deref(), Some("cat"));
    let stats = app.client.clone().get_stats(pb::GetStatsRequest::default()).await.expect("stats from the standby");
    assert!(stats.into_inner().waitlist.is_some());
    // Writes fail UNAVAILABLE; so does a read the primary must confirm.
    let err = app.mint(pb::MintRequest { user_ids: vec!["cat".into()], per_user: 1, ..Default::default() }).await;
    assert_eq!(err.expect_err("the primary is down").code(), tonic::Code::Unavailable);
    let err = app.redeem(&inv.code, "dan").await.expect_err("the primary is down");
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

/// A forest walk served by a standby that stops midway goes on from the
/// primary: every member arrives once, and the stream does not fail.
#[tokio::test]
async fn a_forest_walk_goes_on_from_the_primary_when_its_standby_stops() {
    let primary = Cluster::primary();
    let standby = Cluster::standby_of(&primary);
    let app = app_checking(&primary, &standby, "1h", "1h").await;
    const MEMBERS: usize = 20_000;
    for part in 0..2 {
        let members =
            (0..MEMBERS / 2).map(|i| crate::helpers::member(&format!("w-{part}-{i:05}"), None, None)).collect();
        app.register(members).await.expect("register");
    }
    let replayed = "SELECT count(*) FROM members";
    wait_until(Duration::from_secs(30), "the standby to replay the members", || async {
        standby.count(replayed).await == MEMBERS as i64
    })
    .await;
    // A small receive window, so the service cannot have read the whole
    // walk into its buffers before the standby stops.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .expect("endpoint")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut client = pb::invitation_service_client::InvitationServiceClient::new(channel);
    let mut stream =
        client.walk_invite_forest(pb::WalkInviteForestRequest::default()).await.expect("walk").into_inner();
    let mut seen = std::collections::HashSet::new();
    let first = stream.message().await.expect("a first member").expect("not the end");
    seen.insert(first.user_id);
    standby.stop();
    while let Some(m) = stream.message().await.expect("the walk goes on") {
        assert!(seen.insert(m.user_id.clone()), "{} twice", m.user_id);
    }
    assert_eq!(seen.len(), MEMBERS, "every member once");
    let scrape = Scrape::fetch(app.admin_addr).await;
    assert!(scrape.value("invitations_db_read_fallbacks_total", &[("reason", "standby_error")]) >= 1.0);
}
