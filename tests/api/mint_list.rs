use std::collections::HashSet;

use invitations::pb;
use invitations::pb::invitation::State;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn mint_then_list_round_trip_across_pages() {
    let app = TestApp::spawn().await;
    let minted = app.mint_for("alice", 7).await;
    assert_eq!(minted.len(), 7);
    app.mint_for("bob", 2).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .list(pb::ListForUserRequest {
                user_id: "alice".into(),
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list");
        pages += 1;
        assert!(page.invitations.len() <= 3);
        seen.extend(page.invitations.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3, "7 invitations in pages of 3");
    let minted_ids: HashSet<_> = minted.iter().map(|i| i.id.clone()).collect();
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), minted_ids, "exactly alice's, no duplicates");
    assert_eq!(seen.len(), 7);
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first, "newest first");
}

#[tokio::test]
async fn minted_invitations_carry_everything_the_owner_needs() {
    let app =
        TestApp::spawn_with(&["--code-prefix", "INV", "--link-template", "https://cats.example/join?c={code}"]).await;
    let response = app
        .mint(pb::MintRequest {
            user_ids: vec!["ayo".into()],
            per_user: 2,
            label: "wave-1".into(),
            note: "first wave".into(),
            max_uses: 3,
            ttl: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            minted_by: "ops".into(),
            ..Default::default()
        })
        .await
        .expect("mint");
    assert!(!response.batch_id.is_empty());
    assert_eq!(response.minted_count, 2);
    for inv in &response.invitations {
        assert_eq!(inv.inviter_id, "ayo");
        assert_eq!(inv.state(), State::Unspent);
        assert_eq!(inv.batch_id, response.batch_id);
        assert_eq!((inv.label.as_str(), inv.note.as_str(), inv.minted_by.as_str()), ("wave-1", "first wave", "ops"));
        assert_eq!((inv.uses, inv.max_uses), (0, 3));
        assert!(inv.code.starts_with("INV-"), "{}", inv.code);
        assert_eq!(inv.link, format!("https://cats.example/join?c={}", inv.code));
        let create = inv.create_time.as_ref().expect("create_time").seconds;
        let expire = inv.expire_time.as_ref().expect("expire_time").seconds;
        assert!((3599..=3601).contains(&(expire - create)), "ttl of an hour");
    }
    let codes: HashSet<_> = response.invitations.iter().map(|i| i.code.clone()).collect();
    assert_eq!(codes.len(), 2, "codes are distinct");
}

#[tokio::test]
async fn unowned_invitations_are_listed_apart() {
    let app = TestApp::spawn().await;
    let response = app.mint(pb::MintRequest { unowned_count: 3, ..Default::default() }).await.expect("mint");
    assert!(response.invitations.iter().all(|i| i.inviter_id.is_empty()));
    app.mint_for("alice", 1).await;
    let unowned = app.list(pb::ListForUserRequest { unowned: true, ..Default::default() }).await.expect("list");
    assert_eq!(unowned.invitations.len(), 3);
    assert!(unowned.next_page_token.is_empty());
    // Redeeming an unowned invitation makes a root: no inviter.
    let joined = app.redeem(&response.invitations[0].code, "first-user").await.expect("redeem");
    assert_eq!(joined.inviter_id, "");
    let mine =
        app.list(pb::ListForUserRequest { user_id: "first-user".into(), ..Default::default() }).await.expect("list");
    assert_eq!(mine.inviter_id, "");
}

#[tokio::test]
async fn list_filters_by_state() {
    let app = TestApp::spawn().await;
    let invs = app.mint_for("alice", 3).await;
    app.redeem(&invs[0].code, "bob").await.expect("redeem");
    app.revoke(pb::RevokeRequest { invitation_ids: vec![invs[1].id.clone()], ..Default::default() })
        .await
        .expect("revoke");
    for (state, expected) in [(State::Unspent, &invs[2]), (State::Redeemed, &invs[0]), (State::Revoked, &invs[1])] {
        let page = app
            .list(pb::ListForUserRequest { user_id: "alice".into(), state: state as i32, ..Default::default() })
            .await
            .expect("list");
        assert_eq!(page.invitations.len(), 1, "{state:?}");
        assert_eq!(page.invitations[0].id, expected.id);
        assert_eq!(page.invitations[0].state(), state);
    }
    let redeemed = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), state: State::Redeemed as i32, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(redeemed.invitations[0].invitee_id, "bob");
}

#[tokio::test]
async fn mint_request_id_replays_and_mints_nothing_new() {
    let app = TestApp::spawn().await;
    let request = pb::MintRequest {
        user_ids: vec!["alice".into(), "bob".into()],
        per_user: 2,
        request_id: "wave-2026-11-21".into(),
        ..Default::default()
    };
    let first = app.mint(request.clone()).await.expect("first");
    let second = app.mint(request.clone()).await.expect("replay");
    assert_eq!(first, second, "the same answer, byte for byte");
    assert_eq!(app.count("invitations").await, 4, "nothing new minted");
    assert_eq!(app.count("batches").await, 1);

    let mut other = request;
    other.per_user = 3;
    let err = app.mint(other).await.expect_err("same id, other request");
    assert_error(&err, Code::InvalidArgument, "REQUEST_ID_REUSED", Some("request_id"));
    assert_eq!(app.count("invitations").await, 4);
}

#[tokio::test]
async fn concurrent_mints_with_one_request_id_mint_once() {
    let app = TestApp::spawn().await;
    let request = pb::MintRequest {
        user_ids: vec!["alice".into()],
        per_user: 3,
        request_id: "once".into(),
        ..Default::default()
    };
    let calls = (0..8).map(|_| app.mint(request.clone()));
    let answers = futures::future::join_all(calls).await;
    let first = answers[0].as_ref().expect("ok").clone();
    for a in &answers {
        assert_eq!(a.as_ref().expect("every call succeeds"), &first);
    }
    assert_eq!(app.count("invitations").await, 3);
}

#[tokio::test]
async fn dry_run_counts_and_mints_nothing() {
    let app = TestApp::spawn().await;
    let response = app
        .mint(pb::MintRequest {
            user_ids: vec!["a".into(), "b".into()],
            per_user: 2,
            unowned_count: 1,
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry run");
    assert!(response.dry_run);
    assert_eq!(response.minted_count, 5);
    assert!(response.invitations.is_empty());
    assert!(response.batch_id.is_empty());
    assert_eq!(app.count("invitations").await, 0);
}
