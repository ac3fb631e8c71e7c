//! Hardened inputs: request size limit, load shedding instead of a pile-up,
//! and client deadlines honoured (work past the deadline is rolled back).

use std::time::Duration;

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, wait_until};

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = TestApp::spawn_with(&["--max-request-bytes", "4096"]).await;
    let user_ids = (0..500).map(|i| format!("user-with-a-long-enough-id-{i:04}")).collect();
    let err = app.mint(pb::MintRequest { user_ids, ..Default::default() }).await.expect_err("too large");
    // tonic refuses it while decoding, before any handler runs, as OUT_OF_RANGE.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    assert_eq!(app.count("invitations").await, 0);
    app.mint_one("alice").await;
}

/// Holds the row lock of every invitation until the returned transaction ends,
/// so a Redeem that reaches its own lock waits.
async fn hold_invitation_locks(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let pool = app.pool().await;
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM invitations FOR UPDATE").execute(&mut *tx).await.expect("lock");
    tx
}

/// Server connections in the given state (`wait_event_type = 'Lock'`, or busy).
async fn server_sessions(pool: &sqlx::PgPool, waiting_on_lock: bool) -> i64 {
    let filter = if waiting_on_lock { "wait_event_type = 'Lock'" } else { "state <> 'idle'" };
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'invitations' AND {filter}"
    ))
    .fetch_one(pool)
    .await
    .expect("activity")
}

#[tokio::test]
async fn calls_beyond_the_limit_are_shed_at_once() {
    let app = TestApp::spawn_with(&["--max-concurrent-calls", "1"]).await;
    let inv = app.mint_one("alice").await;
    let lock = hold_invitation_locks(&app).await;
    let mut client = app.client.clone();
    let code = inv.code.clone();
    let stuck = tokio::spawn(async move {
        client.redeem(pb::RedeemRequest { code, invitee_id: "bob".into(), ..Default::default() }).await
    });
    let pool = app.pool().await;
    wait_until(Duration::from_secs(10), "the redeem to wait on the lock", || async {
        server_sessions(&pool, true).await == 1
    })
    .await;
    // While it waits, the next call is refused at once.
    let check = pb::CheckCodeRequest { code: inv.code.clone(), ..Default::default() };
    let started = std::time::Instant::now();
    let status = app.client.clone().check_code(check).await.expect_err("shed");
    assert_error(&status, Code::Unavailable, "OVERLOADED", None);
    assert!(started.elapsed() < Duration::from_secs(1), "shed, not queued");
    assert!(app.health_status("").await.is_ok(), "health is never shed");
    lock.rollback().await.expect("release");
    stuck.await.expect("task").expect("the held call completes");
    assert!(!app.check(&inv.code).await.redeemable, "calls are served again");
}

#[tokio::test]
async fn a_call_past_its_deadline_is_abandoned_and_rolled_back() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let lock = hold_invitation_locks(&app).await;
    let mut request = tonic::Request::new(pb::RedeemRequest {
        code: inv.code.clone(),
        invitee_id: "bob".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = app.client.clone().redeem(request).await.expect_err("deadline");
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The statement checks the call's time left (counted from its own
    // start, a moment after the client's clock started) once it has the
    // lock: release the lock only once that time has passed for it, or it
    // could still take the lock in time and commit.
    let pool = app.pool().await;
    crate::helpers::wait_until_a_statement_waited_past(&pool, 300).await;
    lock.rollback().await.expect("release");

    // The abandoned transaction ends without committing anything.
    wait_until(Duration::from_secs(10), "the server's connections to be idle", || async {
        server_sessions(&pool, false).await == 0
    })
    .await;
    assert_eq!(app.count("redemptions").await, 0);
    assert!(app.check(&inv.code).await.redeemable, "the use was not spent");
}
