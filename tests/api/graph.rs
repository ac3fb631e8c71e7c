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

fn public(user: &str, max_depth: i32) -> pb::GetInviteGraphRequest {
    pb::GetInviteGraphRequest { user_id: user.into(), max_depth, public_view: true, ..Default::default() }
}

#[tokio::test]
async fn the_public_view_shows_hidden_members_as_placeholders() {
    let app = TestApp::spawn().await;
    // root -> shy (hidden) -> kid, root -> open
    let c = app.mint_for("root", 2).await;
    app.redeem(&c[0].code, "shy").await.expect("shy");
    app.redeem(&c[1].code, "open").await.expect("open");
    let c = app.mint_one("shy").await.code;
    app.redeem(&c, "kid").await.expect("kid");
    app.register(vec![crate::helpers::member("shy", None, Some(true))]).await.expect("hide shy");

    let g = app.graph(public("root", 2)).await.expect("public view");
    let root = g.member.expect("root");
    assert!(root.invite_privileges.is_none(), "privileges are not public");
    assert_eq!(root.descendant_count, 3, "structure kept");
    let by_depth: Vec<_> = g.descendants.iter().map(|n| (n.user_id.as_str(), n.inviter_id.as_str())).collect();
    let placeholder = g.descendants[0].user_id.clone();
    assert!(placeholder.starts_with("hidden-") && placeholder != "shy", "{placeholder}");
    assert_eq!(by_depth, [(placeholder.as_str(), "root"), ("kid", placeholder.as_str()), ("open", "root")]);
    let shy = &g.descendants[0];
    assert!(shy.hidden && shy.join_time.is_none() && shy.invitation_id.is_empty());
    assert!(g.descendants.iter().all(|n| n.invitation_id.is_empty()));
    assert!(g.descendants[2].join_time.is_some(), "visible members keep their join time");

    // Stable across calls: kid's chain names the same placeholder.
    let kid = app.graph(public("kid", 1)).await.expect("kid");
    assert_eq!(kid.ancestors.iter().map(|n| n.user_id.as_str()).collect::<Vec<_>>(), ["root", placeholder.as_str()]);
    assert_eq!(kid.member.expect("kid").inviter_id, placeholder);
    // The public view does not confirm a hidden member exists.
    let err = app.graph(public("shy", 1)).await.expect_err("hidden");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("user_id"));
    // The operator's view shows everyone.
    let full =
        app.graph(pb::GetInviteGraphRequest { user_id: "shy".into(), ..Default::default() }).await.expect("full");
    let shy = full.member.expect("shy");
    assert!(shy.hidden && shy.user_id == "shy" && shy.invite_privileges.is_some());
    // And the forest walk.
    let walked = app.walk(pb::WalkInviteForestRequest { public_view: true, ..Default::default() }).await.expect("walk");
    let names: Vec<_> = walked.iter().map(|n| n.user_id.as_str()).collect();
    assert_eq!(names, ["root", placeholder.as_str(), "kid", "open"]);
    assert!(!names.contains(&"shy"));
}

#[tokio::test]
async fn bad_graph_requests_are_refused() {
    let app = TestApp::spawn().await;
    let c = app.mint_for("root", 3).await;
    for (i, inv) in c.iter().enumerate() {
        app.redeem(&inv.code, &format!("k{i}")).await.expect("joins");
    }
    let first = app
        .graph(pb::GetInviteGraphRequest { user_id: "root".into(), page_size: 1, max_depth: 2, ..Default::default() })
        .await
        .expect("page");
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let cases = vec![
        (pb::GetInviteGraphRequest { user_id: String::new(), ..Default::default() }, "user_id"),
        (pb::GetInviteGraphRequest { user_id: "x".repeat(129), ..Default::default() }, "user_id"),
        (pb::GetInviteGraphRequest { user_id: "root".into(), max_depth: -1, ..Default::default() }, "max_depth"),
        (pb::GetInviteGraphRequest { user_id: "root".into(), page_size: -1, ..Default::default() }, "page_size"),
        // The token of another depth, view or user is refused.
        (
            pb::GetInviteGraphRequest { user_id: "root".into(), page_token: token.clone(), ..Default::default() },
            "page_token",
        ),
        (
            pb::GetInviteGraphRequest {
                page_token: token.clone(),
                max_depth: 2,
                public_view: true,
                ..public("root", 2)
            },
            "page_token",
        ),
        (
            pb::GetInviteGraphRequest { user_id: "k0".into(), page_token: token, max_depth: 2, ..Default::default() },
            "page_token",
        ),
    ];
    for (request, field) in cases {
        let err = app.graph(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
}
