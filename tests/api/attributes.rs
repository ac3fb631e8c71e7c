//! Invitation attributes (issue 18): what Mint, waves and quota grants set is
//! stored, returned by Mint, ListForUser, CheckCode, Reserve and Redeem (the
//! one-statement path and the general one), and carried in `redeemed` events
//! through a real nats-server; over-limit maps are INVALID_ARGUMENT naming
//! the key and change nothing.

use std::collections::BTreeMap;

use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;
use invitations::pb::selector::Criterion;
use tonic_types::StatusExt;

use crate::events::{WAIT, relay_args, spawn, wait_relay};
use crate::helpers::{TestApp, assert_error, member};
use crate::nats::NatsServer;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn mint_with(user: &str, attributes: &BTreeMap<String, String>) -> pb::MintRequest {
    pb::MintRequest { user_ids: vec![user.into()], attributes: attributes.clone(), ..Default::default() }
}

#[tokio::test]
async fn attributes_come_back_from_every_read_and_both_redeem_paths() {
    let app = TestApp::spawn().await;
    let attrs = map(&[("org", "acme"), ("role", "editor"), ("follow", "alice")]);
    let minted = app.mint(mint_with("alice", &attrs)).await.expect("mint");
    let inv = &minted.invitations[0];
    assert_eq!(inv.attributes, attrs, "Mint's answer");

    let page = app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    assert_eq!(page.invitations[0].attributes, attrs, "ListForUser");
    assert_eq!(app.check(&inv.code).await.attributes, attrs, "CheckCode");

    // Reserve, then complete it (the reservation's path).
    let reserved = app
        .client
        .clone()
        .reserve(pb::ReserveRequest { code: inv.code.clone(), ..Default::default() })
        .await
        .expect("reserve")
        .into_inner();
    assert_eq!(reserved.attributes, attrs, "Reserve");
    let reservation_id = reserved.reservation.expect("reservation").id;
    let redeemed = app
        .redeem_req(pb::RedeemRequest { reservation_id, invitee_id: "bob".into(), ..Default::default() })
        .await
        .expect("redeem the reservation");
    assert_eq!(redeemed.attributes, attrs, "Redeem completing a reservation");

    // The one-statement Redeem.
    let other = app.mint(mint_with("alice", &map(&[("group", "beta")]))).await.expect("mint");
    let redeemed = app.redeem(&other.invitations[0].code, "carol").await.expect("redeem");
    assert_eq!(redeemed.attributes, map(&[("group", "beta")]), "one-statement Redeem");

    // A bound invitation is reserved and redeemed on the general path.
    let bound = app
        .mint(pb::MintRequest {
            user_ids: vec!["alice".into()],
            bound_email: "dan@example.com".into(),
            max_uses: 2,
            attributes: map(&[("team", "ops")]),
            ..Default::default()
        })
        .await
        .expect("mint bound");
    let code = bound.invitations[0].code.clone();
    let reserved = app
        .client
        .clone()
        .reserve(pb::ReserveRequest { code: code.clone(), email: "dan@example.com".into(), ..Default::default() })
        .await
        .expect("reserve bound")
        .into_inner();
    assert_eq!(reserved.attributes, map(&[("team", "ops")]), "Reserve's general path");
    let redeemed = app
        .redeem_req(pb::RedeemRequest {
            code,
            invitee_id: "dan".into(),
            email: "dan@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("redeem the other use");
    assert_eq!(redeemed.attributes, map(&[("team", "ops")]), "general-path Redeem");

    // Without attributes: an empty map everywhere.
    let plain = app.mint_one("alice").await;
    assert!(plain.attributes.is_empty());
    assert!(app.check(&plain.code).await.attributes.is_empty());
}

#[tokio::test]
async fn over_limit_attributes_are_invalid_naming_the_key_and_mint_nothing() {
    let app = TestApp::spawn().await;
    let before = app.count("invitations").await;
    let long = "v".repeat(513);
    let cases: Vec<(BTreeMap<String, String>, &str)> = vec![
        (map(&[("role", &long)]), "attributes.role"),
        (map(&[("role", "a\u{0}b")]), "attributes.role"),
        (map(&[("bad key", "x")]), "attributes"),
        (map(&[(&"k".repeat(65), "x")]), "attributes"),
        ((0..17).map(|i| (format!("k{i}"), String::new())).collect(), "attributes"),
        ((0..9).map(|i| (format!("key{i}"), "v".repeat(500))).collect(), "attributes"),
    ];
    for (attributes, field) in cases {
        let status = app.mint(mint_with("alice", &attributes)).await.expect_err("over a limit");
        assert_error(&status, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
        if field == "attributes" {
            continue;
        }
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert!(bad.field_violations.iter().all(|v| v.field != "attributes"), "{:?}", bad.field_violations);
    }
    // The message names a bad key that cannot be a field name.
    let status = app.mint(mint_with("alice", &map(&[("bad key", "x")]))).await.expect_err("bad key");
    let bad = status.get_details_bad_request().expect("BadRequest");
    assert!(bad.field_violations[0].description.contains("\"bad key\""), "{:?}", bad.field_violations);
    assert_eq!(app.count("invitations").await, before, "nothing minted");
    // At the limits: accepted.
    let at_limit: BTreeMap<String, String> = (0..8).map(|i| (format!("key{i}"), "v".repeat(508))).collect();
    let minted = app.mint(mint_with("alice", &at_limit)).await.expect("4096 bytes in all");
    assert_eq!(minted.invitations[0].attributes, at_limit);
}

#[tokio::test]
async fn waves_and_quota_grants_carry_their_attributes() {
    let app = TestApp::spawn_with(&[
        "--welcome-grant",
        "1",
        "--refill-to",
        "1",
        "--grant-attributes",
        "source=welcome,group=beta",
    ])
    .await;
    let welcome = map(&[("group", "beta"), ("source", "welcome")]);
    // A welcome grant on RegisterMembers (the general path) ...
    app.register(vec![member("ana", Some(1_700_000_000), None)]).await.expect("register");
    let page = app.list(pb::ListForUserRequest { user_id: "ana".into(), ..Default::default() }).await.expect("list");
    assert_eq!(page.invitations.len(), 1);
    assert_eq!(page.invitations[0].attributes, welcome, "welcome grant on registering");
    // ... and in the one-statement Redeem (inv_mint_grant).
    app.redeem(&page.invitations[0].code, "ben").await.expect("redeem");
    let page = app.list(pb::ListForUserRequest { user_id: "ben".into(), ..Default::default() }).await.expect("list");
    assert_eq!(page.invitations.len(), 1);
    assert_eq!(page.invitations[0].attributes, welcome, "welcome grant on redeeming");
    // ana's spent invitation was refilled, with the same attributes, on the
    // one-statement path and on the general one (a request_id takes it).
    let refilled = |app: &TestApp, who: &'static str| {
        let request = pb::ListForUserRequest {
            user_id: who.into(),
            state: pb::invitation::State::Unspent as i32,
            ..Default::default()
        };
        let mut client = app.client.clone();
        async move { client.list_for_user(request).await.expect("list").into_inner().invitations }
    };
    let ana = refilled(&app, "ana").await;
    assert_eq!(ana.len(), 1, "refilled to one");
    assert_eq!(ana[0].attributes, welcome, "refill grant (one-statement Redeem)");
    let general = pb::RedeemRequest {
        code: ana[0].code.clone(),
        invitee_id: "cy".into(),
        request_id: "r-cy".into(),
        ..Default::default()
    };
    app.redeem_req(general).await.expect("redeem on the general path");
    let ana = refilled(&app, "ana").await;
    assert_eq!(ana.len(), 1, "refilled again");
    assert_eq!(ana[0].attributes, welcome, "refill grant (general Redeem)");

    // A wave: every member with no unspent invitation (ana, once her refill
    // is revoked).
    app.revoke(pb::RevokeRequest { user_id: "ana".into(), ..Default::default() }).await.expect("revoke");
    let attrs = map(&[("campaign", "spring")]);
    let wave = app
        .mint(pb::MintRequest {
            selector: Some(pb::Selector {
                criterion: Some(Criterion::NoUnspentInvitation(pb::NoUnspentInvitation {})),
            }),
            count: 10,
            attributes: attrs.clone(),
            ..Default::default()
        })
        .await
        .expect("wave");
    assert!(wave.minted_count >= 1, "ana matches");
    assert!(wave.invitations.iter().all(|i| i.attributes == attrs), "{:?}", wave.invitations);
}

#[tokio::test]
async fn redeemed_events_carry_attributes_through_nats() {
    let nats = NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    wait_relay(&app, tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    let consumer = nats.consumer().await;
    let attrs = map(&[("org", "acme"), ("role", "viewer")]);
    let minted = app.mint(mint_with("alice", &attrs)).await.expect("mint");
    let plain = app.mint_one("alice").await;
    app.redeem(&minted.invitations[0].code, "bob").await.expect("redeem");
    app.redeem(&plain.code, "carol").await.expect("redeem");
    // The general path: a reservation completed by Redeem.
    let reserved = app.mint(mint_with("alice", &map(&[("team", "ops")]))).await.expect("mint");
    let reservation = app
        .client
        .clone()
        .reserve(pb::ReserveRequest { code: reserved.invitations[0].code.clone(), ..Default::default() })
        .await
        .expect("reserve")
        .into_inner()
        .reservation
        .expect("a reservation");
    app.redeem_req(pb::RedeemRequest {
        reservation_id: reservation.id,
        invitee_id: "dan".into(),
        ..Default::default()
    })
    .await
    .expect("complete the reservation");
    // Three minted events, three redeemed (and the reservation's own two).
    let received = consumer.wait_for(8, WAIT).await;
    let redeemed: Vec<pb::Redeemed> = received
        .iter()
        .filter_map(|r| match r.payload() {
            Payload::Redeemed(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(redeemed.len(), 3);
    let by_invitee = |who: &str| redeemed.iter().find(|e| e.invitee_id == who).expect("event").attributes.clone();
    assert_eq!(by_invitee("bob"), attrs);
    assert!(by_invitee("carol").is_empty());
    assert_eq!(by_invitee("dan"), map(&[("team", "ops")]), "the general path's redeemed event");
}
