//! The waitlist under concurrency, and its cost: concurrent admitters take
//! disjoint sets, concurrent joins through one handle each bump once, and
//! JoinWaitlist and GetWaitlistEntry are one round trip each.

use std::collections::HashSet;

use invitations::pb;
use invitations::pb::waitlist_entry::State;

use crate::helpers::TestApp;
use crate::round_trips::{assert_one_statement, counted, statements};
use crate::waitlist::{admit_request, entry, join, joined};

#[tokio::test]
async fn two_concurrent_admitters_admit_disjoint_sets_whose_union_is_the_top() {
    let app = TestApp::spawn_with(&["--waitlist-referral-bump", "4"]).await;
    let mut handles: Vec<String> = Vec::new();
    for i in 0..30 {
        // Some entries refer others, so position is not join order.
        let referrer = if i % 4 == 3 { handles[i / 2].clone() } else { String::new() };
        let e = joined(&app, &format!("a-{i:02}"), &referrer).await;
        handles.push(e.referral_handle);
    }
    let mut line: Vec<(u64, String)> = Vec::new();
    for i in 0..30 {
        let e = entry(&app, &format!("a-{i:02}")).await.expect("get");
        line.push((e.position, e.applicant_id));
    }
    line.sort();
    let top: HashSet<String> = line.iter().take(16).map(|(_, a)| a.clone()).collect();

    let (mut c1, mut c2) = (app.client.clone(), app.client.clone());
    let (r1, r2) = tokio::join!(c1.admit_from_waitlist(admit_request(8)), c2.admit_from_waitlist(admit_request(8)));
    let (r1, r2) = (r1.expect("admit").into_inner(), r2.expect("admit").into_inner());
    assert_eq!((r1.admitted_count, r2.admitted_count), (8, 8));
    let s1: HashSet<String> = r1.entries.iter().map(|e| e.applicant_id.clone()).collect();
    let s2: HashSet<String> = r2.entries.iter().map(|e| e.applicant_id.clone()).collect();
    assert!(s1.is_disjoint(&s2), "nobody admitted twice: {s1:?} {s2:?}");
    let union: HashSet<String> = s1.union(&s2).cloned().collect();
    assert_eq!(union, top, "together they admitted the top 16");
    let invitations: HashSet<String> =
        r1.entries.iter().chain(&r2.entries).filter_map(|e| e.invitation.as_ref().map(|i| i.id.clone())).collect();
    assert_eq!(invitations.len(), 16, "one invitation each");
    let pool = app.pool().await;
    let admitted: i64 = sqlx::query_scalar("SELECT count(*) FROM waitlist_entries WHERE state = 'admitted'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(admitted, 16);
}

#[tokio::test]
async fn concurrent_joins_through_one_handle_count_every_bump_once() {
    let app = TestApp::spawn_with(&["--waitlist-referral-bump", "1", "--waitlist-max-bump", "1000"]).await;
    let referrer = joined(&app, "popular", "").await;
    let joins = (0..24).map(|i| {
        let app = &app;
        let handle = referrer.referral_handle.clone();
        async move { join(app, &format!("friend-{i}"), &handle).await }
    });
    let results = futures::future::join_all(joins).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // The same applicant twice at once: one entry, one bump.
    let twice = futures::future::join_all((0..4).map(|_| join(&app, "eager", &referrer.referral_handle))).await;
    let ids: HashSet<String> = twice.into_iter().map(|r| r.expect("join").entry.expect("entry").id).collect();
    assert_eq!(ids.len(), 1);
    let after = entry(&app, "popular").await.expect("get");
    assert_eq!((after.referrals, after.bump), (25, 25));
    assert_eq!(after.state, State::Waiting as i32);
}

#[tokio::test]
async fn join_and_get_are_one_round_trip_each() {
    let (app, counter, _db) = counted(&[]).await;
    let first = joined(&app, "warm", "").await;
    entry(&app, "warm").await.expect("get");
    let by_id = pb::GetWaitlistEntryRequest { entry_id: first.id.clone(), ..Default::default() };
    app.client.clone().get_waitlist_entry(by_id).await.expect("get");
    statements(&counter);

    let e = joined(&app, "second", &first.referral_handle).await;
    assert_eq!(e.position, 2, "behind its referrer, who moved up");
    assert_one_statement(&statements(&counter), "inv_waitlist_join(");
    // Joining again, and a refusal, are one exchange too.
    joined(&app, "second", "").await;
    assert_one_statement(&statements(&counter), "inv_waitlist_join(");
    join(&app, "third", "no-such-handle").await.expect_err("unknown referrer");
    assert_one_statement(&statements(&counter), "inv_waitlist_join(");

    let got = entry(&app, "second").await.expect("get");
    assert_eq!(got.id, e.id);
    assert_one_statement(&statements(&counter), "FROM waitlist_entries");
    let by_id = pb::GetWaitlistEntryRequest { entry_id: e.id, ..Default::default() };
    app.client.clone().get_waitlist_entry(by_id).await.expect("get");
    assert_one_statement(&statements(&counter), "FROM waitlist_entries");
}

#[tokio::test]
async fn joining_and_reading_are_signup_review_and_admission_admin() {
    use crate::helpers::{assert_error, bearer};
    const ADMIN: &str = "admin-token-0123456789";
    const SIGNUP: &str = "signup-token-0123456789";
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, signup-svc:signup:{}", hash(ADMIN), hash(SIGNUP));
    let app = TestApp::spawn_with(&["--caller-tokens", &tokens]).await;
    let mut c = app.client.clone();
    let join = pb::JoinWaitlistRequest { applicant_id: "ana".into(), ..Default::default() };
    let e = c.join_waitlist(bearer(join, SIGNUP)).await.expect("signup joins").into_inner().entry.expect("entry");
    let get = pb::GetWaitlistEntryRequest { applicant_id: "ana".into(), ..Default::default() };
    c.get_waitlist_entry(bearer(get, SIGNUP)).await.expect("signup reads");
    let review = pb::ReviewWaitlistEntriesRequest {
        entry_ids: vec![e.id],
        decision: pb::ReviewDecision::Approve as i32,
        ..Default::default()
    };
    let err = c.review_waitlist_entries(bearer(review.clone(), SIGNUP)).await.expect_err("not signup");
    assert_error(&err, tonic::Code::PermissionDenied, "PERMISSION_DENIED", None);
    let err = c.admit_from_waitlist(bearer(admit_request(1), SIGNUP)).await.expect_err("not signup");
    assert_error(&err, tonic::Code::PermissionDenied, "PERMISSION_DENIED", None);
    let reviewed = c.review_waitlist_entries(bearer(review, ADMIN)).await.expect("admin reviews").into_inner();
    assert_eq!(reviewed.entries[0].reviewed_by, "ops", "the caller is recorded as the reviewer");
    let admitted = c.admit_from_waitlist(bearer(admit_request(1), ADMIN)).await.expect("admin admits").into_inner();
    assert_eq!(admitted.admitted_count, 1);
}
