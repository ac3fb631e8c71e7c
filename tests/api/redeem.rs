use std::time::Duration;

use invitations::domain::code::CodeGenerator;
use invitations::pb;
use invitations::pb::invitation::State;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, wait_until};

#[tokio::test]
async fn redeem_records_the_edge_and_spends_the_invitation() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let redeemed = app.redeem(&inv.code, "bob").await.expect("redeem");
    assert_eq!(redeemed.id, inv.id);
    assert_eq!(redeemed.inviter_id, "alice");
    assert_eq!(redeemed.invitee_id, "bob");
    assert_eq!(redeemed.state(), State::Redeemed);
    assert_eq!(redeemed.uses, 1);
    assert!(redeemed.redeem_time.is_some());

    let alice = app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    assert_eq!(alice.invitations[0].state(), State::Redeemed);
    assert_eq!(alice.invitations[0].invitee_id, "bob");
    let bob = app.list(pb::ListForUserRequest { user_id: "bob".into(), ..Default::default() }).await.expect("list");
    assert_eq!(bob.inviter_id, "alice", "bob's own inviter is shown");
    assert_eq!(app.count("redemptions").await, 1);
}

#[tokio::test]
async fn a_spent_code_is_refused_to_another_user() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    app.redeem(&inv.code, "bob").await.expect("first");
    let err = app.redeem(&inv.code, "carol").await.expect_err("second user");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_REDEEMED", None);
    assert_eq!(app.count("redemptions").await, 1);
}

#[tokio::test]
async fn retrying_a_redeem_returns_the_same_success() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let first = app.redeem(&inv.code, "bob").await.expect("first");
    // Without request_id: same code and invitee.
    let again = app.redeem(&inv.code, "bob").await.expect("retry succeeds");
    assert_eq!(again, first);
    // Typed differently: still the same code.
    let typed = inv.code.to_lowercase().replace('-', " ");
    assert_eq!(app.redeem(&typed, "bob").await.expect("retry"), first);
    assert_eq!(app.count("redemptions").await, 1);

    // With request_id: the stored answer replays.
    let inv2 = app.mint_one("alice").await;
    let req = pb::RedeemRequest {
        code: inv2.code.clone(),
        invitee_id: "carol".into(),
        request_id: "signup-77".into(),
        ..Default::default()
    };
    let one = app.redeem_req(req.clone()).await.expect("first");
    let two = app.redeem_req(req).await.expect("replay");
    assert_eq!(one, two);
}

#[tokio::test]
async fn a_user_cannot_redeem_their_own_invitation() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let err = app.redeem(&inv.code, "alice").await.expect_err("self");
    assert_error(&err, Code::FailedPrecondition, "SELF_INVITE", None);
    assert!(app.check(&inv.code).await.redeemable, "nothing spent");
}

#[tokio::test]
async fn a_user_joins_through_one_invitation_only() {
    let app = TestApp::spawn().await;
    let a = app.mint_one("alice").await;
    let b = app.mint_one("dave").await;
    app.redeem(&a.code, "bob").await.expect("first");
    let err = app.redeem(&b.code, "bob").await.expect_err("second invitation");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_INVITED", None);
    assert!(app.check(&b.code).await.redeemable, "the second code is not spent");
}

#[tokio::test]
async fn redeeming_a_code_from_your_own_descendant_is_a_cycle() {
    let app = TestApp::spawn().await;
    // alice -> bob -> carol
    let a = app.mint_one("alice").await;
    app.redeem(&a.code, "bob").await.expect("bob joins");
    let b = app.mint_one("bob").await;
    app.redeem(&b.code, "carol").await.expect("carol joins");
    // alice (a root) tries a code minted by bob (her invitee) and by carol.
    let from_bob = app.mint_one("bob").await;
    let err = app.redeem(&from_bob.code, "alice").await.expect_err("direct cycle");
    assert_error(&err, Code::FailedPrecondition, "INVITE_CYCLE", None);
    let from_carol = app.mint_one("carol").await;
    let err = app.redeem(&from_carol.code, "alice").await.expect_err("transitive cycle");
    assert_error(&err, Code::FailedPrecondition, "INVITE_CYCLE", None);
    assert_eq!(app.count("redemptions").await, 2);
    // A root with invitees may still join another tree.
    let from_zed = app.mint_one("zed").await;
    let joined = app.redeem(&from_zed.code, "alice").await.expect("merge into zed's tree");
    assert_eq!(joined.inviter_id, "zed");
}

#[tokio::test]
async fn an_expired_invitation_cannot_be_redeemed() {
    let app = TestApp::spawn().await;
    let inv = app
        .mint(pb::MintRequest {
            user_ids: vec!["alice".into()],
            ttl: Some(prost_types::Duration { seconds: 0, nanos: 300_000_000 }),
            ..Default::default()
        })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    wait_until(Duration::from_secs(5), "the invitation to expire", || async {
        app.check(&inv.code).await.reason == "EXPIRED"
    })
    .await;
    let err = app.redeem(&inv.code, "bob").await.expect_err("expired");
    assert_error(&err, Code::FailedPrecondition, "EXPIRED", None);
    let listed =
        app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    assert_eq!(listed.invitations[0].state(), State::Expired);
}

#[tokio::test]
async fn a_revoked_invitation_cannot_be_redeemed() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    app.revoke(pb::RevokeRequest { invitation_ids: vec![inv.id.clone()], ..Default::default() }).await.expect("revoke");
    let err = app.redeem(&inv.code, "bob").await.expect_err("revoked");
    assert_error(&err, Code::FailedPrecondition, "REVOKED", None);
}

#[tokio::test]
async fn unknown_mistyped_and_malformed_codes() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;

    let unknown = CodeGenerator::new(15).expect("length").generate().expect("rng");
    let err = app.redeem(unknown.as_str(), "bob").await.expect_err("unknown");
    assert_error(&err, Code::NotFound, "CODE_NOT_FOUND", None);

    // One symbol changed: caught by the check symbol, no lookup needed.
    let mut typo: Vec<char> = inv.code.chars().collect();
    typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let err = app.redeem(&typo, "bob").await.expect_err("typo");
    assert_error(&err, Code::InvalidArgument, "CODE_CHECKSUM_MISMATCH", Some("code"));

    // Two neighbours swapped.
    let mut swapped: Vec<char> = inv.code.replace('-', "").chars().collect();
    let i = (0..swapped.len() - 1).find(|&i| swapped[i] != swapped[i + 1]).expect("some distinct neighbours");
    swapped.swap(i, i + 1);
    let err = app.redeem(&swapped.into_iter().collect::<String>(), "bob").await.expect_err("swap");
    assert_error(&err, Code::InvalidArgument, "CODE_CHECKSUM_MISMATCH", Some("code"));

    for malformed in ["hello", "0000-0000-0000-0000", "ABCD-EFGH", "ABCD-EFGH-JKMN-PQR$"] {
        let err = app.redeem(malformed, "bob").await.expect_err("malformed");
        assert_error(&err, Code::InvalidArgument, "INVALID_CODE_FORMAT", Some("code"));
    }
    assert_eq!(app.count("redemptions").await, 0);
    assert!(app.check(&inv.code).await.redeemable);
}

#[tokio::test]
async fn multi_use_invitations_count_their_uses() {
    let app = TestApp::spawn().await;
    let inv = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], max_uses: 3, ..Default::default() })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    for (n, who) in ["u1", "u2", "u3"].iter().enumerate() {
        let r = app.redeem(&inv.code, who).await.expect("use");
        assert_eq!(r.uses, n as u32 + 1);
        assert_eq!(r.invitee_id, *who);
        assert_eq!(r.state(), if n == 2 { State::Redeemed } else { State::Unspent });
    }
    let err = app.redeem(&inv.code, "u4").await.expect_err("no uses left");
    assert_error(&err, Code::FailedPrecondition, "ALREADY_REDEEMED", None);
    // An earlier redeemer's retry still answers with their own redemption.
    assert_eq!(app.redeem(&inv.code, "u1").await.expect("retry").invitee_id, "u1");
    assert_eq!(app.count("redemptions").await, 3);
}
