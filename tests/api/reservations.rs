//! Reserve-then-complete: leases on one use, their completion, release and
//! lapse, and races between reservers and redeemers.

use std::time::Duration;

use invitations::pb;
use invitations::pb::reservation::State;
use invitations::store::reservations::{ReservationCounts, reservation_counts};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, assert_error, wait_until};

pub fn reserve_req(code: &str) -> pb::ReserveRequest {
    pb::ReserveRequest { code: code.into(), ..Default::default() }
}

pub async fn reserve(app: &TestApp, request: pb::ReserveRequest) -> Result<pb::Reservation, tonic::Status> {
    let response = app.client.clone().reserve(request).await?.into_inner();
    Ok(response.reservation.expect("reserve returns the reservation"))
}

pub async fn release(app: &TestApp, id: &str) -> Result<pb::Reservation, tonic::Status> {
    let request = pb::ReleaseRequest { reservation_id: id.into() };
    let response = app.client.clone().release(request).await?.into_inner();
    Ok(response.reservation.expect("release returns the reservation"))
}

/// Redeem with a reservation id instead of a code.
pub async fn complete(app: &TestApp, reservation_id: &str, invitee: &str) -> Result<pb::Invitation, tonic::Status> {
    app.redeem_req(pb::RedeemRequest {
        reservation_id: reservation_id.into(),
        invitee_id: invitee.into(),
        ..Default::default()
    })
    .await
}

fn ttl(millis: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: millis / 1000, nanos: (millis % 1000) as i32 * 1_000_000 })
}

fn lease_seconds(r: &pb::Reservation) -> i64 {
    let (create, expire) = (r.create_time.expect("create_time"), r.expire_time.expect("expire_time"));
    expire.seconds - create.seconds
}

async fn counts(app: &TestApp) -> ReservationCounts {
    let pool = app.pool().await;
    let mut conn = pool.acquire().await.expect("connection");
    reservation_counts(&mut conn).await.expect("counts")
}

#[tokio::test]
async fn a_reservation_holds_the_use_until_it_is_completed() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let held = reserve(&app, reserve_req(&inv.code)).await.expect("reserve");
    assert_eq!(held.state(), State::Held);
    assert_eq!(held.invitation_id, inv.id);
    assert_eq!(held.inviter_id, "alice");
    assert!((899..=901).contains(&lease_seconds(&held)), "default lease is 15 minutes: {held:?}");

    // Nobody else can take the held use: not by code, not by reserving.
    let check = app.check(&inv.code).await;
    assert!(!check.redeemable);
    assert_eq!(check.reason, "RESERVED");
    assert!(check.reserved);
    assert_eq!(check.reserved_uses, 1);
    assert_eq!(check.remaining_uses, 1, "reserved, not spent");
    let err = app.redeem(&inv.code, "carol").await.expect_err("reserved");
    assert_error(&err, Code::FailedPrecondition, "RESERVED", None);
    let err = reserve(&app, reserve_req(&inv.code)).await.expect_err("second reserver");
    assert_error(&err, Code::FailedPrecondition, "RESERVED", None);

    let redeemed = complete(&app, &held.id, "bob").await.expect("complete");
    assert_eq!((redeemed.id.as_str(), redeemed.inviter_id.as_str()), (inv.id.as_str(), "alice"));
    assert_eq!(redeemed.invitee_id, "bob");
    assert_eq!(redeemed.uses, 1);
    let check = app.check(&inv.code).await;
    assert_eq!((check.reason.as_str(), check.reserved, check.reserved_uses), ("ALREADY_REDEEMED", false, 0));

    // A retry by the same invitee answers the same; anyone else is refused.
    assert_eq!(complete(&app, &held.id, "bob").await.expect("retry"), redeemed);
    let err = complete(&app, &held.id, "dave").await.expect_err("completed");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_COMPLETED", None);
    let err = release(&app, &held.id).await.expect_err("cannot release a completed one");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_COMPLETED", None);
    assert_eq!(app.count("redemptions").await, 1);
    let c = counts(&app).await;
    assert_eq!((c.reserved, c.held, c.completed, c.released, c.lapsed), (1, 0, 1, 0, 0));
}

#[tokio::test]
async fn release_gives_the_use_back() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let held = reserve(&app, reserve_req(&inv.code)).await.expect("reserve");
    let released = release(&app, &held.id).await.expect("release");
    assert_eq!(released.state(), State::Released);
    assert!(released.end_time.is_some());
    assert_eq!(release(&app, &held.id).await.expect("twice").state(), State::Released, "idempotent");
    let check = app.check(&inv.code).await;
    assert!(check.redeemable && !check.reserved, "{check:?}");

    let err = complete(&app, &held.id, "bob").await.expect_err("released");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_RELEASED", None);
    let again = reserve(&app, reserve_req(&inv.code)).await.expect("the use is free again");
    assert_ne!(again.id, held.id);
    complete(&app, &again.id, "bob").await.expect("complete the new one");
    let c = counts(&app).await;
    assert_eq!((c.reserved, c.held, c.completed, c.released, c.lapsed), (2, 0, 1, 1, 0));
}

#[tokio::test]
async fn a_lease_that_runs_out_returns_the_use_without_a_sweeper() {
    // The sweeper is off: nothing but the clock ends the lease.
    let app = TestApp::spawn_with(&["--reservation-sweep-interval", "0s"]).await;
    let inv = app.mint_one("alice").await;
    let held = reserve(&app, pb::ReserveRequest { ttl: ttl(300), ..reserve_req(&inv.code) }).await.expect("reserve");
    assert_eq!(app.check(&inv.code).await.reason, "RESERVED");
    wait_until(Duration::from_secs(5), "the lease to run out", || async { app.check(&inv.code).await.redeemable })
        .await;

    let err = complete(&app, &held.id, "bob").await.expect_err("lapsed");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_EXPIRED", None);
    let lapsed = release(&app, &held.id).await.expect("releasing a lapsed lease is fine");
    assert_eq!(lapsed.state(), State::Lapsed);
    assert_eq!(lapsed.end_time, lapsed.expire_time);
    let c = counts(&app).await;
    assert_eq!((c.reserved, c.held, c.lapsed), (1, 0, 1), "counted as lapsed before any sweep");

    app.redeem(&inv.code, "carol").await.expect("someone else redeems the returned use");
    let err = complete(&app, &held.id, "bob").await.expect_err("still lapsed");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_EXPIRED", None);
    let pool = app.pool().await;
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM reservations").fetch_one(&pool).await.expect("status");
    assert_eq!(status, "held", "nothing swept it");
}

#[tokio::test]
async fn the_sweeper_marks_lapsed_leases() {
    let app = TestApp::spawn_with(&["--reservation-sweep-interval", "100ms"]).await;
    let inv = app.mint_one("alice").await;
    let held = reserve(&app, pb::ReserveRequest { ttl: ttl(200), ..reserve_req(&inv.code) }).await.expect("reserve");
    let pool = app.pool().await;
    wait_until(Duration::from_secs(10), "the sweeper to mark the lease lapsed", || async {
        let status: String =
            sqlx::query_scalar("SELECT status::text FROM reservations").fetch_one(&pool).await.expect("status");
        status == "lapsed"
    })
    .await;
    let err = complete(&app, &held.id, "bob").await.expect_err("lapsed");
    assert_error(&err, Code::FailedPrecondition, "RESERVATION_EXPIRED", None);
    assert_eq!(counts(&app).await.lapsed, 1);
}

#[tokio::test]
async fn a_lease_never_outlives_its_invitation() {
    let app = TestApp::spawn().await;
    let inv = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], ttl: ttl(60_000), ..Default::default() })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    let held = reserve(&app, reserve_req(&inv.code)).await.expect("reserve");
    assert_eq!(held.expire_time, inv.expire_time, "capped at the invitation's expiry");
}

#[tokio::test]
async fn a_retried_reserve_returns_the_same_reservation() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let req = pb::ReserveRequest { request_id: "signup-1".into(), ..reserve_req(&inv.code) };
    let first = reserve(&app, req.clone()).await.expect("first");
    let again = reserve(&app, req.clone()).await.expect("retry");
    assert_eq!(again, first);
    let err = reserve(&app, pb::ReserveRequest { ttl: ttl(5000), ..req }).await.expect_err("same id, other request");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED", Some("request_id"));
    assert_eq!(app.count("reservations").await, 1);

    // Concurrent twins: one reservation, the same answer to both.
    let inv2 = app.mint_one("alice").await;
    let req = pb::ReserveRequest { request_id: "signup-2".into(), ..reserve_req(&inv2.code) };
    let (a, b) = tokio::join!(reserve(&app, req.clone()), reserve(&app, req));
    assert_eq!(a.expect("twin a"), b.expect("twin b"));
    assert_eq!(app.count("reservations").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_simultaneous_reservers_exactly_one_wins() {
    let app = TestApp::spawn().await;
    // Several codes raced at once, so a lost update would have many chances.
    let codes: Vec<String> = app.mint_for("alice", 8).await.into_iter().map(|i| i.code).collect();
    let calls = (0..200).map(|i| {
        let mut client = app.client.clone();
        let code = codes[i % codes.len()].clone();
        tokio::spawn(async move { (client.reserve(reserve_req(&code)).await, code) })
    });
    let mut winners = std::collections::HashMap::new();
    for r in futures::future::join_all(calls).await {
        match r.expect("task") {
            (Ok(_), code) => *winners.entry(code).or_insert(0) += 1,
            (Err(status), _) => assert_error(&status, Code::FailedPrecondition, "RESERVED", None),
        }
    }
    assert_eq!(winners.len(), codes.len(), "every code was reserved once: {winners:?}");
    assert!(winners.values().all(|n| *n == 1), "one winner per code: {winners:?}");
    assert_eq!(app.count("reservations").await, codes.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservers_and_redeemers_racing_for_limited_uses_never_overbook() {
    let app = TestApp::spawn().await;
    let inv = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], max_uses: 3, ..Default::default() })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    let calls = (0..40).map(|i| {
        let mut client = app.client.clone();
        let code = inv.code.clone();
        tokio::spawn(async move {
            if i % 2 == 0 {
                client.reserve(reserve_req(&code)).await.map(|_| "reserved")
            } else {
                let req = pb::RedeemRequest { code, invitee_id: format!("user-{i}"), ..Default::default() };
                client.redeem(req).await.map(|_| "redeemed")
            }
        })
    });
    let mut granted = 0;
    for r in futures::future::join_all(calls).await {
        match r.expect("task") {
            Ok(_) => granted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                let reason = status.get_details_error_info().expect("error info").reason;
                assert!(["RESERVED", "ALREADY_REDEEMED"].contains(&reason.as_str()), "{status:?}");
            }
        }
    }
    assert_eq!(granted, 3, "exactly max_uses callers got a use");
    let held = app.count("reservations").await;
    assert_eq!(held + app.count("redemptions").await, 3);
    let check = app.check(&inv.code).await;
    assert!(!check.redeemable);
}

#[tokio::test]
async fn completing_a_reservation_keeps_the_redeem_rules() {
    let app = TestApp::spawn().await;
    // Self-invite: the use stays held for someone else.
    let own = app.mint_one("alice").await;
    let held = reserve(&app, reserve_req(&own.code)).await.expect("reserve");
    let err = complete(&app, &held.id, "alice").await.expect_err("self");
    assert_error(&err, Code::FailedPrecondition, "SELF_INVITE", None);
    complete(&app, &held.id, "bob").await.expect("bob completes it");

    // Already invited: bob joined above.
    let other = app.mint_one("dave").await;
    let held = reserve(&app, reserve_req(&other.code)).await.expect("reserve");
    let err = complete(&app, &held.id, "bob").await.expect_err("already invited");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_INVITED", None);

    // Cycle: alice -> bob, so alice cannot join through bob's invitation.
    let from_bob = app.mint_one("bob").await;
    let held = reserve(&app, reserve_req(&from_bob.code)).await.expect("reserve");
    let err = complete(&app, &held.id, "alice").await.expect_err("cycle");
    assert_error(&err, Code::FailedPrecondition, "INVITE_CYCLE", None);
    assert_eq!(app.count("redemptions").await, 1);
    assert_eq!(counts(&app).await.held, 2, "refused completions keep their leases");
}

#[tokio::test]
async fn completing_a_held_reservation_for_an_invitee_who_already_joined_through_its_invitation_is_refused() {
    let app = TestApp::spawn().await;
    let inv = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], per_user: 1, max_uses: 3, ..Default::default() })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    let held = reserve(&app, reserve_req(&inv.code)).await.expect("reserve");
    app.redeem(&inv.code, "bob").await.expect("bob joins by the code");
    // Not a retry: bob did not complete this reservation, and joined once.
    let err = complete(&app, &held.id, "bob").await.expect_err("bob already joined");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_INVITED", None);
    assert_eq!(counts(&app).await.held, 1, "the lease stays held for someone else");
    let done = complete(&app, &held.id, "carol").await.expect("carol completes it");
    assert_eq!(done.uses, 2);
    // Completing it again for carol is a retry: the same success.
    let again = complete(&app, &held.id, "carol").await.expect("a retry");
    assert_eq!(again.uses, 2);
    assert_eq!(app.count("redemptions").await, 2);
}

#[tokio::test]
async fn bad_reservation_inputs_change_nothing() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    for (bad, field) in [
        (pb::ReserveRequest { ttl: ttl(0), ..reserve_req(&inv.code) }, "ttl"),
        (pb::ReserveRequest { ttl: ttl(-1000), ..reserve_req(&inv.code) }, "ttl"),
        (pb::ReserveRequest { email: "not-an-email".into(), ..reserve_req(&inv.code) }, "email"),
        (pb::ReserveRequest { client_ip: "10.0.0".into(), ..reserve_req(&inv.code) }, "client_ip"),
        (reserve_req(""), "code"),
    ] {
        let err = reserve(&app, bad).await.expect_err("bad reserve");
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    let err = reserve(&app, reserve_req("nonsense")).await.expect_err("bad code");
    assert_error(&err, Code::InvalidArgument, "INVALID_CODE_FORMAT", Some("code"));

    let err = complete(&app, "not-a-uuid", "bob").await.expect_err("malformed id");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("reservation_id"));
    let err = release(&app, "not-a-uuid").await.expect_err("malformed id");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("reservation_id"));
    let both = pb::RedeemRequest {
        code: inv.code.clone(),
        reservation_id: uuid::Uuid::new_v4().to_string(),
        invitee_id: "bob".into(),
        ..Default::default()
    };
    let err = app.redeem_req(both).await.expect_err("code and reservation");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("reservation_id"));

    let unknown = uuid::Uuid::new_v4().to_string();
    let err = complete(&app, &unknown, "bob").await.expect_err("unknown");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("reservation_id"));
    let err = release(&app, &unknown).await.expect_err("unknown");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("reservation_id"));
    assert_eq!(app.count("reservations").await, 0);
    assert_eq!(app.count("redemptions").await, 0);

    // Longer than the maximum is clamped to it, however long (README,
    // "Limits"): a day, and more than the 3650 days an invitation's ttl
    // may not exceed, up to the largest Duration there is.
    let app = TestApp::spawn_with(&["--reservation-max-ttl", "2m", "--reservation-ttl", "1m"]).await;
    let inv = app.mint_for("alice", 4).await;
    let longest = Some(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 });
    for (n, long) in [ttl(86_400_000), ttl(3651 * 86_400_000), longest].into_iter().enumerate() {
        let lease = reserve(&app, pb::ReserveRequest { ttl: long, ..reserve_req(&inv[n].code) }).await;
        assert!((119..=121).contains(&lease_seconds(&lease.expect("clamped"))), "{long:?}");
    }
    let default = reserve(&app, reserve_req(&inv[3].code)).await.expect("default");
    assert!((59..=61).contains(&lease_seconds(&default)), "configured default");
}
