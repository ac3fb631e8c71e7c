use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn graph_shows_inviter_ancestors_and_direct_invitees() {
    let app = TestApp::spawn().await;
    // root -> alice -> {b0..b4}
    let r = app.mint_one("root").await;
    app.redeem(&r.code, "alice").await.expect("alice joins");
    let codes = app.mint_for("alice", 5).await;
    for (i, inv) in codes.iter().enumerate() {
        app.redeem(&inv.code, &format!("b{i}")).await.expect("joins");
    }
    let g =
        app.graph(pb::GetInviteGraphRequest { user_id: "alice".into(), ..Default::default() }).await.expect("graph");
    let member = g.member.expect("member");
    assert_eq!(member.inviter_id, "root");
    assert!(member.join_time.is_some());
    assert_eq!(g.ancestors.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>(), ["root"]);
    let kids: Vec<_> = g.descendants.iter().map(|m| m.user_id.clone()).collect();
    assert_eq!(kids, ["b0", "b1", "b2", "b3", "b4"]);
    assert!(g.descendants.iter().all(|m| m.inviter_id == "alice"));

    // Ancestors run root first.
    let leaf =
        app.graph(pb::GetInviteGraphRequest { user_id: "b3".into(), ..Default::default() }).await.expect("graph");
    assert_eq!(leaf.ancestors.iter().map(|m| m.user_id.as_str()).collect::<Vec<_>>(), ["root", "alice"]);
    assert!(leaf.descendants.is_empty());

    // Pages of two.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .graph(pb::GetInviteGraphRequest {
                user_id: "alice".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page");
        all.extend(page.descendants.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all, kids);
}

#[tokio::test]
async fn graph_of_an_unknown_user_is_not_found() {
    let app = TestApp::spawn().await;
    let err = app
        .graph(pb::GetInviteGraphRequest { user_id: "nobody".into(), ..Default::default() })
        .await
        .expect_err("unknown");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("user_id"));
}
