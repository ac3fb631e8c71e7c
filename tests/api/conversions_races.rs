//! RecordConversion under concurrency and its cost: the same conversion
//! from two replicas at once counts and rewards once, the per-inviter cap
//! holds when an inviter's invitees convert at once, the common path is
//! one round trip, and recording needs the `signup` scope, voiding `admin`.

use std::collections::HashSet;

use invitations::pb;

use crate::conversions::{LOOP, converted, record, record_request, unspent};
use crate::helpers::{Options, TestApp, assert_error, bearer};
use crate::round_trips::{assert_one_statement, counted, statements};

async fn replica_of(app: &TestApp, args: &[&str]) -> TestApp {
    let extra_args = args.iter().map(|s| s.to_string()).collect();
    TestApp::spawn_opts(Options { extra_args, database_url: Some(app.db.url.clone()) }).await
}

#[tokio::test]
async fn the_same_conversion_from_two_replicas_at_once_counts_and_rewards_once() {
    let first = TestApp::spawn_with(&LOOP).await;
    let second = replica_of(&first, &LOOP).await;
    let codes: Vec<String> = first.mint_for("alice", 4).await.into_iter().map(|i| i.code).collect();
    for (i, code) in codes.iter().enumerate() {
        first.redeem(code, &format!("m{i}")).await.expect("redeem");
    }
    // Every member converts 8 times at once, half through each replica.
    let members = codes.len();
    let calls = (0..members * 8).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        async move { record(app, &format!("m{}", n % members), "activated").await }
    });
    let answers: Vec<pb::RecordConversionResponse> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.expect("record")).collect();
    let ids: HashSet<String> = answers.iter().map(|a| a.conversion.clone().expect("c").id).collect();
    assert_eq!(ids.len(), codes.len(), "one conversion per member");
    assert_eq!(answers.iter().filter(|a| a.created).count(), codes.len(), "each created once");
    assert_eq!(first.count("conversions").await, codes.len() as i64);
    // One reward each: alice 1 per member, every member 1.
    assert_eq!(unspent(&first, "alice", "reward:activated").await, codes.len());
    for i in 0..codes.len() {
        assert_eq!(unspent(&second, &format!("m{i}"), "reward:activated").await, 1);
    }
    let pool = first.pool().await;
    let events: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_type = 'converted'), count(*) FILTER (WHERE event_type = 'reward.granted') \
         FROM outbox",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(events, (codes.len() as i64, codes.len() as i64));
    pool.close().await;
}

#[tokio::test]
async fn the_inviter_cap_holds_when_many_invitees_convert_at_once() {
    let mut args = LOOP.to_vec();
    args.extend(["--reward-cap", "3", "--reward-cap-period", "1day"]);
    let first = TestApp::spawn_with(&args).await;
    let second = replica_of(&first, &args).await;
    const MEMBERS: usize = 12;
    let codes: Vec<String> = first.mint_for("alice", MEMBERS as u32).await.into_iter().map(|i| i.code).collect();
    for (i, code) in codes.iter().enumerate() {
        first.redeem(code, &format!("m{i:02}")).await.expect("redeem");
    }
    let calls = (0..MEMBERS).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        async move { converted(app, &format!("m{i:02}"), "activated").await }
    });
    let conversions = futures::future::join_all(calls).await;
    let rewards: Vec<pb::ConversionReward> = conversions.into_iter().map(|c| c.reward.expect("reward")).collect();
    assert_eq!(rewards.iter().filter(|r| r.inviter_count == 1).count(), 3, "the cap");
    assert_eq!(rewards.iter().filter(|r| r.inviter_capped).count(), MEMBERS - 3);
    assert!(rewards.iter().all(|r| r.member_count == 1), "members are rewarded past the cap");
    assert_eq!(unspent(&first, "alice", "reward:activated").await, 3);

    // The cap is a sliding window: rewards older than the period stop counting.
    let pool = first.pool().await;
    sqlx::query("UPDATE conversions SET record_time = record_time - interval '2 days'")
        .execute(&pool)
        .await
        .expect("age the rewards");
    pool.close().await;
    let code = first.mint_one("alice").await.code;
    first.redeem(&code, "late").await.expect("redeem");
    let late = converted(&first, "late", "activated").await.reward.expect("reward");
    assert_eq!((late.inviter_count, late.inviter_capped), (1, false));
}

#[tokio::test]
async fn record_conversion_is_one_round_trip() {
    let (app, counter, _db) = counted(&LOOP).await;
    let codes: Vec<String> = app.mint_for("alice", 3).await.into_iter().map(|i| i.code).collect();
    for (i, code) in codes.iter().enumerate() {
        app.redeem(code, &format!("m{i}")).await.expect("redeem");
    }
    converted(&app, "m0", "activated").await;
    statements(&counter);

    // New with its reward, a repeat, and an unknown member: one exchange each.
    let c = converted(&app, "m1", "activated").await;
    assert_eq!(c.reward.expect("reward").inviter_count, 1);
    assert_one_statement(&statements(&counter), "inv_record_conversion(");
    assert!(!record(&app, "m1", "activated").await.expect("repeat").created);
    assert_one_statement(&statements(&counter), "inv_record_conversion(");
    record(&app, "nobody", "activated").await.expect_err("unknown");
    assert_one_statement(&statements(&counter), "inv_record_conversion(");
}

#[tokio::test]
async fn recording_needs_the_signup_scope() {
    const ADMIN: &str = "admin-token-0123456789";
    const SIGNUP: &str = "signup-token-0123456789";
    const READ: &str = "read-token-0123456789";
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, signup-svc:signup:{}, reader:read:{}", hash(ADMIN), hash(SIGNUP), hash(READ));
    let mut args = LOOP.to_vec();
    args.extend(["--caller-tokens", &tokens]);
    let app = TestApp::spawn_with(&args).await;
    let mut c = app.client.clone();
    let register = pb::RegisterMembersRequest { members: vec![crate::helpers::member("m", Some(1), None)] };
    c.register_members(bearer(register, ADMIN)).await.expect("admin registers");
    let e = c.record_conversion(bearer(record_request("m", "activated"), READ)).await.expect_err("read may not");
    assert_error(&e, tonic::Code::PermissionDenied, "PERMISSION_DENIED", None);
    let ok = c.record_conversion(bearer(record_request("m", "activated"), SIGNUP)).await.expect("signup records");
    let id = ok.into_inner().conversion.expect("conversion").id;
    let void = pb::VoidConversionRequest { conversion_id: id, reason: "refund".into(), ..Default::default() };
    let e = c.void_conversion(bearer(void.clone(), SIGNUP)).await.expect_err("signup may not void");
    assert_error(&e, tonic::Code::PermissionDenied, "PERMISSION_DENIED", None);
    let voided = c.void_conversion(bearer(void, ADMIN)).await.expect("admin voids").into_inner();
    let reward = voided.conversion.expect("conversion").reward.expect("reward");
    assert_eq!(reward.voided_by, "ops", "the caller's name is recorded");
}
