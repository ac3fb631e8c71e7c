use invitations::pb;
use invitations::pb::invitation::State;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn revoke_by_ids_records_reason_and_who() {
    let app = TestApp::spawn().await;
    let invs = app.mint_for("alice", 3).await;
    app.redeem(&invs[0].code, "bob").await.expect("redeem");
    let response = app
        .revoke(pb::RevokeRequest {
            invitation_ids: vec![invs[0].id.clone(), invs[1].id.clone()],
            reason: "spam wave".into(),
            revoked_by: "moderator-1".into(),
            ..Default::default()
        })
        .await
        .expect("revoke");
    assert_eq!(response.revoked_count, 1, "the spent one stays redeemed");
    let revoked = response.invitations.iter().find(|i| i.id == invs[1].id).expect("listed");
    assert_eq!(revoked.state(), State::Revoked);
    assert_eq!(revoked.revoke_reason, "spam wave");
    assert_eq!(revoked.revoked_by, "moderator-1");
    assert!(revoked.revoke_time.is_some());
    let spent = response.invitations.iter().find(|i| i.id == invs[0].id).expect("listed");
    assert_eq!(spent.state(), State::Redeemed);
    // The edge survives the revoke.
    assert_eq!(app.count("redemptions").await, 1);
    let graph =
        app.graph(pb::GetInviteGraphRequest { user_id: "bob".into(), ..Default::default() }).await.expect("graph");
    assert_eq!(graph.member.expect("member").inviter_id, "alice");

    // Revoking again changes nothing.
    let again = app
        .revoke(pb::RevokeRequest {
            invitation_ids: vec![invs[1].id.clone()],
            reason: "other".into(),
            ..Default::default()
        })
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_count, 0);
    assert_eq!(again.invitations[0].revoke_reason, "spam wave");
}

#[tokio::test]
async fn revoke_all_unspent_of_a_user() {
    let app = TestApp::spawn().await;
    let invs = app.mint_for("alice", 4).await;
    app.mint_for("carol", 2).await;
    app.redeem(&invs[0].code, "bob").await.expect("redeem");
    let response = app
        .revoke(pb::RevokeRequest { user_id: "alice".into(), reason: "left".into(), ..Default::default() })
        .await
        .expect("revoke");
    assert_eq!(response.revoked_count, 3);
    let unspent = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), state: State::Unspent as i32, ..Default::default() })
        .await
        .expect("list");
    assert!(unspent.invitations.is_empty());
    let carol = app
        .list(pb::ListForUserRequest { user_id: "carol".into(), state: State::Unspent as i32, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(carol.invitations.len(), 2, "other users untouched");
}

#[tokio::test]
async fn revoke_of_an_unknown_id_changes_nothing() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let err = app
        .revoke(pb::RevokeRequest {
            invitation_ids: vec![inv.id.clone(), uuid::Uuid::now_v7().to_string()],
            ..Default::default()
        })
        .await
        .expect_err("unknown id");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("invitation_ids"));
    assert!(app.check(&inv.code).await.redeemable);
}
