//! The waitlist over real gRPC on real Postgres: joining, positions against
//! a model, review, admission and the invitation bound to its applicant.
//! Races are in `waitlist_races`, screening and events in
//! `waitlist_screening`.

use invitations::pb;
use invitations::pb::waitlist_entry::State;

use crate::helpers::{TestApp, assert_error, member};
use crate::reservations::reserve;

pub async fn join(app: &TestApp, applicant: &str, referrer: &str) -> Result<pb::JoinWaitlistResponse, tonic::Status> {
    let request =
        pb::JoinWaitlistRequest { applicant_id: applicant.into(), referrer: referrer.into(), ..Default::default() };
    app.client.clone().join_waitlist(request).await.map(|r| r.into_inner())
}

pub async fn joined(app: &TestApp, applicant: &str, referrer: &str) -> pb::WaitlistEntry {
    join(app, applicant, referrer).await.expect("join").entry.expect("an entry")
}

pub async fn entry(app: &TestApp, applicant: &str) -> Result<pb::WaitlistEntry, tonic::Status> {
    let request = pb::GetWaitlistEntryRequest { applicant_id: applicant.into(), ..Default::default() };
    app.client.clone().get_waitlist_entry(request).await.map(|r| r.into_inner().entry.expect("an entry"))
}

pub fn admit_request(count: u32) -> pb::AdmitFromWaitlistRequest {
    pb::AdmitFromWaitlistRequest { count, ..Default::default() }
}

pub async fn admit(app: &TestApp, request: pb::AdmitFromWaitlistRequest) -> pb::AdmitFromWaitlistResponse {
    app.client.clone().admit_from_waitlist(request).await.expect("admit").into_inner()
}

pub async fn review(
    app: &TestApp,
    ids: &[&str],
    decision: pb::ReviewDecision,
) -> Result<pb::ReviewWaitlistEntriesResponse, tonic::Status> {
    let request = pb::ReviewWaitlistEntriesRequest {
        entry_ids: ids.iter().map(|s| s.to_string()).collect(),
        decision: decision as i32,
        reason: "looks good".into(),
        reviewed_by: "mod-1".into(),
    };
    app.client.clone().review_waitlist_entries(request).await.map(|r| r.into_inner())
}

/// Positions as the model says: join order moved up by the capped bump.
fn model_positions(entries: &[(u64, u64)]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].0 as i64 - entries[i].1 as i64, entries[i].0));
    let mut positions = vec![0; entries.len()];
    for (place, i) in order.into_iter().enumerate() {
        positions[i] = place as u64 + 1;
    }
    positions
}

#[tokio::test]
async fn positions_after_joins_and_bumps_follow_the_model() {
    let app = TestApp::spawn_with(&["--waitlist-referral-bump", "3", "--waitlist-max-bump", "7"]).await;
    // (seq, bump) per applicant, and the handles.
    let mut model: Vec<(u64, u64)> = Vec::new();
    let mut handles: Vec<String> = Vec::new();
    let mut referrals = vec![0u64; 0];
    // A fixed pseudo-random sequence of referrers (None: no referrer).
    let mut x: u64 = 12345;
    for i in 0..40 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let referrer =
            if i > 0 && !(x >> 33).is_multiple_of(3) { Some(((x >> 40) as usize) % handles.len()) } else { None };
        let handle = referrer.map(|r| handles[r].clone()).unwrap_or_default();
        let e = joined(&app, &format!("applicant-{i}"), &handle).await;
        assert_eq!(e.state, State::Waiting as i32);
        model.push((i as u64 + 1, 0));
        referrals.push(0);
        handles.push(e.referral_handle.clone());
        if let Some(r) = referrer {
            referrals[r] += 1;
            model[r].1 = (referrals[r] * 3).min(7);
        }
        let want = model_positions(&model);
        assert_eq!(e.position, want[i], "the new entry's position after join {i}");
    }
    let want = model_positions(&model);
    for (i, want) in want.iter().enumerate() {
        let e = entry(&app, &format!("applicant-{i}")).await.expect("get");
        assert_eq!(e.position, *want, "applicant-{i}");
        assert_eq!(e.referrals as u64, referrals[i], "applicant-{i}");
        assert_eq!(e.bump, model[i].1, "applicant-{i}");
    }
    // Admission takes the top of the line; the rest move up.
    let admitted = admit(&app, admit_request(3)).await;
    assert_eq!(admitted.admitted_count, 3);
    let top: Vec<usize> = (0..model.len()).filter(|&i| want[i] <= 3).collect();
    let got: Vec<String> = admitted.entries.iter().map(|e| e.applicant_id.clone()).collect();
    assert_eq!(got, {
        let mut t = top.clone();
        t.sort_by_key(|&i| want[i]);
        t.iter().map(|i| format!("applicant-{i}")).collect::<Vec<_>>()
    });
    for (i, before) in want.iter().enumerate() {
        let e = entry(&app, &format!("applicant-{i}")).await.expect("get");
        if top.contains(&i) {
            assert_eq!(e.state, State::Admitted as i32);
            assert_eq!(e.position, 0);
        } else {
            assert_eq!(e.position, before - 3, "applicant-{i} moves up by the three admitted");
        }
    }
}

#[tokio::test]
async fn an_admitted_applicant_redeems_under_its_referrer_and_nobody_else_can() {
    let app = TestApp::spawn_with(&["--waitlist-review", "required", "--waitlist-redeem-bump", "5"]).await;
    app.register(vec![member("alice", None, None)]).await.expect("register");
    let first = joined(&app, "first", "").await;
    let by_alice = joined(&app, "friend-of-alice", "alice").await;
    let by_first = joined(&app, "friend-of-first", &first.referral_handle).await;
    // Review required: only the approved are admitted.
    let none = admit(&app, admit_request(5)).await;
    assert_eq!((none.admitted_count, none.exhausted), (0, true));
    let reviewed = review(&app, &[&by_alice.id, &by_first.id], pb::ReviewDecision::Approve).await.expect("review");
    assert_eq!(reviewed.changed_count, 2);
    assert!(reviewed.entries.iter().all(|e| e.state == State::Approved as i32 && e.reviewed_by == "mod-1"));
    let wave = admit(&app, pb::AdmitFromWaitlistRequest { label: "wave-1".into(), ..admit_request(5) }).await;
    assert_eq!((wave.admitted_count, wave.exhausted), (2, true), "admits what there is and says so");
    let invitation_of = |applicant: &str| {
        wave.entries.iter().find(|e| e.applicant_id == applicant).and_then(|e| e.invitation.clone()).expect("admitted")
    };
    let alice_inv = invitation_of("friend-of-alice");
    assert_eq!(alice_inv.inviter_id, "alice", "a member referrer becomes the inviter");
    let first_inv = invitation_of("friend-of-first");
    assert_eq!(first_inv.inviter_id, "", "a referrer who is not a member: unowned");
    assert!(!alice_inv.code.is_empty() && alice_inv.link.contains(&alice_inv.code));

    // CheckCode says it is bound to an applicant (never which one).
    let check = app.check(&alice_inv.code).await;
    assert!(check.redeemable && check.bound_to_applicant);
    assert!(!app.check(&app.mint_one("zed").await.code).await.bound_to_applicant, "an ordinary invitation");
    // Somebody else: refused on the one-statement path and on the general
    // path (a request_id takes it), and nothing is spent.
    let err = app.redeem(&alice_inv.code, "mallory").await.expect_err("bound");
    assert_error(&err, tonic::Code::FailedPrecondition, "APPLICANT_MISMATCH", None);
    let general = pb::RedeemRequest {
        code: alice_inv.code.clone(),
        invitee_id: "mallory".into(),
        request_id: "r-1".into(),
        ..Default::default()
    };
    let err = app.redeem_req(general).await.expect_err("bound");
    assert_error(&err, tonic::Code::FailedPrecondition, "APPLICANT_MISMATCH", None);
    assert!(app.check(&alice_inv.code).await.redeemable, "still unspent");

    // The applicant redeems and appears under alice.
    let redeemed = app.redeem(&alice_inv.code, "friend-of-alice").await.expect("redeem");
    assert_eq!(redeemed.inviter_id, "alice");
    let graph = app
        .graph(pb::GetInviteGraphRequest { user_id: "friend-of-alice".into(), ..Default::default() })
        .await
        .expect("graph");
    let ancestors: Vec<&str> = graph.ancestors.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ancestors, ["alice"]);
    let after = entry(&app, "friend-of-alice").await.expect("get");
    assert!(after.invitation.and_then(|i| i.redeem_time).is_some());

    // The unowned one, on the general path; its referrer entry moves up.
    let before = entry(&app, "first").await.expect("get");
    let general = pb::RedeemRequest {
        code: first_inv.code.clone(),
        invitee_id: "friend-of-first".into(),
        request_id: "r-2".into(),
        ..Default::default()
    };
    app.redeem_req(general).await.expect("redeem");
    let after = entry(&app, "first").await.expect("get");
    assert_eq!((before.redeemed_referrals, after.redeemed_referrals), (0, 1));
    assert_eq!(after.bump, before.bump + 5);
    // GetStats' waitlist section.
    let stats = app.client.clone().get_stats(pb::GetStatsRequest::default()).await.expect("stats").into_inner();
    let w = stats.waitlist.expect("a waitlist section");
    assert_eq!((w.waiting, w.joined, w.admitted, w.reviewed), (1, 3, 2, 2));
    assert_eq!((w.approval_rate, w.admitted_redeemed, w.admitted_redeemed_rate), (1.0, 2, 1.0));
    assert!(w.median_wait.is_some());
    assert_eq!(w.by_day.iter().map(|d| (d.joined, d.admitted)).fold((0, 0), |a, d| (a.0 + d.0, a.1 + d.1)), (3, 2));
    let mut referrers: Vec<(String, i64)> = w.top_referrers.into_iter().map(|r| (r.referrer, r.referrals)).collect();
    referrers.sort();
    assert_eq!(referrers, [("alice".to_string(), 1), ("first".to_string(), 1)]);
    // A member who never joined the waitlist is refused.
    let err = join(&app, "alice", "").await.expect_err("a member");
    assert_error(&err, tonic::Code::FailedPrecondition, "ALREADY_MEMBER", None);
}

#[tokio::test]
async fn joining_twice_returns_the_same_entry_and_bad_input_names_the_field() {
    let app = TestApp::spawn().await;
    let first = join(&app, "ann", "").await.expect("join");
    let again = join(&app, "ann", "").await.expect("join again");
    assert!(first.created && !again.created);
    assert_eq!(first.entry.as_ref().map(|e| &e.id), again.entry.as_ref().map(|e| &e.id));
    let id = first.entry.expect("entry").id;
    let by_id = pb::GetWaitlistEntryRequest { entry_id: id.clone(), ..Default::default() };
    assert_eq!(
        app.client
            .clone()
            .get_waitlist_entry(by_id)
            .await
            .expect("get")
            .into_inner()
            .entry
            .expect("entry")
            .applicant_id,
        "ann"
    );

    let bad = |r: pb::JoinWaitlistRequest| {
        let mut client = app.client.clone();
        async move { client.join_waitlist(r).await.expect_err("invalid") }
    };
    let invalid = tonic::Code::InvalidArgument;
    let err = bad(pb::JoinWaitlistRequest::default()).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("applicant_id"));
    let base = pb::JoinWaitlistRequest { applicant_id: "bob".into(), ..Default::default() };
    let err = bad(pb::JoinWaitlistRequest { reason: "x".repeat(1025), ..base.clone() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("reason"));
    let err = bad(pb::JoinWaitlistRequest { client_ip: "not-an-ip".into(), ..base.clone() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("client_ip"));
    let err = bad(pb::JoinWaitlistRequest { email: "no-at-sign".into(), ..base.clone() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("email"));
    let err = bad(pb::JoinWaitlistRequest { referrer: "\u{202e}x".into(), ..base.clone() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("referrer"));
    let err = join(&app, "bob", "no-such-handle").await.expect_err("unknown referrer");
    assert_error(&err, tonic::Code::NotFound, "NOT_FOUND", Some("referrer"));

    let get = |r: pb::GetWaitlistEntryRequest| {
        let mut client = app.client.clone();
        async move { client.get_waitlist_entry(r).await.expect_err("refused") }
    };
    let err = get(pb::GetWaitlistEntryRequest::default()).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("entry_id"));
    let err = get(pb::GetWaitlistEntryRequest { entry_id: "nope".into(), ..Default::default() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("entry_id"));
    let err = get(pb::GetWaitlistEntryRequest { entry_id: id, applicant_id: "ann".into() }).await;
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("applicant_id"));
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = get(pb::GetWaitlistEntryRequest { entry_id: unknown.clone(), ..Default::default() }).await;
    assert_error(&err, tonic::Code::NotFound, "NOT_FOUND", Some("entry_id"));
    let err = entry(&app, "nobody").await.expect_err("unknown");
    assert_error(&err, tonic::Code::NotFound, "NOT_FOUND", Some("applicant_id"));

    let err = review(&app, &[], pb::ReviewDecision::Approve).await.expect_err("empty");
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("entry_ids"));
    let err = review(&app, &["x"], pb::ReviewDecision::Approve).await.expect_err("bad id");
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("entry_ids[0]"));
    let err = review(&app, &[&unknown], pb::ReviewDecision::Unspecified).await.expect_err("no decision");
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("decision"));
    let err = review(&app, &[&unknown], pb::ReviewDecision::Reject).await.expect_err("unknown");
    assert_error(&err, tonic::Code::NotFound, "NOT_FOUND", Some("entry_ids"));

    let mut client = app.client.clone();
    let err = client.admit_from_waitlist(admit_request(0)).await.expect_err("count 0");
    assert_error(&err, invalid, "INVALID_ARGUMENT", Some("count"));
    let ttl = prost_types::Duration { seconds: -1, nanos: 0 };
    let err = client.admit_from_waitlist(pb::AdmitFromWaitlistRequest { ttl: Some(ttl), ..admit_request(1) }).await;
    assert_error(&err.expect_err("bad ttl"), invalid, "INVALID_ARGUMENT", Some("ttl"));
    let err = client.admit_from_waitlist(pb::AdmitFromWaitlistRequest { order: 9, ..admit_request(1) }).await;
    assert_error(&err.expect_err("bad order"), invalid, "INVALID_ARGUMENT", Some("order"));
}

#[tokio::test]
async fn review_refuses_admitted_entries_and_rejected_applicants_wait_to_reapply() {
    let app = TestApp::spawn().await;
    let a = joined(&app, "a", "").await;
    let b = joined(&app, "b", "").await;
    let dry = admit(&app, pb::AdmitFromWaitlistRequest { dry_run: true, ..admit_request(1) }).await;
    assert!(dry.dry_run && dry.admitted_count == 0 && dry.batch_id.is_empty());
    assert_eq!(dry.entries.iter().map(|e| e.applicant_id.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(entry(&app, "a").await.expect("get").state, State::Waiting as i32, "a dry run admits nobody");
    let wave = admit(&app, admit_request(1)).await;
    assert_eq!(wave.entries[0].id, a.id);

    // All or nothing: an admitted entry in the batch refuses the batch.
    let err = review(&app, &[&b.id, &a.id], pb::ReviewDecision::Reject).await.expect_err("admitted");
    assert_error(&err, tonic::Code::FailedPrecondition, "ALREADY_ADMITTED", None);
    assert_eq!(entry(&app, "b").await.expect("get").state, State::Waiting as i32, "b unchanged");

    let rejected = review(&app, &[&b.id], pb::ReviewDecision::Reject).await.expect("reject");
    let b_now = &rejected.entries[0];
    assert_eq!((b_now.state, b_now.position), (State::Rejected as i32, 0));
    assert_eq!(b_now.review_reason, "looks good");
    assert!(b_now.reapply_time.is_some());
    let again = review(&app, &[&b.id], pb::ReviewDecision::Reject).await.expect("reject again");
    assert_eq!(again.changed_count, 0, "the same decision changes nothing");
    let err = join(&app, "b", "").await.expect_err("too soon");
    assert_error(&err, tonic::Code::FailedPrecondition, "REAPPLY_TOO_SOON", None);
    // Nobody else is in the line: b is not admitted.
    assert_eq!(admit(&app, admit_request(1)).await.admitted_count, 0);
}

#[tokio::test]
async fn a_rejected_applicant_rejoins_at_the_back_after_the_reapply_time() {
    let app = TestApp::spawn_with(&["--waitlist-reapply-after", "0s"]).await;
    let b = joined(&app, "b", "").await;
    joined(&app, "c", "").await;
    review(&app, &[&b.id], pb::ReviewDecision::Reject).await.expect("reject");
    let back = join(&app, "b", "").await.expect("rejoin");
    let e = back.entry.expect("entry");
    assert!(back.created);
    assert_eq!((e.id, e.state, e.position), (b.id, State::Waiting as i32, 2));
}

#[tokio::test]
async fn an_applicant_bound_invitation_is_held_and_completed_only_by_its_applicant() {
    let app = TestApp::spawn().await;
    joined(&app, "ann", "").await;
    let wave = admit(&app, admit_request(1)).await;
    let inv = wave.entries[0].invitation.clone().expect("admitted");
    let check = app.check(&inv.code).await;
    assert_eq!((check.binding, check.bound_to_applicant), (pb::Binding::Applicant as i32, true));
    let hold =
        |invitee: &str| pb::ReserveRequest { code: inv.code.clone(), invitee_id: invitee.into(), ..Default::default() };
    // Nobody named, or somebody else: refused, nothing held.
    for who in ["", "mallory"] {
        let err = reserve(&app, hold(who)).await.expect_err("bound to ann");
        assert_error(&err, tonic::Code::FailedPrecondition, "APPLICANT_MISMATCH", None);
    }
    let err = reserve(&app, hold(&"a".repeat(129))).await.expect_err("too long");
    assert_error(&err, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("invitee_id"));
    assert_eq!(app.count("reservations").await, 0);
    // Ann holds it; completing the hold as somebody else is refused too.
    let held = reserve(&app, hold("ann")).await.expect("ann holds it");
    let complete = |invitee: &str| pb::RedeemRequest {
        reservation_id: held.id.clone(),
        invitee_id: invitee.into(),
        ..Default::default()
    };
    let err = app.redeem_req(complete("mallory")).await.expect_err("bound to ann");
    assert_error(&err, tonic::Code::FailedPrecondition, "APPLICANT_MISMATCH", None);
    let redeemed = app.redeem_req(complete("ann")).await.expect("ann completes it");
    assert_eq!(redeemed.uses, 1);
    assert!(entry(&app, "ann").await.expect("get").invitation.and_then(|i| i.redeem_time).is_some());
    // An ordinary invitation ignores invitee_id on Reserve.
    let plain = app.mint_one("zed").await;
    let ordinary = pb::ReserveRequest { code: plain.code, invitee_id: "anyone".into(), ..Default::default() };
    reserve(&app, ordinary).await.expect("unbound");
}

/// Migration 0064 binds invitations admitted before the binding kind
/// existed; its statement, run again on an invitation whose binding is
/// cleared, must produce the digest the service checks.
#[tokio::test]
async fn the_backfill_binds_earlier_admissions_as_the_service_checks_them() {
    let app = TestApp::spawn_with(&["--waitlist-referral-bump", "5"]).await;
    let referrer = joined(&app, "ref", "").await;
    joined(&app, "bea", &referrer.referral_handle).await;
    let wave = admit(&app, admit_request(2)).await;
    let admitted = wave.entries.iter().find(|e| e.applicant_id == "bea").expect("bea admitted");
    let code = admitted.invitation.clone().expect("admitted").code;
    let pool = app.pool().await;
    sqlx::query("UPDATE invitations SET binding = NULL, binding_digest = NULL").execute(&pool).await.expect("clear");
    let migration = std::fs::read_to_string("migrations/0064_applicant_binding_backfill.sql").expect("migration");
    let backfill = migration.split("DROP TRIGGER").next().expect("the update");
    let bound = sqlx::query(backfill).execute(&pool).await.expect("backfill").rows_affected();
    assert_eq!(bound, 2, "both admitted invitations");
    let err = app.redeem(&code, "mallory").await.expect_err("bound again");
    assert_error(&err, tonic::Code::FailedPrecondition, "APPLICANT_MISMATCH", None);
    let before = entry(&app, "ref").await.expect("get");
    app.redeem(&code, "bea").await.expect("the applicant redeems");
    let after = entry(&app, "ref").await.expect("get");
    assert_eq!(after.redeemed_referrals, before.redeemed_referrals + 1, "the referrer entry is credited");
}

#[tokio::test]
async fn admission_orders_pass_over_new_members_and_carry_ttl_label_and_batch() {
    let app = TestApp::spawn_with(&["--waitlist-referral-bump", "10"]).await;
    for applicant in ["a", "b", "c"] {
        joined(&app, applicant, "").await;
    }
    let late = joined(&app, "late", "").await;
    joined(&app, "friend", &late.referral_handle).await; // "late" moves to the top
    let dry = |order: pb::AdmissionOrder| pb::AdmitFromWaitlistRequest {
        order: order as i32,
        dry_run: true,
        ..admit_request(1)
    };
    let first_of = |r: pb::AdmitFromWaitlistResponse| r.entries[0].applicant_id.clone();
    assert_eq!(first_of(admit(&app, dry(pb::AdmissionOrder::Position)).await), "late");
    assert_eq!(first_of(admit(&app, dry(pb::AdmissionOrder::Oldest)).await), "a");
    let all =
        pb::AdmitFromWaitlistRequest { order: pb::AdmissionOrder::Random as i32, dry_run: true, ..admit_request(10) };
    let mut random: Vec<String> = admit(&app, all).await.entries.into_iter().map(|e| e.applicant_id).collect();
    random.sort();
    assert_eq!(random, ["a", "b", "c", "friend", "late"], "random among every eligible entry");

    // "a" got in through someone else's invitation: admission passes over it
    // rather than minting an invitation nobody can use.
    app.redeem(&app.mint_one("zoe").await.code, "a").await.expect("a joins as a member");
    let request = pb::AdmitFromWaitlistRequest {
        order: pb::AdmissionOrder::Oldest as i32,
        ttl: Some(prost_types::Duration { seconds: 3 * 86_400, nanos: 0 }),
        label: "wave-oldest".into(),
        admitted_by: "ops".into(),
        ..admit_request(2)
    };
    let wave = admit(&app, request).await;
    let admitted: Vec<&str> = wave.entries.iter().map(|e| e.applicant_id.as_str()).collect();
    assert_eq!(admitted, ["b", "c"], "earliest joined first, the new member skipped");
    assert!(!wave.batch_id.is_empty());
    let pool = app.pool().await;
    for e in &wave.entries {
        let inv = e.invitation.as_ref().expect("an invitation");
        let id: uuid::Uuid = inv.id.parse().expect("uuid");
        let (label, batch, by, lifetime): (String, uuid::Uuid, String, f64) = sqlx::query_as(
            "SELECT label, batch_id, minted_by, extract(epoch FROM expire_time - create_time)::float8 \
             FROM invitations WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("the invitation row");
        assert_eq!((label.as_str(), batch.to_string(), by.as_str()), ("wave-oldest", wave.batch_id.clone(), "ops"));
        assert!((lifetime - 3.0 * 86_400.0).abs() < 5.0, "{lifetime}");
        // GetWaitlistEntry hands the product the code and link to deliver.
        let got = entry(&app, &e.applicant_id).await.expect("get");
        assert_eq!(got.state, State::Admitted as i32);
        let delivered = got.invitation.expect("the admitted invitation");
        assert_eq!((delivered.code.as_str(), delivered.link.as_str()), (inv.code.as_str(), inv.link.as_str()));
        assert!(!delivered.code.is_empty() && delivered.link.contains(&delivered.code));
    }
    // …and takes it out of the line (a review by the admission, with its
    // event), so the positions behind it move up.
    let a = entry(&app, "a").await.expect("get");
    assert_eq!(
        (a.state, a.reviewed_by.as_str(), a.review_reason.as_str()),
        (State::Rejected as i32, "admission", "became a member")
    );
    assert_eq!(app.count("outbox WHERE event_type = 'waitlist.reviewed'").await, 1);
    let positions =
        (entry(&app, "late").await.expect("get").position, entry(&app, "friend").await.expect("get").position);
    assert_eq!(positions, (1, 2), "nobody left waiting behind a member");
}

/// Runs one statement on the test's database (a setup step).
async fn run_sql(pool: &sqlx::PgPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Positions in a line of several buckets (1,024 scores each) match a plain
/// ranking, for entries moved up across bucket boundaries too.
#[tokio::test]
async fn positions_across_bucket_boundaries_match_a_full_ranking() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    // 3,000 entries (the trigger keeps the bucket counters), then moves:
    // some up by more than a bucket, some out of the line.
    run_sql(
        &pool,
        "INSERT INTO waitlist_entries (id, applicant_id, referral_handle, bump_cap) \
         SELECT gen_random_uuid(), 'bulk-' || g, 'h-' || g, 5000 FROM generate_series(1, 3000) g",
    )
    .await;
    run_sql(&pool, "UPDATE waitlist_entries SET bump = (seq * 7919) % 1500 WHERE seq % 5 = 0").await;
    run_sql(&pool, "UPDATE waitlist_entries SET state = 'rejected' WHERE seq % 11 = 0").await;
    let ranked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT applicant_id, row_number() OVER (ORDER BY score, seq) FROM waitlist_entries \
         WHERE state IN ('waiting', 'approved')",
    )
    .fetch_all(&pool)
    .await
    .expect("ranking");
    assert!(ranked.len() > 2048, "more than two buckets");
    for (applicant, want) in ranked.iter().step_by(97).chain(ranked.last()) {
        let got = entry(&app, applicant).await.expect("get");
        assert_eq!(got.position, *want as u64, "{applicant}");
    }
    // A new applicant joins at the back, past every bucket.
    let new = joined(&app, "newcomer", "").await;
    assert_eq!(new.position, ranked.len() as u64 + 1);
}

#[tokio::test]
async fn stats_give_the_approval_rate_and_the_median_wait_of_a_constructed_history() {
    let app = TestApp::spawn_with(&["--waitlist-review", "required"]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(joined(&app, &format!("s-{i}"), "").await.id);
    }
    review(&app, &[&ids[0], &ids[1]], pb::ReviewDecision::Approve).await.expect("approve");
    review(&app, &[&ids[2], &ids[3]], pb::ReviewDecision::Reject).await.expect("reject");
    assert_eq!(admit(&app, admit_request(10)).await.admitted_count, 2, "only the approved");
    // Their waits: one hour and three hours (median two).
    let pool = app.pool().await;
    run_sql(
        &pool,
        "UPDATE waitlist_entries SET join_time = admit_time - make_interval(hours => CASE applicant_id \
         WHEN 's-0' THEN 1 ELSE 3 END) WHERE applicant_id IN ('s-0', 's-1')",
    )
    .await;
    let stats = app.client.clone().get_stats(pb::GetStatsRequest::default()).await.expect("stats").into_inner();
    let w = stats.waitlist.expect("a waitlist section");
    assert_eq!((w.joined, w.waiting, w.admitted, w.reviewed), (6, 2, 2, 4));
    assert_eq!(w.approval_rate, 0.5, "two approved of four reviewed (admitted ones count as approved)");
    let median = w.median_wait.expect("a median");
    assert!((median.seconds - 7_200).abs() <= 1, "{median:?}");
    assert_eq!((w.admitted_redeemed, w.admitted_redeemed_rate), (0, 0.0));
}

/// Admission is one transaction: a failure at its last step (the admitted
/// events) leaves no invitation, no batch and no entry admitted, and the
/// next admission admits them.
#[tokio::test]
async fn an_admission_failing_midway_leaves_nothing_behind() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        joined(&app, &format!("c-{i}"), "").await;
    }
    let pool = app.pool().await;
    run_sql(
        &pool,
        "CREATE FUNCTION fail_admitted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.event_type = 'waitlist.admitted' THEN RAISE EXCEPTION 'the disk is full'; END IF; RETURN NEW; END $$",
    )
    .await;
    run_sql(
        &pool,
        "CREATE TRIGGER fail_admitted BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_admitted()",
    )
    .await;
    let admitted_events = "outbox WHERE event_type = 'waitlist.admitted'";
    let before = (app.count("invitations").await, app.count("batches").await, app.count(admitted_events).await);
    let err = app.client.clone().admit_from_waitlist(admit_request(3)).await.expect_err("fails midway");
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert_eq!((app.count("invitations").await, app.count("batches").await, app.count(admitted_events).await), before);
    for i in 0..3 {
        let e = entry(&app, &format!("c-{i}")).await.expect("get");
        assert_eq!((e.state, e.invitation.is_none()), (State::Waiting as i32, true), "c-{i}");
    }
    run_sql(&pool, "DROP TRIGGER fail_admitted ON outbox").await;
    let wave = admit(&app, admit_request(3)).await;
    assert_eq!(wave.admitted_count, 3);
    assert_eq!(app.count("invitations").await, before.0 + 3);
}

/// The fold vacuums a deltas table once it has moved enough deltas out of
/// it (autovacuum would leave the dead rows for every reader to walk).
#[tokio::test]
async fn the_fold_vacuums_the_deltas_it_has_moved() {
    let app = TestApp::spawn_with(&["--graph-fold-interval", "50ms"]).await;
    let pool = app.pool().await;
    let vacuums = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'waitlist_line_deltas'";
    let before: i64 = sqlx::query_scalar(vacuums).fetch_one(&pool).await.expect("stats");
    // 6,000 deltas that add up to nothing: the line's counts stay right.
    run_sql(&pool, "INSERT INTO waitlist_line_deltas SELECT 0, CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, 6000) g").await;
    crate::helpers::wait_until(std::time::Duration::from_secs(30), "a VACUUM of the deltas", || async {
        sqlx::query_scalar::<_, i64>(vacuums).fetch_one(&pool).await.expect("stats") > before
    })
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM waitlist_line_deltas").fetch_one(&pool).await.expect("n");
    assert_eq!(left, 0, "folded");
    assert_eq!(joined(&app, "after", "").await.position, 1, "the counts add up");
}
