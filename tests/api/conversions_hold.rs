//! Held rewards (`--reward-hold`): granted by the background granter when
//! the hold ends (moved back with SQL, then waited for), voided before and
//! after, and a void racing the end of the hold never leaves a reward both
//! granted and kept.

use std::time::Duration;

use invitations::pb;
use invitations::pb::conversion_reward::State as RewardState;
use tonic::Code;

use crate::conversions::{LOOP, converted, unspent};
use crate::helpers::{Options, TestApp, assert_error, wait_until};
use crate::metrics::Scrape;

const WAIT: Duration = Duration::from_secs(30);

fn held_args() -> Vec<&'static str> {
    let mut args = LOOP.to_vec();
    args.extend(["--reward-hold", "7d", "--reward-grant-interval", "20ms"]);
    args
}

async fn void(app: &TestApp, id: &str, reason: &str) -> Result<pb::VoidConversionResponse, tonic::Status> {
    let request = pb::VoidConversionRequest { conversion_id: id.into(), reason: reason.into(), ..Default::default() };
    app.client.clone().void_conversion(request).await.map(tonic::Response::into_inner)
}

/// `n` members brought in by alice, each converted (reward pending).
async fn pending(app: &TestApp, n: usize) -> Vec<pb::Conversion> {
    let codes: Vec<String> = app.mint_for("alice", n as u32).await.into_iter().map(|i| i.code).collect();
    let mut out = Vec::with_capacity(n);
    for (i, code) in codes.iter().enumerate() {
        let user = format!("m{i:02}");
        app.redeem(code, &user).await.expect("redeem");
        out.push(converted(app, &user, "activated").await);
    }
    out
}

async fn end_hold(app: &TestApp, ids: &[&str]) {
    let pool = app.pool().await;
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().expect("uuid")).collect();
    sqlx::query("UPDATE conversions SET hold_until = now() - interval '1 second' WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&pool)
        .await
        .expect("end the hold");
    pool.close().await;
}

async fn state_of(app: &TestApp, id: &str) -> String {
    let pool = app.pool().await;
    let id: uuid::Uuid = id.parse().expect("uuid");
    let state = sqlx::query_scalar("SELECT reward_state FROM conversions WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("state");
    pool.close().await;
    state
}

#[tokio::test]
async fn a_held_reward_is_pending_until_the_granter_grants_it() {
    let app = TestApp::spawn_with(&held_args()).await;
    let c = pending(&app, 1).await.remove(0);
    let reward = c.reward.expect("reward");
    assert_eq!(reward.state, RewardState::Pending as i32);
    assert_eq!((reward.inviter_count, reward.member_count), (1, 1), "decided now");
    let hold = reward.hold_until.expect("hold_until").seconds - c.record_time.expect("record time").seconds;
    assert!((7 * 86_400 - 5..=7 * 86_400 + 5).contains(&hold), "7 days: {hold}");
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 0, "nothing minted yet");
    assert_eq!(app.count("outbox WHERE event_type = 'reward.granted'").await, 0);
    let minted = || async { Scrape::fetch(app.admin_addr).await.value("invitations_minted_total", &[]) };
    assert_eq!(minted().await, 1.0, "alice's one invitation; the pending reward is not minted yet");

    end_hold(&app, &[&c.id]).await;
    wait_until(WAIT, "the granter to grant it", || async { state_of(&app, &c.id).await == "granted" }).await;
    assert_eq!(minted().await, 3.0, "the reward's two invitations, counted once, when granted");
    assert_eq!(
        (unspent(&app, "alice", "reward:activated").await, unspent(&app, "m00", "reward:activated").await),
        (1, 1)
    );
    assert_eq!(app.count("outbox WHERE event_type = 'reward.granted'").await, 1);
}

#[tokio::test]
async fn voiding_drops_a_pending_reward_and_revokes_an_unspent_granted_one() {
    let app = TestApp::spawn_with(&held_args()).await;
    let cs = pending(&app, 3).await;
    // Before the hold ends: dropped; the granter never grants it.
    let voided = void(&app, &cs[0].id, "refund").await.expect("void");
    assert!(voided.changed);
    let reward = voided.conversion.expect("c").reward.expect("reward");
    assert_eq!((reward.state, reward.void_reason.as_str()), (RewardState::Voided as i32, "refund"));
    assert_eq!((voided.revoked_count, voided.kept_count), (0, 0));
    end_hold(&app, &[&cs[0].id, &cs[1].id, &cs[2].id]).await;
    for c in &cs[1..] {
        wait_until(WAIT, "the granter", || async { state_of(&app, &c.id).await == "granted" }).await;
    }
    assert_eq!(state_of(&app, &cs[0].id).await, "voided");
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 2, "only the two not voided");
    assert_eq!(unspent(&app, "m00", "reward:activated").await, 0);

    // After: what is unspent is revoked, what was redeemed stays.
    let page = app.list(pb::ListForUserRequest { user_id: "m01".into(), ..Default::default() }).await.expect("list");
    let member_reward = page.invitations.iter().find(|i| i.label == "reward:activated").expect("reward").code.clone();
    app.redeem(&member_reward, "friend-of-m01").await.expect("redeem the reward");
    let voided = void(&app, &cs[1].id, "fraud").await.expect("void");
    assert_eq!((voided.changed, voided.revoked_count, voided.kept_count), (true, 1, 1));
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 1);
    // Again: nothing changes.
    let again = void(&app, &cs[1].id, "fraud").await.expect("void again");
    assert_eq!((again.changed, again.revoked_count), (false, 0));
    assert_eq!(app.count("outbox WHERE event_type = 'reward.voided'").await, 2);

    let e = void(&app, &uuid::Uuid::now_v7().to_string(), "refund").await.expect_err("unknown");
    assert_error(&e, Code::NotFound, "NOT_FOUND", Some("conversion_id"));
    let e = void(&app, &cs[2].id, "").await.expect_err("no reason");
    assert_error(&e, Code::InvalidArgument, "INVALID_ARGUMENT", Some("reason"));
    let e = void(&app, "not-an-id", "refund").await.expect_err("bad id");
    assert_error(&e, Code::InvalidArgument, "INVALID_ARGUMENT", Some("conversion_id"));
    assert_eq!(state_of(&app, &cs[2].id).await, "granted", "bad input changed nothing");
}

#[tokio::test]
async fn a_void_racing_the_end_of_the_hold_never_leaves_a_reward_granted_and_kept() {
    let args = held_args();
    let first = TestApp::spawn_with(&args).await;
    let extra_args = args.iter().map(|s| s.to_string()).collect();
    let second = TestApp::spawn_opts(Options { extra_args, database_url: Some(first.db.url.clone()) }).await;
    const N: usize = 24;
    let cs = pending(&first, N).await;
    let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
    // The hold ends for all while voids arrive through both replicas, whose
    // granters race them.
    end_hold(&first, &ids).await;
    let voids = cs.iter().enumerate().map(|(i, c)| {
        let app = if i % 2 == 0 { &first } else { &second };
        async move { void(app, &c.id, "chargeback").await.expect("void") }
    });
    let answers = futures::future::join_all(voids).await;
    let revoked: u32 = answers.iter().map(|a| a.revoked_count).sum();
    for c in &cs {
        assert_eq!(state_of(&first, &c.id).await, "voided");
    }
    // Whatever the granters granted first was revoked by its void: no
    // reward invitation is left unspent, and every one minted was revoked.
    assert_eq!(unspent(&first, "alice", "reward:activated").await, 0);
    let pool = first.pool().await;
    let (minted, open): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE revoke_time IS NULL) FROM invitations WHERE label = 'reward:activated'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    assert_eq!((minted, open), (i64::from(revoked), 0));
}

async fn review(
    app: &TestApp,
    ids: &[&str],
    decision: pb::ReviewDecision,
) -> Result<pb::ReviewRewardsResponse, tonic::Status> {
    let request = pb::ReviewRewardsRequest {
        conversion_ids: ids.iter().map(|s| s.to_string()).collect(),
        decision: decision as i32,
        reason: "checked".into(),
        reviewed_by: "mod-kim".into(),
    };
    app.client.clone().review_rewards(request).await.map(tonic::Response::into_inner)
}

/// Alice's invitees m00..m{n}, all from one IP: every one after the first
/// is flagged IP_REUSE (the check in flag mode); each converts.
async fn flagged_conversions(app: &TestApp, n: usize) -> Vec<pb::Conversion> {
    let codes: Vec<String> = app.mint_for("alice", n as u32).await.into_iter().map(|i| i.code).collect();
    let mut out = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let user = format!("m{i:02}");
        let redeem = pb::RedeemRequest {
            code: code.clone(),
            invitee_id: user.clone(),
            client_ip: "198.51.100.7".into(),
            ..Default::default()
        };
        app.redeem_req(redeem).await.expect("redeem");
        out.push(converted(app, &user, "activated").await);
    }
    out
}

#[tokio::test]
async fn flagged_redemptions_are_held_for_review_then_approved_or_denied() {
    let mut args = LOOP.to_vec();
    args.extend(["--abuse-ip-reuse", "flag", "--reward-flagged", "hold"]);
    let app = TestApp::spawn_with(&args).await;
    let cs = flagged_conversions(&app, 4).await;
    let state = |c: &pb::Conversion| c.reward.as_ref().expect("reward").state;
    assert_eq!(state(&cs[0]), RewardState::Granted as i32, "the first redemption was not flagged");
    assert!(cs[0].redemption_flags.is_empty());
    for c in &cs[1..] {
        assert_eq!((state(c), c.redemption_flags.clone()), (RewardState::Review as i32, vec!["IP_REUSE".to_owned()]));
    }
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 1);

    let approved = review(&app, &[&cs[1].id, &cs[0].id], pb::ReviewDecision::Approve).await.expect("approve");
    assert_eq!(approved.changed_count, 1, "only the one in review");
    let reward = approved.conversions[0].reward.clone().expect("reward");
    assert_eq!((reward.state, reward.reviewed_by.as_str()), (RewardState::Granted as i32, "mod-kim"));
    assert_eq!(approved.conversions[1].id, cs[0].id, "in the order asked");
    assert_eq!(
        (unspent(&app, "alice", "reward:activated").await, unspent(&app, "m01", "reward:activated").await),
        (2, 1)
    );

    let denied = review(&app, &[&cs[2].id], pb::ReviewDecision::Reject).await.expect("deny");
    assert_eq!(denied.conversions[0].reward.clone().expect("reward").state, RewardState::Denied as i32);
    // Reviewed again: nothing changes.
    let again = review(&app, &[&cs[2].id, &cs[1].id], pb::ReviewDecision::Approve).await.expect("again");
    assert_eq!(again.changed_count, 0);
    // A void of one still in review drops it.
    let voided = void(&app, &cs[3].id, "fraud").await.expect("void");
    assert_eq!(voided.conversion.expect("c").reward.expect("reward").state, RewardState::Voided as i32);
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 2);
    let reviews = pb::ListHistoryRequest { operation: "reward_review".into(), ..Default::default() };
    let reviews = crate::history::all(&app, reviews).await;
    let decided: Vec<_> =
        reviews.iter().map(|e| (e.caller.as_str(), e.details.get("approved").map(String::as_str))).collect();
    assert_eq!(decided, [("mod-kim", Some("false")), ("mod-kim", Some("true"))], "the repeat wrote nothing");

    let e = review(&app, &[&uuid::Uuid::now_v7().to_string()], pb::ReviewDecision::Approve).await.expect_err("unknown");
    assert_error(&e, Code::NotFound, "NOT_FOUND", Some("conversion_ids"));
    let e = review(&app, &[&cs[1].id, &cs[1].id], pb::ReviewDecision::Approve).await.expect_err("twice");
    assert_error(&e, Code::InvalidArgument, "INVALID_ARGUMENT", Some("conversion_ids[1]"));
    let e = review(&app, &[&cs[1].id], pb::ReviewDecision::Unspecified).await.expect_err("no decision");
    assert_error(&e, Code::InvalidArgument, "INVALID_ARGUMENT", Some("decision"));

    // --reward-flagged deny: flagged conversions reward nobody.
    let mut args = LOOP.to_vec();
    args.extend(["--abuse-ip-reuse", "flag", "--reward-flagged", "deny"]);
    let deny = TestApp::spawn_with(&args).await;
    let cs = flagged_conversions(&deny, 2).await;
    assert_eq!((state(&cs[0]), state(&cs[1])), (RewardState::Granted as i32, RewardState::Denied as i32));
    assert_eq!(unspent(&deny, "alice", "reward:activated").await, 1);
}

#[tokio::test]
async fn the_cli_records_voids_and_reviews_conversions() {
    use crate::admin_cli::{admin, stdout};
    let app = TestApp::spawn_with(&held_args()).await;
    let code = app.mint_one("alice").await.code;
    app.redeem(&code, "bob").await.expect("redeem");
    let args = ["conversions", "record", "--user", "bob", "--kind", "activated", "--value", "7", "--output", "json"];
    let v: serde_json::Value = serde_json::from_str(&stdout(&admin(&app, None, &args).await)).expect("json");
    assert_eq!((v["created"].as_bool(), v["conversions"][0]["inviter_id"].as_str()), (Some(true), Some("alice")));
    assert_eq!(
        (v["conversions"][0]["value"].as_i64(), v["conversions"][0]["reward"]["state"].as_str()),
        (Some(7), Some("pending"))
    );
    let id = v["conversions"][0]["id"].as_str().expect("id").to_owned();
    let out = stdout(&admin(&app, None, &["conversions", "void", "--conversion", &id, "--reason", "refund"]).await);
    assert!(out.contains("changed: true") && out.contains("reward voided"), "{out}");
    let out = stdout(&admin(&app, None, &["conversions", "review", "--conversion", &id, "--approve"]).await);
    assert!(out.contains("changed_count: 0"), "voided, not in review: {out}");

    // admin stats shows the conversions section; --kind ranks by one kind.
    let carol = app.mint_one("carol").await.code;
    app.redeem(&carol, "dave").await.expect("redeem");
    let args = ["conversions", "record", "--user", "dave", "--kind", "activated", "--value", "5"];
    admin(&app, None, &args).await;
    let out = stdout(&admin(&app, None, &["stats", "--kind", "activated", "--converted-within", "1d"]).await);
    assert!(out.contains("Conversions by label:\n  \"\"\n      activated: 1 of 2 redeemed (50.0%)"), "{out}");
    assert!(out.contains("Top converters (conversions in the window):\n    1. carol  1\n"), "{out}");
    assert!(out.contains("Rewards: recorded 2  unattributed 0  pending 1  review 0  granted 0  voided 1"), "{out}");
    let args = ["stats", "--kind", "paid", "--output", "json"];
    let v: serde_json::Value = serde_json::from_str(&stdout(&admin(&app, None, &args).await)).expect("json");
    let c = &v["conversions"];
    assert_eq!(c["top_converters"], serde_json::json!([]), "nobody converted with paid");
    assert_eq!((c["rewards"]["recorded"].as_i64(), c["rewards"]["voided"].as_i64()), (Some(2), Some(1)));
    let label = &c["by_label"][0];
    assert_eq!(
        (label["kind"].as_str(), label["converted"].as_i64(), label["value"].as_i64()),
        (Some("activated"), Some(1), Some(5))
    );
}
