//! Graceful shutdown of the real binary under load: SIGTERM → health
//! NOT_SERVING at once, calls keep being served for the shutdown delay,
//! in-flight calls complete after the server stopped taking new ones, and the
//! process exits 0 within the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use invitations::pb;
use invitations::pb::invitation_service_client::InvitationServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{connect, wait_until};
use crate::process::Process;

const HELD: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_calls_and_exits_zero() {
    let (delay, drain) = (Duration::from_secs(2), Duration::from_secs(15));
    let mut process = Process::spawn(&["--shutdown-delay", "2s", "--drain-timeout", "15s"], &[]).await;
    let channel = connect(process.addr).await;
    let client = InvitationServiceClient::new(channel.clone());
    let health = HealthClient::new(channel.clone());
    wait_until(Duration::from_secs(20), "SERVING", || async { status(&health).await == Some(ServingStatus::Serving) })
        .await;

    // HELD redeems that will be in flight at SIGTERM: their invitees' member
    // rows are locked by this test, so they wait inside the database.
    let mint = pb::MintRequest { user_ids: vec!["inviter".into()], per_user: HELD as u32, ..Default::default() };
    let codes: Vec<String> =
        client.clone().mint(mint).await.expect("mint").into_inner().invitations.into_iter().map(|i| i.code).collect();
    let invitees: Vec<String> = (0..HELD).map(|i| format!("held-{i}")).collect();
    let own = pb::MintRequest { user_ids: invitees.clone(), per_user: 1, ..Default::default() };
    client.clone().mint(own).await.expect("registers the invitees as members");
    let pool = process.db.pool().await;
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("SELECT user_id FROM members WHERE user_id = ANY($1) FOR UPDATE")
        .bind(&invitees)
        .fetch_all(&mut *lock)
        .await
        .expect("lock the invitees");

    // Load: a steady stream of calls until the server stops taking them.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, served) = (client.clone(), stop.clone(), served.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = pb::ListForUserRequest { user_id: "inviter".into(), ..Default::default() };
                client.clone().list_for_user(request).await.expect("served while not draining");
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let in_flight: Vec<_> = codes
        .iter()
        .zip(&invitees)
        .map(|(code, invitee)| {
            let request = pb::RedeemRequest { code: code.clone(), invitee_id: invitee.clone(), ..Default::default() };
            let client = client.clone();
            tokio::spawn(async move { client.clone().redeem(request).await })
        })
        .collect();
    wait_until(Duration::from_secs(10), "the redeems to wait on the locks", || async {
        waiting_on_locks(&pool, &process.db.name).await >= HELD as i64
    })
    .await;
    wait_until(Duration::from_secs(10), "load to flow", || async { served.load(Ordering::Relaxed) >= 20 }).await;

    process.sigterm();
    let signalled = tokio::time::Instant::now();
    wait_until(Duration::from_secs(1), "NOT_SERVING right after SIGTERM", || async {
        status(&health).await == Some(ServingStatus::NotServing)
    })
    .await;
    // Still serving during the delay (load balancers are catching up).
    let during_delay = served.load(Ordering::Relaxed);
    wait_until(delay, "calls served during the shutdown delay", || async {
        served.load(Ordering::Relaxed) > during_delay + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    // The server stops taking calls once the delay is over; only then let
    // the held redeems go on.
    wait_until(delay + Duration::from_secs(5), "draining to start", || async {
        process.log_line("no longer taking calls; draining in-flight ones").is_some()
    })
    .await;
    for task in &in_flight {
        assert!(!task.is_finished(), "a held redeem finished before the locks were released");
    }
    lock.commit().await.expect("release the locks");
    for task in in_flight {
        let invitation = task.await.expect("redeem task").expect("in-flight redeem completes").into_inner();
        assert_eq!(invitation.invitation.expect("invitation").uses, 1);
    }

    let exit = process.wait_exit(delay + drain).await;
    assert!(exit.success(), "exit status {exit:?}; logs:\n{}", process.raw_logs());
    assert!(signalled.elapsed() < delay + drain, "exited after the grace period");
    pool.close().await;
}

async fn status(health: &HealthClient<tonic::transport::Channel>) -> Option<ServingStatus> {
    let request = HealthCheckRequest { service: invitations::app::SERVICE_NAME.into() };
    health.clone().check(request).await.ok().map(|r| r.into_inner().status())
}

async fn waiting_on_locks(pool: &sqlx::PgPool, database: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'")
        .bind(database)
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity")
}

#[tokio::test]
async fn an_unreachable_collector_does_not_hold_the_exit() {
    // A collector that accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", black_hole.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            connections.push(socket);
        }
    });
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    let mut process = Process::spawn(&["--drain-timeout", "5s"], &env).await;
    let mut client = InvitationServiceClient::new(connect(process.addr).await);
    let mint = pb::MintRequest { user_ids: vec!["ayo".into()], per_user: 1, ..Default::default() };
    client.mint(mint).await.expect("calls work while the collector hangs");

    process.sigterm();
    let signalled = tokio::time::Instant::now();
    let exit = process.wait_exit(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    // Two bounded flushes of 2 s (spans, metrics) and some slack; the
    // exporter's own timeout is 10 s.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    held.abort();
}
