//! Every bad input named by the contract: INVALID_ARGUMENT, the field named,
//! and nothing changed.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

fn mint(user_ids: &[&str]) -> pb::MintRequest {
    pb::MintRequest { user_ids: user_ids.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

#[tokio::test]
async fn bad_mint_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let long_id = "x".repeat(129);
    let many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let cases: Vec<(pb::MintRequest, &str)> = vec![
        (mint(&[""]), "user_ids[0]"),
        (mint(&["ok", &long_id]), "user_ids[1]"),
        (mint(&["a\u{7}"]), "user_ids[0]"),
        (pb::MintRequest { user_ids: many, ..Default::default() }, "user_ids"),
        (pb::MintRequest { per_user: 10_001, ..mint(&["a"]) }, "per_user"),
        (pb::MintRequest { per_user: 5_001, ..mint(&["a", "b"]) }, "per_user"),
        (pb::MintRequest { unowned_count: 10_001, ..Default::default() }, "unowned_count"),
        (pb::MintRequest::default(), "user_ids"),
        (mint(&["a", "a"]), "user_ids"),
        (pb::MintRequest { ttl: Some(prost_types::Duration { seconds: 0, nanos: 0 }), ..mint(&["a"]) }, "ttl"),
        (pb::MintRequest { ttl: Some(prost_types::Duration { seconds: -5, nanos: 0 }), ..mint(&["a"]) }, "ttl"),
        (pb::MintRequest { ttl: Some(prost_types::Duration { seconds: 1, nanos: -1 }), ..mint(&["a"]) }, "ttl"),
        (pb::MintRequest { max_uses: 1_000_001, ..mint(&["a"]) }, "max_uses"),
        (pb::MintRequest { label: "l".repeat(129), ..mint(&["a"]) }, "label"),
        (pb::MintRequest { note: "n".repeat(1025), ..mint(&["a"]) }, "note"),
        (pb::MintRequest { request_id: "r".repeat(129), ..mint(&["a"]) }, "request_id"),
    ];
    for (request, field) in cases {
        let err = app.mint(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("invitations").await, 0);
    assert_eq!(app.count("batches").await, 0);
    assert_eq!(app.count("members").await, 0);
    // The largest allowed call works.
    let ok = app.mint(pb::MintRequest { per_user: 5_000, ..mint(&["a", "b"]) }).await.expect("10,000 is allowed");
    assert_eq!(ok.invitations.len(), 10_000);
}

#[tokio::test]
async fn bad_list_requests_are_refused() {
    let app = TestApp::spawn().await;
    app.mint_for("alice", 3).await;
    app.mint_for("bob", 3).await;
    let first = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), page_size: 1, ..Default::default() })
        .await
        .expect("list");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());

    let cases = vec![
        (pb::ListForUserRequest { user_id: "".into(), ..Default::default() }, "user_id"),
        (pb::ListForUserRequest { user_id: "x".repeat(129), ..Default::default() }, "user_id"),
        (pb::ListForUserRequest { user_id: "alice".into(), page_size: -1, ..Default::default() }, "page_size"),
        (pb::ListForUserRequest { user_id: "alice".into(), state: 42, ..Default::default() }, "state"),
        (pb::ListForUserRequest { user_id: "alice".into(), unowned: true, ..Default::default() }, "user_id"),
        // Foreign: alice's token for bob's list, or with another filter.
        (
            pb::ListForUserRequest { user_id: "bob".into(), page_token: token.clone(), ..Default::default() },
            "page_token",
        ),
        (
            pb::ListForUserRequest {
                user_id: "alice".into(),
                state: 1,
                page_token: token.clone(),
                ..Default::default()
            },
            "page_token",
        ),
        // Forged and altered.
        (
            pb::ListForUserRequest {
                user_id: "alice".into(),
                page_token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListForUserRequest { user_id: "alice".into(), page_token: format!("{token}x"), ..Default::default() },
            "page_token",
        ),
        (
            pb::ListForUserRequest { user_id: "alice".into(), page_token: "not base64!".into(), ..Default::default() },
            "page_token",
        ),
    ];
    for (request, field) in cases {
        let err = app.list(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    // Large page sizes are clamped, not refused.
    let big = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), page_size: 1_000_000, ..Default::default() })
        .await
        .expect("clamped");
    assert_eq!(big.invitations.len(), 3);
}

#[tokio::test]
async fn bad_redeem_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let req = |code: &str, invitee: &str| pb::RedeemRequest {
        code: code.into(),
        invitee_id: invitee.into(),
        ..Default::default()
    };
    let cases = vec![
        (req("", "bob"), "code"),
        (req(&inv.code, ""), "invitee_id"),
        (req(&inv.code, &"b".repeat(129)), "invitee_id"),
        (pb::RedeemRequest { client_ip: "300.1.1.1".into(), ..req(&inv.code, "bob") }, "client_ip"),
        (pb::RedeemRequest { email: "not-an-email".into(), ..req(&inv.code, "bob") }, "email"),
        (pb::RedeemRequest { request_id: "r".repeat(200), ..req(&inv.code, "bob") }, "request_id"),
    ];
    for (request, field) in cases {
        let err = app.redeem_req(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("redemptions").await, 0);
    assert!(app.check(&inv.code).await.redeemable);
}

#[tokio::test]
async fn bad_revoke_and_graph_requests_are_refused() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let cases = vec![
        (pb::RevokeRequest::default(), "invitation_ids"),
        (
            pb::RevokeRequest { invitation_ids: vec![inv.id.clone()], user_id: "alice".into(), ..Default::default() },
            "user_id",
        ),
        (pb::RevokeRequest { invitation_ids: vec!["not-a-uuid".into()], ..Default::default() }, "invitation_ids[0]"),
        (
            pb::RevokeRequest { invitation_ids: (0..1001).map(|_| inv.id.clone()).collect(), ..Default::default() },
            "invitation_ids",
        ),
        (pb::RevokeRequest { user_id: "alice".into(), reason: "r".repeat(1025), ..Default::default() }, "reason"),
    ];
    for (request, field) in cases {
        let err = app.revoke(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert!(app.check(&inv.code).await.redeemable);

    let err =
        app.graph(pb::GetInviteGraphRequest { user_id: "".into(), ..Default::default() }).await.expect_err("empty");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("user_id"));
    let err = app
        .graph(pb::GetInviteGraphRequest { user_id: "alice".into(), page_size: -3, ..Default::default() })
        .await
        .expect_err("negative");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("page_size"));
    let err = app
        .graph(pb::GetInviteGraphRequest { user_id: "alice".into(), page_token: "forged".into(), ..Default::default() })
        .await
        .expect_err("forged");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("page_token"));
}

#[tokio::test]
async fn internal_errors_do_not_leak_database_text() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    // Break the schema under the running server.
    let pool = app.pool().await;
    sqlx::query("ALTER TABLE redemptions RENAME TO redemptions_gone").execute(&pool).await.expect("rename");
    let err = app.redeem(&inv.code, "bob").await.expect_err("broken schema");
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "internal error");
    assert!(!format!("{err:?}").contains("redemptions"), "no SQL text in {err:?}");
}

fn wave(criterion: pb::selector::Criterion, count: u32) -> pb::MintRequest {
    pb::MintRequest { selector: Some(pb::Selector { criterion: Some(criterion) }), count, ..Default::default() }
}

fn age(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

#[tokio::test]
async fn bad_wave_requests_are_refused_and_change_nothing() {
    use pb::selector::Criterion;
    let app = TestApp::spawn().await;
    app.register(vec![crate::helpers::member("m", Some(1_600_000_000), None)]).await.expect("register");
    let none = || Criterion::NoUnspentInvitation(pb::NoUnspentInvitation {});
    let cases: Vec<(pb::MintRequest, &str)> = vec![
        (pb::MintRequest { user_ids: vec!["a".into()], ..wave(none(), 5) }, "user_ids"),
        (pb::MintRequest { unowned_count: 3, ..wave(none(), 5) }, "unowned_count"),
        (pb::MintRequest { per_user: 2, ..wave(none(), 5) }, "per_user"),
        (wave(none(), 0), "count"),
        (wave(none(), 10_000_001), "count"),
        (
            pb::MintRequest { selector: Some(pb::Selector { criterion: None }), count: 5, ..Default::default() },
            "selector",
        ),
        (pb::MintRequest { count: 5, ..mint(&["a"]) }, "count"),
        (
            wave(Criterion::NeverIssued(pb::NeverIssued { joined_at_least: age(-1, 0) }), 5),
            "selector.never_issued.joined_at_least",
        ),
        (
            wave(Criterion::LastRedeemed(pb::LastRedeemed { at_least: age(1, 1_000_000_000) }), 5),
            "selector.last_redeemed.at_least",
        ),
        (
            wave(Criterion::LastRedeemed(pb::LastRedeemed { at_least: age(3651 * 86_400, 0) }), 5),
            "selector.last_redeemed.at_least",
        ),
        (pb::MintRequest { label: "l".repeat(129), ..wave(none(), 5) }, "label"),
        (pb::MintRequest { bound_email: "a@example.org".into(), ..wave(none(), 5) }, "bound_email"),
    ];
    for (request, field) in cases {
        let err = app.mint(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("invitations").await, 0);
    assert_eq!(app.count("batches").await, 0);
}
