//! ListHistory (issue 19): every change made through the API writes exactly
//! one row (none when refused or replayed), redemptions come in from their
//! own table, the filters and pages, the refusals, erasure rewriting the
//! history, `invitations admin history`, and the retention dropping months.

use std::time::Duration;

use invitations::pb;
use tonic::Code;

use crate::admin_cli::{ADMIN, admin, secured, stdout};
use crate::conversions::{LOOP, converted};
use crate::erasure::erase;
use crate::helpers::{TestApp, assert_error, wait_until};
use crate::lifecycle::{restore, update};
use crate::waitlist::{admit, admit_request, joined, review};
use crate::waves::{no_unspent, wave};

pub async fn history(app: &TestApp, request: pb::ListHistoryRequest) -> Result<pb::ListHistoryResponse, tonic::Status> {
    app.client.clone().list_history(request).await.map(tonic::Response::into_inner)
}

pub async fn all(app: &TestApp, request: pb::ListHistoryRequest) -> Vec<pb::HistoryEntry> {
    let page = history(app, pb::ListHistoryRequest { page_size: 500, ..request }).await.expect("history");
    assert!(page.next_page_token.is_empty(), "one page holds the test's history");
    page.entries
}

pub fn ops(entries: &[pb::HistoryEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.operation.as_str()).collect()
}

fn by_user(user: &str) -> pb::ListHistoryRequest {
    pb::ListHistoryRequest { user_id: user.into(), ..Default::default() }
}

/// The invitations a scenario made, by the name the test uses.
struct Made {
    alices: pb::Invitation,
    bobs: pb::Invitation,
}

fn mint_request(users: &[&str], per_user: u32, request_id: &str) -> pb::MintRequest {
    pb::MintRequest {
        user_ids: users.iter().map(|u| u.to_string()).collect(),
        per_user,
        minted_by: "ops".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// root's two codes bring alice and bob; each gets one; carol joins through
/// alice's; bob's is edited, revoked and restored; carol moves under bob
/// and loses her privileges. Each call is followed by a replay or a refusal
/// that must not write.
async fn scenario(app: &TestApp) -> Made {
    let roots = app.mint(mint_request(&["root"], 2, "m-1")).await.expect("mint").invitations;
    app.mint(mint_request(&["root"], 2, "m-1")).await.expect("a replay of the mint");
    app.redeem(&roots[0].code, "alice").await.expect("alice joins");
    app.redeem(&roots[1].code, "bob").await.expect("bob joins");
    app.redeem(&roots[1].code, "zed").await.expect_err("a spent code is refused");
    let theirs = app.mint(mint_request(&["alice", "bob"], 1, "m-2")).await.expect("mint").invitations;
    let owned = |user: &str| theirs.iter().find(|i| i.inviter_id == user).cloned().expect("one each");
    let (alices, bobs) = (owned("alice"), owned("bob"));
    app.redeem(&alices.code, "carol").await.expect("carol joins");
    let label = pb::InvitationUpdate { label: "friends".into(), ..Default::default() };
    update(app, &bobs.id, &["label"], label.clone()).await.expect("update");
    update(app, &bobs.id, &["label"], label).await.expect("the same label again changes nothing");
    let revoke = pb::RevokeRequest {
        invitation_ids: vec![bobs.id.clone()],
        reason: "sent to the wrong list".into(),
        revoked_by: "mod".into(),
        ..Default::default()
    };
    app.revoke(revoke.clone()).await.expect("revoke");
    app.revoke(revoke).await.expect("revoking again changes nothing");
    let unknown = pb::RevokeRequest { invitation_ids: vec![uuid::Uuid::new_v4().to_string()], ..Default::default() };
    app.revoke(unknown).await.expect_err("an unknown invitation is refused");
    restore(app, &bobs.id).await.expect("restore");
    let reparent = pb::ReparentRequest {
        user_id: "carol".into(),
        new_inviter_id: "bob".into(),
        reason: "merged accounts".into(),
        reparented_by: "mod".into(),
        ..Default::default()
    };
    app.reparent(reparent).await.expect("reparent");
    let off = pb::SetInvitePrivilegesRequest {
        user_id: "carol".into(),
        enabled: false,
        reason: "farming alts".into(),
        updated_by: "mod".into(),
        ..Default::default()
    };
    app.privileges(off.clone()).await.expect("privileges off");
    app.privileges(off).await.expect("off again changes nothing");
    Made { alices, bobs }
}

#[tokio::test]
async fn every_change_is_one_entry_newest_first_and_refusals_and_replays_none() {
    let app = TestApp::spawn().await;
    scenario(&app).await;
    let entries = all(&app, pb::ListHistoryRequest::default()).await;
    assert_eq!(
        ops(&entries),
        ["privileges", "reparent", "restore", "revoke", "update", "redeem", "mint", "redeem", "redeem", "mint"]
    );
    assert_eq!(app.count("history").await, 7, "the three redemptions are read from their own table");
    let times: Vec<i64> = entries.iter().map(|e| e.occur_time.as_ref().expect("time").seconds).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    let privileges = &entries[0];
    assert_eq!(
        (privileges.caller.as_str(), privileges.user_ids.as_slice(), privileges.reason.as_str()),
        ("mod", &["carol".to_owned()][..], "farming alts")
    );
    assert_eq!(privileges.details.get("enabled").map(String::as_str), Some("false"));
    let revoke = &entries[3];
    assert_eq!((revoke.caller.as_str(), revoke.reason.as_str()), ("mod", "sent to the wrong list"));
    assert_eq!(revoke.details.get("count").map(String::as_str), Some("1"));
    assert_eq!(entries[4].details.get("fields").map(String::as_str), Some("label"));
    let mint = &entries[6];
    assert_eq!((mint.caller.as_str(), mint.request_id.as_str()), ("ops", "m-2"));
    assert_eq!(mint.user_ids, ["alice", "bob"]);
    assert!(!mint.batch_id.is_empty(), "a mint names its batch");
    assert_eq!(mint.details.get("count").map(String::as_str), Some("2"));
    let reparent = &entries[1];
    assert_eq!(reparent.user_ids, ["carol", "alice", "bob"], "the member, its old and its new inviter");
}

#[tokio::test]
async fn member_mints_waves_waitlist_decisions_and_voids_are_one_entry_each() {
    let mut args = LOOP.to_vec();
    args.extend(["--reward-hold", "7d", "--member-invitations", "true", "--waitlist-review", "required"]);
    let app = TestApp::spawn_with(&args).await;
    let root = app.mint_one("root").await;
    app.redeem(&root.code, "alice").await.expect("alice joins");
    let mine = app.mint_one("alice").await;
    app.redeem(&mine.code, "bob").await.expect("bob joins");
    let conversion = converted(&app, "bob", "activated").await;
    let void = pb::VoidConversionRequest {
        conversion_id: conversion.id.clone(),
        reason: "refunded".into(),
        voided_by: "ops".into(),
        ..Default::default()
    };
    app.client.clone().void_conversion(void.clone()).await.expect("void");
    app.client.clone().void_conversion(void).await.expect("voiding again changes nothing");
    let own = pb::CreateMemberInvitationRequest { user_id: "alice".into(), max_uses: 1, ..Default::default() };
    app.client.clone().create_member_invitation(own).await.expect("alice mints her own");
    let minted = app.mint(wave(no_unspent(), 10)).await.expect("a wave").invitations.len();
    let ann = joined(&app, "ann", "").await;
    review(&app, &[&ann.id], pb::ReviewDecision::Approve).await.expect("approve");
    review(&app, &[&ann.id], pb::ReviewDecision::Approve).await.expect("approving again changes nothing");
    admit(&app, admit_request(1)).await;
    admit(&app, admit_request(1)).await;

    let entries = all(&app, pb::ListHistoryRequest::default()).await;
    assert_eq!(
        ops(&entries),
        [
            "waitlist_admit",
            "waitlist_review",
            "mint",
            "member_mint",
            "conversion_void",
            "conversion",
            "redeem",
            "mint",
            "redeem",
            "mint"
        ]
    );
    assert_eq!(entries[0].details.get("count").map(String::as_str), Some("1"));
    assert_eq!(entries[1].details.get("decision").map(String::as_str), Some("approved"));
    assert_eq!(entries[1].details.get("entries"), Some(&ann.id));
    assert_eq!(entries[2].details.get("wave").map(String::as_str), Some("true"));
    assert_eq!(entries[2].details.get("count"), Some(&minted.to_string()));
    assert_eq!(entries[3].user_ids, ["alice"]);
    assert_eq!((entries[4].caller.as_str(), entries[4].reason.as_str()), ("ops", "refunded"));
    assert_eq!(entries[4].user_ids, ["alice", "bob"], "the inviter and the converted member");
    assert_eq!(entries[5].details.get("kind").map(String::as_str), Some("activated"));
}

#[tokio::test]
async fn filters_combine_pages_follow_and_bad_filters_are_refused() {
    let app = TestApp::spawn().await;
    let made = scenario(&app).await;
    let everything = all(&app, pb::ListHistoryRequest::default()).await;

    let of = |id: &str| pb::ListHistoryRequest { invitation_id: id.into(), ..Default::default() };
    assert_eq!(ops(&all(&app, of(&made.bobs.id)).await), ["restore", "revoke", "update", "mint"]);
    assert_eq!(ops(&all(&app, of(&made.alices.id)).await), ["redeem", "mint"], "carol's redemption and the batch");
    assert_eq!(ops(&all(&app, by_user("carol")).await), ["privileges", "reparent", "redeem"]);
    let by_caller = pb::ListHistoryRequest { caller: "mod".into(), ..Default::default() };
    assert_eq!(ops(&all(&app, by_caller).await), ["privileges", "reparent", "revoke"]);
    let redeems = pb::ListHistoryRequest { operation: "redeem".into(), ..Default::default() };
    assert_eq!(all(&app, redeems).await.len(), 3);
    let carols_redeem =
        pb::ListHistoryRequest { user_id: "carol".into(), operation: "redeem".into(), ..Default::default() };
    assert_eq!(ops(&all(&app, carols_redeem).await), ["redeem"], "filters combine with AND");
    // [update, restore): the update and the revoke.
    let window = pb::ListHistoryRequest {
        start_time: everything[4].occur_time,
        end_time: everything[2].occur_time,
        ..Default::default()
    };
    let inside = all(&app, window).await;
    assert!(ops(&inside).contains(&"update") && ops(&inside).contains(&"revoke"), "{:?}", ops(&inside));
    assert!(!ops(&inside).contains(&"restore"), "the end is excluded: {:?}", ops(&inside));

    // Pages of 3 walk the same entries in the same order.
    let (mut walked, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let request = pb::ListHistoryRequest { page_size: 3, page_token: token.clone(), ..Default::default() };
        let page = history(&app, request).await.expect("page");
        assert!(page.entries.len() <= 3);
        walked.extend(page.entries);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((&walked, pages), (&everything, 4));

    // A token made for other filters, and malformed filters, are refused.
    let first = history(&app, pb::ListHistoryRequest { page_size: 1, ..Default::default() }).await.expect("page");
    let elsewhere =
        pb::ListHistoryRequest { caller: "mod".into(), page_token: first.next_page_token, ..Default::default() };
    assert_error(
        &history(&app, elsewhere).await.expect_err("token"),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        Some("page_token"),
    );
    let bad = [
        (pb::ListHistoryRequest { operation: "delete".into(), ..Default::default() }, "operation"),
        (pb::ListHistoryRequest { invitation_id: "nope".into(), ..Default::default() }, "invitation_id"),
        (pb::ListHistoryRequest { page_size: -1, ..Default::default() }, "page_size"),
        (
            pb::ListHistoryRequest {
                start_time: everything[0].occur_time,
                end_time: everything[9].occur_time,
                ..Default::default()
            },
            "end_time",
        ),
    ];
    for (request, field) in bad {
        let err = history(&app, request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
}

#[tokio::test]
async fn erasure_rewrites_the_history_to_the_tombstone_and_records_itself() {
    let app = TestApp::spawn().await;
    scenario(&app).await;
    let before = ops(&all(&app, by_user("carol")).await).into_iter().map(str::to_owned).collect::<Vec<_>>();
    let erased = erase(&app, "carol").await.expect("erase");
    assert!(all(&app, by_user("carol")).await.is_empty(), "no entry names carol");
    let tomb = all(&app, by_user(&erased.tombstone)).await;
    assert_eq!(ops(&tomb)[0], "erase");
    assert_eq!(ops(&tomb)[1..], before.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert!(tomb.iter().skip(1).all(|e| !e.reason.contains("farming")), "reasons about her are blanked");
    let pool = app.pool().await;
    let named: i64 = sqlx::query_scalar("SELECT count(*) FROM history WHERE history::text LIKE '%carol%'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(named, 0);
}

#[tokio::test]
async fn the_cli_prints_the_history_with_its_filters() {
    let app = secured(&[]).await;
    stdout(&admin(&app, Some(ADMIN), &["mint", "--user", "ana", "--per-user", "2", "--label", "cli"]).await);
    stdout(&admin(&app, Some(ADMIN), &["privileges", "disable", "--user", "ana", "--reason", "abuse"]).await);
    let out = stdout(&admin(&app, Some(ADMIN), &["history"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(" privileges by ops users ana \"abuse\"") && lines[0].contains("enabled=false"), "{out}");
    assert!(lines[1].contains(" mint by ops users ana batch ") && lines[1].contains("count=2"), "{out}");
    let only = stdout(&admin(&app, Some(ADMIN), &["history", "--operation", "mint", "--limit", "1"]).await);
    assert_eq!(only.lines().count(), 1, "{only}");
    let json = stdout(&admin(&app, Some(ADMIN), &["history", "--user", "ana", "--output", "json"]).await);
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["entries"][0]["operation"], "privileges", "{json}");
    assert_eq!(value["entries"][1]["details"]["label"], "cli", "{json}");
}

#[tokio::test]
async fn retention_drops_the_months_that_ended_before_it_and_keeps_this_one() {
    let app = TestApp::spawn_with(&["--history-retention", "30d", "--history-upkeep-interval", "50ms"]).await;
    app.mint_one("root").await;
    let pool = app.pool().await;
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("CREATE TABLE history_p202001 PARTITION OF history FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        .execute(&mut *tx)
        .await
        .expect("an old month");
    sqlx::query("INSERT INTO history (occur_time, caller, operation) VALUES ('2020-01-15', 'ops', 'mint')")
        .execute(&mut *tx)
        .await
        .expect("a change in it");
    tx.commit().await.expect("commit");
    wait_until(Duration::from_secs(20), "the old month to be dropped", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = 'history_p202001'")
            .fetch_one(&pool)
            .await
            .expect("count");
        left == 0
    })
    .await;
    let kept = all(&app, pb::ListHistoryRequest::default()).await;
    assert_eq!(ops(&kept), ["mint"], "this month's change stays");
}
