//! Round trips per call, counted on the wire (`pg_counter`): the common path
//! of Redeem, CheckCode, ListForUser and Reserve is one exchange with
//! Postgres, and the rare branches their statements hand back still answer
//! as before (docs/design.md, "One round trip per call").

use invitations::pb;

use crate::helpers::{Options, TestApp, TestDb, assert_error};
use crate::pg_counter::{Exchange, PgCounter};

/// A server whose only database traffic is its calls: background work off
/// or far apart, one pooled connection (so a statement is prepared once).
pub async fn counted(extra: &[&str]) -> (TestApp, PgCounter, TestDb) {
    let db = TestDb::create().await;
    let counter = PgCounter::start().await;
    let mut args: Vec<String> = [
        "--db-max-connections",
        "1",
        "--health-interval",
        "1h",
        "--graph-fold-interval",
        "0s",
        "--reservation-sweep-interval",
        "0s",
        "--expiry-sweep-interval",
        "0s",
        "--outbox-stats-interval",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let app = TestApp::spawn_opts(Options { extra_args: args, database_url: Some(counter.url(&db.name)) }).await;
    (app, counter, db)
}

/// The statements sent since the last look, leaving out the pool's pings
/// and the debounced relay wake-up (at most one per 50 ms, not per call).
pub fn statements(counter: &PgCounter) -> Vec<Exchange> {
    counter
        .take()
        .into_iter()
        .filter(|e| match e {
            Exchange::Ping => false,
            Exchange::Statement(sql) => !sql.iter().all(|s| s.contains("pg_notify")),
            Exchange::Prepare(sql) => !sql.contains("pg_notify"),
        })
        .collect()
}

#[track_caller]
pub fn assert_one_statement(exchanges: &[Exchange], containing: &str) {
    match exchanges {
        [Exchange::Statement(sql)] if sql.len() == 1 && sql[0].contains(containing) => {}
        other => panic!("expected one exchange running `{containing}`, got {other:#?}"),
    }
}

#[tokio::test]
async fn the_common_path_of_each_call_is_one_round_trip() {
    let (app, counter, _db) = counted(&[]).await;
    let codes: Vec<String> = app.mint_for("alice", 6).await.into_iter().map(|i| i.code).collect();
    // Warm up: each statement is prepared on the connection once.
    app.redeem(&codes[0], "warm-1").await.expect("redeem");
    app.check(&codes[1]).await;
    app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    let reserve = |code: &str| pb::ReserveRequest { code: code.into(), ..Default::default() };
    app.client.clone().reserve(reserve(&codes[1])).await.expect("reserve");
    statements(&counter);

    app.redeem(&codes[2], "bob").await.expect("redeem");
    assert_one_statement(&statements(&counter), "inv_redeem(");

    let check = app.check(&codes[3]).await;
    assert!(check.redeemable);
    assert_one_statement(&statements(&counter), "FROM invitations WHERE code_hash");

    let page = app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await;
    assert_eq!(page.expect("list").invitations.len(), 6);
    assert_one_statement(&statements(&counter), "FROM invitations");

    app.client.clone().reserve(reserve(&codes[4])).await.expect("reserve");
    assert_one_statement(&statements(&counter), "inv_reserve(");

    // Refusals are one exchange too, the counted guess included.
    let unknown = app.mint_one("carol").await.code;
    app.revoke(pb::RevokeRequest { user_id: "carol".into(), ..Default::default() }).await.expect("revoke");
    statements(&counter);
    let err = app.redeem(&unknown, "dave").await.expect_err("revoked");
    assert_error(&err, tonic::Code::FailedPrecondition, "REVOKED", None);
    assert_one_statement(&statements(&counter), "inv_redeem(");
}

/// sqlx's pool pings every connection it takes back (a second round trip);
/// the common path's own pool does not (`store::statements`): after the
/// statement, nothing more is sent on its connection.
#[tokio::test]
async fn the_common_path_sends_no_ping_after_its_statement() {
    let (app, counter, _db) = counted(&[]).await;
    let codes: Vec<String> = app.mint_for("alice", 6).await.into_iter().map(|i| i.code).collect();
    let list = || app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() });
    let reserve = |code: &str| pb::ReserveRequest { code: code.into(), ..Default::default() };
    app.redeem(&codes[0], "warm").await.expect("redeem");
    app.check(&codes[1]).await;
    list().await.expect("list");
    app.client.clone().reserve(reserve(&codes[1])).await.expect("reserve");
    let warm = counter.take_by_connection();
    let common = warm
        .iter()
        .find(|(_, e)| matches!(e, Exchange::Statement(sql) if sql.iter().any(|s| s.contains("FROM inv_redeem("))))
        .map(|(connection, _)| *connection)
        .expect("the redeem ran");

    for (i, code) in codes[2..].iter().enumerate() {
        app.check(code).await;
        list().await.expect("list");
        app.redeem(code, &format!("invitee-{i}")).await.expect("redeem");
    }
    app.client.clone().reserve(reserve(&codes[5])).await.expect_err("spent");
    let on_common: Vec<Exchange> =
        counter.take_by_connection().into_iter().filter(|(c, _)| *c == common).map(|(_, e)| e).collect();
    assert_eq!(on_common.len(), 13, "one exchange per call on the common path's connection: {on_common:#?}");
    assert!(
        on_common.iter().all(|e| matches!(e, Exchange::Statement(sql) if sql.len() == 1)),
        "no ping and nothing else between the statements: {on_common:#?}"
    );
}

/// A call abandoned mid-statement (its deadline passed while its statement
/// waited on a row lock) leaves its connection unsettled: the next call
/// pings it first (draining what the abandoned statement answered), then
/// runs on it as before, and the abandoned redeem spent nothing.
#[tokio::test]
async fn a_connection_left_mid_statement_is_pinged_before_its_next_use() {
    let (app, counter, db) = counted(&[]).await;
    let codes: Vec<String> = app.mint_for("alice", 2).await.into_iter().map(|i| i.code).collect();
    // Warm up: both statements prepared on the one statement connection.
    app.redeem(&codes[1], "warm").await.expect("redeem");
    app.check(&codes[1]).await;
    let common = counter
        .take_by_connection()
        .into_iter()
        .find(|(_, e)| matches!(e, Exchange::Statement(sql) if sql.iter().any(|s| s.starts_with("SELECT inv.*"))))
        .map(|(connection, _)| connection)
        .expect("the check ran");

    let pool = db.pool().await;
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM invitations FOR UPDATE").execute(&mut *lock).await.expect("lock");
    let mut request = tonic::Request::new(pb::RedeemRequest {
        code: codes[0].clone(),
        invitee_id: "bob".into(),
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_millis(300));
    let err = app.client.clone().redeem(request).await.expect_err("past its deadline");
    assert!(matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{err:?}");
    // Release the lock only once the statement's own time is up, so it
    // cannot take the lock in time and commit.
    crate::helpers::wait_until_a_statement_waited_past(&pool, 300).await;
    lock.rollback().await.expect("release");

    let check = app.check(&codes[0]).await;
    assert!(check.redeemable, "the abandoned redeem spent nothing");
    let on_common: Vec<Exchange> =
        counter.take_by_connection().into_iter().filter(|(c, _)| *c == common).map(|(_, e)| e).collect();
    match on_common.as_slice() {
        [Exchange::Statement(redeem), pings @ .., Exchange::Statement(check)]
            if redeem[0].contains("FROM inv_redeem(")
                && check[0].starts_with("SELECT inv.*")
                && !pings.is_empty()
                && pings.iter().all(|e| *e == Exchange::Ping) => {}
        other => panic!("expected the abandoned redeem, a ping, then the check on one connection: {other:#?}"),
    }
}

#[tokio::test]
async fn abuse_screening_stays_in_the_one_round_trip() {
    let (app, counter, _db) = counted(&["--abuse-ip-reuse", "block"]).await;
    let codes: Vec<String> = app.mint_for("alice", 4).await.into_iter().map(|i| i.code).collect();
    let redeem = |code: &str, invitee: &str, ip: &str| pb::RedeemRequest {
        code: code.into(),
        invitee_id: invitee.into(),
        client_ip: ip.into(),
        email: format!("{invitee}@example.com"),
        ..Default::default()
    };
    app.redeem_req(redeem(&codes[0], "warm", "198.51.100.1")).await.expect("redeem");
    app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    let check = |ip: &str| pb::CheckCodeRequest { code: codes[1].clone(), client_ip: ip.into() };
    app.client.clone().check_code(check("198.51.100.9")).await.expect("check");
    statements(&counter);

    app.redeem_req(redeem(&codes[1], "bob", "198.51.100.2")).await.expect("redeem");
    assert_one_statement(&statements(&counter), "inv_redeem(");
    // The IP check blocks a second redeem from the same network, in the same statement.
    let err = app.redeem_req(redeem(&codes[2], "eve", "198.51.100.2")).await.expect_err("ip reuse");
    assert_error(&err, tonic::Code::FailedPrecondition, "IP_ALREADY_USED", None);
    assert_one_statement(&statements(&counter), "inv_redeem(");

    app.client.clone().check_code(check("198.51.100.3")).await.expect("check");
    assert_one_statement(&statements(&counter), "FROM invitations WHERE code_hash");
}

#[tokio::test]
async fn list_for_user_with_the_earn_policy_is_one_round_trip() {
    let (app, counter, _db) = counted(&["--earn-interval", "1h", "--earn-cap", "3"]).await;
    app.register(vec![crate::helpers::member("alice", Some(1_700_000_000), None)]).await.expect("register");
    let list = || app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() });
    list().await.expect("list");
    statements(&counter);
    let page = list().await.expect("list");
    assert!(page.next_grant_time.is_some(), "alice holds none, so she earns one");
    assert_one_statement(&statements(&counter), "earn_next_time");
    app.mint_for("alice", 3).await;
    statements(&counter);
    let page = list().await.expect("list");
    assert!(page.next_grant_time.is_none(), "alice holds the cap");
    assert_one_statement(&statements(&counter), "earn_next_time");
}

#[tokio::test]
async fn redeem_with_the_welcome_and_refill_quotas_is_one_round_trip() {
    let (app, counter, _db) = counted(&["--welcome-grant", "2", "--refill-to", "2"]).await;
    let codes: Vec<String> = app.mint_for("alice", 2).await.into_iter().map(|i| i.code).collect();
    app.redeem(&codes[0], "warm").await.expect("redeem");
    let unspent = |user: &str| {
        let user = user.to_owned();
        let app = &app;
        async move {
            let request = pb::ListForUserRequest {
                user_id: user,
                state: pb::invitation::State::Unspent as i32,
                ..Default::default()
            };
            app.list(request).await.expect("list").invitations
        }
    };
    // Alice was topped up to 2, the warm-up invitee welcomed with 2.
    assert_eq!(unspent("alice").await.len(), 2);
    assert_eq!(unspent("warm").await.len(), 2);
    statements(&counter);

    app.redeem(&codes[1], "bob").await.expect("redeem");
    assert_one_statement(&statements(&counter), "inv_redeem(");
    let bobs = unspent("bob").await;
    assert_eq!(bobs.len(), 2, "bob's welcome grant");
    assert!(bobs.iter().all(|i| i.label == "policy:welcome" && i.max_uses == 1 && i.code.len() > 8));
    let alices = unspent("alice").await;
    assert_eq!(alices.len(), 2, "alice topped up to 2 again");
    assert_eq!(alices.iter().filter(|i| i.label == "policy:refill").count(), 2);
    statements(&counter);

    // Bob's welcome codes work like any other; bob is refilled in the same trip.
    app.redeem(&bobs[0].code, "carol").await.expect("redeem a welcome code");
    assert_one_statement(&statements(&counter), "inv_redeem(");
    assert_eq!(unspent("bob").await.len(), 2);
    assert_eq!(unspent("carol").await.len(), 2);
}

/// The rare branches, each handed to the general path: what they cost.
#[tokio::test]
async fn rare_branches_take_the_general_path_and_answer_as_before() {
    let (app, counter, _db) = counted(&[]).await;
    let codes: Vec<String> = app.mint_for("alice", 4).await.into_iter().map(|i| i.code).collect();
    app.redeem(&codes[0], "bob").await.expect("redeem");
    statements(&counter);

    // A retry of a finished redeem (same code, same invitee): the same success.
    let again = app.redeem(&codes[0], "bob").await.expect("a retry is the same success");
    assert_eq!(again.invitee_id, "bob");
    let retry = statements(&counter);
    assert!(retry.len() > 1, "a retry is answered by the general path: {retry:#?}");
    eprintln!("retry of a finished redeem: {} exchanges", retry.len());

    // With request_id: the general path stores the answer.
    let with_id = pb::RedeemRequest {
        code: codes[1].clone(),
        invitee_id: "carol".into(),
        request_id: "8a7e4c2e-0000-4000-8000-000000000001".into(),
        ..Default::default()
    };
    let first = app.redeem_req(with_id.clone()).await.expect("redeem");
    eprintln!("redeem with request_id: {} exchanges", statements(&counter).len());
    let replay = app.redeem_req(with_id).await.expect("replay");
    assert_eq!(first, replay);
    eprintln!("replay by request_id: {} exchanges", statements(&counter).len());

    // A reservation completed.
    let reserved = app
        .client
        .clone()
        .reserve(pb::ReserveRequest { code: codes[2].clone(), ..Default::default() })
        .await
        .expect("reserve")
        .into_inner();
    let reservation_id = reserved.reservation.expect("reservation").id;
    statements(&counter);
    let done = app
        .redeem_req(pb::RedeemRequest { reservation_id, invitee_id: "dan".into(), ..Default::default() })
        .await
        .expect("complete");
    assert_eq!(done.invitee_id, "dan");
    eprintln!("reservation completed: {} exchanges", statements(&counter).len());
}

#[tokio::test]
async fn a_known_member_brings_its_subtree_and_cannot_close_a_cycle() {
    let app = TestApp::spawn().await;
    // root invites mid; mid invites leaf; then root (a root) ... and a
    // registered member with invitees of its own joins under alice.
    app.register(vec![crate::helpers::member("owner", Some(1_700_000_000), None)]).await.expect("register");
    let own = app.mint_one("owner").await.code;
    app.redeem(&own, "child").await.expect("child joins owner");
    let alices = app.mint_one("alice").await.code;
    app.redeem(&alices, "owner").await.expect("owner (with its subtree) joins alice");
    let graph = app
        .graph(pb::GetInviteGraphRequest { user_id: "alice".into(), max_depth: 5, ..Default::default() })
        .await
        .expect("graph");
    let below: Vec<&str> = graph.descendants.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(below, ["owner", "child"]);
    assert_eq!(graph.member.expect("alice").descendant_count, 2);
    // alice is now below nobody; her root is alice. child's code for alice closes a cycle.
    let childs = app.mint_one("child").await.code;
    let err = app.redeem(&childs, "alice").await.expect_err("cycle");
    assert_error(&err, tonic::Code::FailedPrecondition, "INVITE_CYCLE", None);
}

#[tokio::test]
async fn the_same_new_invitee_racing_on_two_codes_joins_once() {
    let app = TestApp::spawn().await;
    for round in 0..10 {
        let a = app.mint_one("alice").await.code;
        let b = app.mint_one("bob").await.code;
        let invitee = format!("racer-{round}");
        let (x, y) = tokio::join!(app.redeem(&a, &invitee), app.redeem(&b, &invitee));
        let (ok, err) = match (x, y) {
            (Ok(ok), Err(err)) | (Err(err), Ok(ok)) => (ok, err),
            other => panic!("exactly one of the two joins: {other:?}"),
        };
        assert_eq!(ok.invitee_id, invitee);
        assert_error(&err, tonic::Code::FailedPrecondition, "ALREADY_INVITED", None);
    }
    assert_eq!(app.count("redemptions").await, 10);
}
