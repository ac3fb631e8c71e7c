//! RecordConversion: attribution to the invitation a member joined
//! through, once per member and kind, bad input that changes nothing, the
//! seed-1 loop's rewards (with the quota policies on) and the events
//! through a real nats-server.

use invitations::pb;
use invitations::pb::conversion_reward::State as RewardState;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, member};

pub const KINDS: [&str; 2] = ["--conversion-kinds", "activated,paid"];

pub fn record_request(user: &str, kind: &str) -> pb::RecordConversionRequest {
    pb::RecordConversionRequest { user_id: user.into(), kind: kind.into(), ..Default::default() }
}

pub async fn record(app: &TestApp, user: &str, kind: &str) -> Result<pb::RecordConversionResponse, tonic::Status> {
    app.client.clone().record_conversion(record_request(user, kind)).await.map(tonic::Response::into_inner)
}

pub async fn converted(app: &TestApp, user: &str, kind: &str) -> pb::Conversion {
    record(app, user, kind).await.expect("record").conversion.expect("conversion")
}

/// Unspent invitations of `user` with `label` (all labels when empty).
pub async fn unspent(app: &TestApp, user: &str, label: &str) -> usize {
    let request = pb::ListForUserRequest {
        user_id: user.into(),
        state: pb::invitation::State::Unspent as i32,
        page_size: 500,
        ..Default::default()
    };
    let page = app.list(request).await.expect("list");
    page.invitations.iter().filter(|i| label.is_empty() || i.label == label).count()
}

#[tokio::test]
async fn a_conversion_is_attributed_to_the_invitation_and_recorded_once_per_kind() {
    let app = TestApp::spawn_with(&KINDS).await;
    let minted = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], label: "spring".into(), ..Default::default() })
        .await
        .expect("mint");
    let inv = &minted.invitations[0];
    let redeemed = app.redeem(&inv.code, "bob").await.expect("redeem");

    let at = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 };
    let request =
        pb::RecordConversionRequest { occur_time: Some(at), value: Some(1250), ..record_request("bob", "paid") };
    let first = app.client.clone().record_conversion(request.clone()).await.expect("record").into_inner();
    assert!(first.created);
    let c = first.conversion.expect("conversion");
    assert_eq!((c.user_id.as_str(), c.kind.as_str()), ("bob", "paid"));
    assert_eq!((c.invitation_id.as_str(), c.inviter_id.as_str()), (inv.id.as_str(), "alice"));
    assert_eq!((c.batch_id.as_str(), c.label.as_str()), (minted.batch_id.as_str(), "spring"));
    assert_eq!((c.occur_time, c.value), (Some(at), Some(1250)));
    assert_eq!(c.redeem_time, redeemed.redeem_time);
    assert_eq!(c.reward.as_ref().expect("reward").state, RewardState::None as i32, "no rule: no reward");

    // A repeat (even with other details) returns the first, unchanged.
    let again = pb::RecordConversionRequest { value: Some(9), ..record_request("bob", "paid") };
    let repeat = app.client.clone().record_conversion(again).await.expect("repeat").into_inner();
    assert!(!repeat.created);
    assert_eq!(repeat.conversion.expect("conversion"), c);
    // Another kind is another conversion.
    let activated = converted(&app, "bob", "activated").await;
    assert_ne!(activated.id, c.id);
    assert_eq!(activated.value, None);
    assert!(activated.occur_time.is_some(), "defaults to now");
    assert_eq!(app.count("conversions").await, 2);

    // The inviter's own view: which of its invitations brought active members.
    let other = app.mint_one("alice").await;
    let page = app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    let kinds: Vec<(String, Vec<String>)> =
        page.invitations.iter().map(|i| (i.id.clone(), i.converted_kinds.clone())).collect();
    let want = vec![(other.id, vec![]), (inv.id.clone(), vec!["activated".to_owned(), "paid".to_owned()])];
    assert_eq!(kinds, want);
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let app = TestApp::spawn_with(&KINDS).await;
    app.register(vec![member("founder", Some(1_600_000_000), None)]).await.expect("register");
    let future = prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 };
    let cases = [
        (record_request("nobody", "activated"), Code::NotFound, "NOT_FOUND", Some("user_id")),
        (record_request("founder", "played"), Code::InvalidArgument, "INVALID_ARGUMENT", Some("kind")),
        (record_request("founder", "Activated"), Code::InvalidArgument, "INVALID_ARGUMENT", Some("kind")),
        (record_request("", "activated"), Code::InvalidArgument, "INVALID_ARGUMENT", Some("user_id")),
        (
            pb::RecordConversionRequest { value: Some(-1), ..record_request("founder", "paid") },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            Some("value"),
        ),
        (
            pb::RecordConversionRequest { occur_time: Some(future), ..record_request("founder", "paid") },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            Some("occur_time"),
        ),
    ];
    for (request, code, reason, field) in cases {
        let e = app.client.clone().record_conversion(request).await.expect_err("refused");
        assert_error(&e, code, reason, field);
    }
    assert_eq!((app.count("conversions").await, app.count("outbox").await), (0, 0));

    // A member who joined without an invitation converts, attributed to nobody.
    let c = converted(&app, "founder", "activated").await;
    assert_eq!((c.invitation_id.as_str(), c.inviter_id.as_str(), c.batch_id.as_str()), ("", "", ""));

    // With no kinds configured, conversions are off, and say so.
    let off = TestApp::spawn().await;
    off.register(vec![member("founder", Some(1_600_000_000), None)]).await.expect("register");
    let e = record(&off, "founder", "activated").await.expect_err("off");
    assert_error(&e, Code::FailedPrecondition, "CONVERSIONS_DISABLED", None);
}

#[tokio::test]
async fn a_request_id_replays_the_first_answer_and_refuses_another_request() {
    let app = TestApp::spawn_with(&KINDS).await;
    let code = app.mint_one("alice").await.code;
    app.redeem(&code, "bob").await.expect("redeem");
    let request = pb::RecordConversionRequest { request_id: "conv-1".into(), ..record_request("bob", "activated") };
    let first = app.client.clone().record_conversion(request.clone()).await.expect("record").into_inner();
    let replay = app.client.clone().record_conversion(request).await.expect("replay").into_inner();
    assert_eq!(first, replay);
    assert!(replay.created, "the first answer, byte for byte");
    let other = pb::RecordConversionRequest { request_id: "conv-1".into(), ..record_request("bob", "paid") };
    let e = app.client.clone().record_conversion(other).await.expect_err("reused");
    assert_error(&e, Code::InvalidArgument, "REQUEST_ID_REUSED", None);
    assert_eq!(app.count("conversions").await, 1);
}

pub const LOOP: [&str; 4] = ["--conversion-kinds", "activated", "--reward-rule", "activated=1:1"];

#[tokio::test]
async fn the_seed_1_loop_rewards_both_sides_with_the_quota_policies_on() {
    let mut args = LOOP.to_vec();
    args.extend(["--refill-to", "5", "--welcome-grant", "2"]);
    let app = TestApp::spawn_with(&args).await;
    let codes: Vec<String> = app.mint_for("alice", 5).await.into_iter().map(|i| i.code).collect();
    app.redeem(&codes[0], "bob").await.expect("redeem");
    // The quotas: alice topped back up to 5, bob welcomed with 2.
    assert_eq!((unspent(&app, "alice", "").await, unspent(&app, "bob", "").await), (5, 2));

    let c = converted(&app, "bob", "activated").await;
    let reward = c.reward.expect("reward");
    assert_eq!(reward.state, RewardState::Granted as i32);
    assert_eq!((reward.inviter_count, reward.member_count, reward.inviter_capped), (1, 1, false));
    assert_ne!(reward.inviter_batch_id, reward.member_batch_id);
    // Both sides got one more, labelled by the kind.
    assert_eq!((unspent(&app, "alice", "").await, unspent(&app, "bob", "").await), (6, 3));
    assert_eq!(unspent(&app, "alice", "reward:activated").await, 1);
    assert_eq!(unspent(&app, "bob", "reward:activated").await, 1);
    // A repeat rewards nobody again.
    assert!(!record(&app, "bob", "activated").await.expect("repeat").created);
    assert_eq!((unspent(&app, "alice", "").await, unspent(&app, "bob", "").await), (6, 3));

    // The reward is an ordinary invitation: bob's brings carol in.
    let page = app.list(pb::ListForUserRequest { user_id: "bob".into(), ..Default::default() }).await.expect("list");
    let reward_code = page.invitations.iter().find(|i| i.label == "reward:activated").expect("reward").code.clone();
    let carol = app.redeem(&reward_code, "carol").await.expect("redeem the reward");
    assert_eq!((carol.inviter_id.as_str(), carol.batch_id.as_str()), ("bob", reward.member_batch_id.as_str()));

    // Nobody to reward without an inviter; a member with invite privileges
    // disabled gets nothing, its inviter still does.
    app.register(vec![member("founder", Some(1_600_000_000), None)]).await.expect("register");
    let c = converted(&app, "founder", "activated").await;
    assert_eq!(c.reward.expect("reward").state, RewardState::None as i32);
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "carol".into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
    let c = converted(&app, "carol", "activated").await;
    let reward = c.reward.expect("reward");
    assert_eq!((reward.inviter_count, reward.member_count), (1, 0));
    // Bob's first reward brought carol in; carol's conversion gave a new one.
    assert_eq!(unspent(&app, "bob", "reward:activated").await, 1);
    assert_eq!(unspent(&app, "carol", "").await, 2, "the welcome grant only");
}

#[tokio::test]
async fn conversions_and_rewards_are_announced_through_nats() {
    use crate::events::{WAIT, assert_unique, outbox_rows, relay_args, spawn, wait_relay};
    use pb::invitation_event::Event as Payload;
    use tonic_health::pb::health_check_response::ServingStatus;

    let nats = crate::nats::NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.extend(LOOP.iter().map(|s| s.to_string()));
    let app = spawn(args, None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let consumer = nats.consumer().await;
    let inv = app.mint_one("alice").await;
    app.redeem(&inv.code, "bob").await.expect("redeem");
    let at = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5_000 };
    let request =
        pb::RecordConversionRequest { occur_time: Some(at), value: Some(0), ..record_request("bob", "activated") };
    let c = app.client.clone().record_conversion(request).await.expect("record").into_inner().conversion.expect("c");
    let reward = c.reward.clone().expect("reward");
    app.register(vec![member("founder", Some(1_600_000_000), None)]).await.expect("register");
    let unattributed = converted(&app, "founder", "activated").await;

    let (rows, _) = outbox_rows(&app).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    assert_unique(&events);
    let of = |kind: &str| events.iter().filter(|e| e.kind() == kind).collect::<Vec<_>>();
    let converted_events = of("converted");
    assert_eq!(converted_events.len(), 2);
    let find = |id: &str| {
        converted_events
            .iter()
            .find_map(|e| match e.payload() {
                Payload::Converted(c) if c.conversion_id == id => Some((c.clone(), e.subject.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no converted event for {id}"))
    };
    let (e, subject) = find(&c.id);
    let want = pb::Converted {
        conversion_id: c.id.clone(),
        user_id: "bob".into(),
        kind: "activated".into(),
        occur_time: Some(at),
        value: Some(0),
        invitation_id: inv.id.clone(),
        inviter_id: "alice".into(),
        batch_id: inv.batch_id.clone(),
        label: String::new(),
    };
    assert_eq!((e, subject.as_str()), (want, "invitations.v1.converted"));
    let (e, _) = find(&unattributed.id);
    assert_eq!((e.user_id.as_str(), e.inviter_id.as_str(), e.invitation_id.as_str()), ("founder", "", ""));

    let granted = of("reward.granted");
    assert_eq!(granted.len(), 1, "only the attributed conversion rewards");
    let Payload::RewardGranted(g) = granted[0].payload() else { panic!("a reward.granted event") };
    let want = pb::RewardGranted {
        conversion_id: c.id.clone(),
        kind: "activated".into(),
        user_id: "bob".into(),
        inviter_id: "alice".into(),
        inviter_count: 1,
        member_count: 1,
        inviter_batch_id: reward.inviter_batch_id.clone(),
        member_batch_id: reward.member_batch_id.clone(),
        inviter_capped: false,
    };
    assert_eq!(g, &want);
    // The rewards' invitations are announced like any mint.
    let mut reward_batches: Vec<(String, String)> = of("minted")
        .into_iter()
        .filter_map(|e| match e.payload() {
            Payload::Minted(m) if m.label == "reward:activated" => {
                Some((m.batch_id.clone(), m.grants[0].inviter_id.clone()))
            }
            _ => None,
        })
        .collect();
    reward_batches.sort();
    let mut expected = vec![(reward.inviter_batch_id, "alice".to_owned()), (reward.member_batch_id, "bob".to_owned())];
    expected.sort();
    assert_eq!(reward_batches, expected);

    // A refund voids it: what it granted, still unspent, is revoked, and
    // reward.voided says which invitations.
    let request =
        pb::VoidConversionRequest { conversion_id: c.id.clone(), reason: "refund".into(), ..Default::default() };
    let voided = app.client.clone().void_conversion(request).await.expect("void").into_inner();
    assert_eq!((voided.changed, voided.revoked_count, voided.kept_count), (true, 2, 0));
    let voided_by = voided.conversion.and_then(|c| c.reward).expect("reward").voided_by;
    let (rows, _) = outbox_rows(&app).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    assert_unique(&events);
    let of = |kind: &str| events.iter().filter(|e| e.kind() == kind).collect::<Vec<_>>();
    let voided_events = of("reward.voided");
    assert_eq!(voided_events.len(), 1);
    let Payload::RewardVoided(v) = voided_events[0].payload() else { panic!("a reward.voided event") };
    let reward_ids: std::collections::HashSet<String> = of("minted")
        .into_iter()
        .filter_map(|e| match e.payload() {
            Payload::Minted(m) if m.label == "reward:activated" => Some(m.grants[0].invitation_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(reward_ids.len(), 2);
    let revoked: std::collections::HashSet<String> = v.revoked_invitation_ids.iter().cloned().collect();
    assert_eq!(revoked, reward_ids, "both reward invitations, unspent, revoked");
    let want = pb::RewardVoided {
        conversion_id: c.id.clone(),
        kind: "activated".into(),
        user_id: "bob".into(),
        inviter_id: "alice".into(),
        was_pending: false,
        revoked_invitation_ids: v.revoked_invitation_ids.clone(),
        kept_count: 0,
        reason: "refund".into(),
        voided_by,
    };
    assert_eq!((v, voided_events[0].subject.as_str()), (&want, "invitations.v1.reward.voided"));
}
