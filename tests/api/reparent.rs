//! Reparent: an operator fixes who invited a user; the subtree moves, the
//! move is recorded, history (the redemption) is kept, bad input changes
//! nothing. Cycles and races are in graph_model and graph_races.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, member};

fn move_to(user: &str, to: &str) -> pb::ReparentRequest {
    pb::ReparentRequest {
        user_id: user.into(),
        new_inviter_id: to.into(),
        reason: "signed up with the wrong code".into(),
        reparented_by: "ops-lee".into(),
        ..Default::default()
    }
}

/// r1 -> a -> b, and r2.
async fn setup(app: &TestApp) {
    let c = app.mint_one("r1").await.code;
    app.redeem(&c, "a").await.expect("a");
    let c = app.mint_one("a").await.code;
    app.redeem(&c, "b").await.expect("b");
    app.mint_one("r2").await;
}

#[tokio::test]
async fn reparent_moves_the_subtree_records_it_and_keeps_history() {
    let app = TestApp::spawn().await;
    setup(&app).await;
    let r = app.reparent(move_to("a", "r2")).await.expect("reparent");
    assert_eq!(r.old_inviter_id, "r1");
    assert_eq!(r.moved_count, 2);
    let m = r.member.expect("member");
    assert_eq!((m.inviter_id.as_str(), m.depth), ("r2", 1));
    let b = app.graph(pb::GetInviteGraphRequest { user_id: "b".into(), ..Default::default() }).await.expect("b");
    assert_eq!(b.ancestors.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>(), ["r2", "a"]);
    let listed = app.list(pb::ListForUserRequest { user_id: "a".into(), ..Default::default() }).await.expect("list");
    assert_eq!(listed.inviter_id, "r2");

    let pool = app.pool().await;
    let (user, old, new, moved, reason, by, when): (String, Option<String>, Option<String>, i64, String, String, time::OffsetDateTime) =
        sqlx::query_as(
            "SELECT user_id, old_inviter_id, new_inviter_id, moved_count, reason, reparented_by, create_time FROM reparents",
        )
        .fetch_one(&pool)
        .await
        .expect("one record");
    assert_eq!((user.as_str(), old.as_deref(), new.as_deref(), moved), ("a", Some("r1"), Some("r2"), 2));
    assert_eq!((reason.as_str(), by.as_str()), ("signed up with the wrong code", "ops-lee"));
    assert!(time::OffsetDateTime::now_utc() - when < time::Duration::minutes(1));
    let edge: Option<String> = sqlx::query_scalar("SELECT inviter_id FROM redemptions WHERE invitee_id = 'a'")
        .fetch_one(&pool)
        .await
        .expect("redemption");
    assert_eq!(edge.as_deref(), Some("r1"), "the redemption keeps who actually invited");
    pool.close().await;

    // Naming the current inviter changes nothing and records nothing.
    let same = app.reparent(move_to("a", "r2")).await.expect("no-op");
    assert_eq!(same.moved_count, 0);
    assert_eq!(app.count("reparents").await, 1);

    // To a root, and the counts follow.
    let root = app
        .reparent(pb::ReparentRequest { user_id: "a".into(), make_root: true, ..Default::default() })
        .await
        .expect("make root");
    let m = root.member.expect("member");
    assert_eq!((m.inviter_id.as_str(), m.depth, root.old_inviter_id.as_str()), ("", 0, "r2"));
    let r2 = app.graph(pb::GetInviteGraphRequest { user_id: "r2".into(), ..Default::default() }).await.expect("r2");
    let r2 = r2.member.expect("r2");
    assert_eq!((r2.direct_invitee_count, r2.descendant_count), (0, 0));
    app.assert_graph_consistent().await;
}

#[tokio::test]
async fn a_member_placed_by_reparent_counts_as_invited() {
    let app = TestApp::spawn().await;
    setup(&app).await;
    app.register(vec![member("zed", None, None)]).await.expect("register");
    app.reparent(move_to("zed", "b")).await.expect("place zed under b");
    let code = app.mint_one("r2").await.code;
    let err = app.redeem(&code, "zed").await.expect_err("zed has an inviter");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_INVITED", None);
}

#[tokio::test]
async fn bad_reparent_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    setup(&app).await;
    let cases = vec![
        (pb::ReparentRequest { user_id: String::new(), ..move_to("a", "r2") }, "user_id"),
        (pb::ReparentRequest { new_inviter_id: String::new(), ..move_to("a", "r2") }, "new_inviter_id"),
        (pb::ReparentRequest { make_root: true, ..move_to("a", "r2") }, "new_inviter_id"),
        (pb::ReparentRequest { new_inviter_id: "x".repeat(129), ..move_to("a", "r2") }, "new_inviter_id"),
        (pb::ReparentRequest { reason: "r".repeat(1025), ..move_to("a", "r2") }, "reason"),
        (pb::ReparentRequest { reparented_by: "o".repeat(129), ..move_to("a", "r2") }, "reparented_by"),
    ];
    for (request, field) in cases {
        let err = app.reparent(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    let err = app.reparent(move_to("ghost", "r2")).await.expect_err("unknown user");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("user_id"));
    let err = app.reparent(move_to("a", "ghost")).await.expect_err("unknown inviter");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("new_inviter_id"));
    let err = app.reparent(move_to("a", "b")).await.expect_err("cycle");
    assert_error(&err, Code::FailedPrecondition, "INVITE_CYCLE", None);

    assert_eq!(app.count("reparents").await, 0);
    assert_eq!(app.count("members").await, 4, "no ghost was created");
    let a = app.graph(pb::GetInviteGraphRequest { user_id: "a".into(), ..Default::default() }).await.expect("a");
    assert_eq!(a.member.expect("a").inviter_id, "r1");
    app.assert_graph_consistent().await;
}
