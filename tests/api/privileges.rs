//! SetInvitePrivileges: a disabled member receives no invitations and its
//! unspent ones stop working until re-enabled; revoke_subtree revokes the
//! unspent invitations of everyone below it in one call.

use invitations::pb;
use tonic::Code;
use tonic_types::StatusExt;

use invitations::pb::invitation_event::Event as Payload;
use prost::Message;

use crate::helpers::{TestApp, assert_error};
use crate::reservations::{reserve, reserve_req};

fn set(user: &str, enabled: bool) -> pb::SetInvitePrivilegesRequest {
    pb::SetInvitePrivilegesRequest {
        user_id: user.into(),
        enabled,
        reason: "brought in spammers".into(),
        updated_by: "mod-kim".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_disabled_member_cannot_receive_or_hand_out_invitations_until_re_enabled() {
    let app = TestApp::spawn().await;
    let codes: Vec<String> = app.mint_for("ivy", 4).await.into_iter().map(|i| i.code).collect();
    // A use reserved before the change cannot be completed during it either.
    let held = reserve(&app, reserve_req(&codes[3])).await.expect("reserve");

    let r = app.privileges(set("ivy", false)).await.expect("disable");
    assert!(r.changed);
    let p = r.privileges.expect("privileges");
    assert!(!p.enabled);
    assert_eq!((p.reason.as_str(), p.updated_by.as_str()), ("brought in spammers", "mod-kim"));
    assert!(p.update_time.is_some());

    let err = app.mint(pb::MintRequest { user_ids: vec!["ok".into(), "ivy".into()], ..Default::default() }).await;
    let err = err.expect_err("no invitations for a disabled member");
    assert_error(&err, Code::FailedPrecondition, "INVITE_PRIVILEGES_DISABLED", None);
    let violation = &err.get_details_precondition_failure().expect("PreconditionFailure").violations[0];
    assert_eq!(violation.subject, "ivy");
    let dry = pb::MintRequest { user_ids: vec!["ivy".into()], dry_run: true, ..Default::default() };
    assert_error(
        &app.mint(dry).await.expect_err("dry run too"),
        Code::FailedPrecondition,
        "INVITE_PRIVILEGES_DISABLED",
        None,
    );
    assert_eq!(app.count("invitations").await, 4, "nothing minted, not even for `ok`");

    let err = app.redeem(&codes[0], "newbie").await.expect_err("inert");
    assert_error(&err, Code::FailedPrecondition, "INVITER_DISABLED", None);
    let err = reserve(&app, reserve_req(&codes[1])).await.expect_err("inert");
    assert_error(&err, Code::FailedPrecondition, "INVITER_DISABLED", None);
    let check = app.check(&codes[2]).await;
    assert!(!check.redeemable);
    assert_eq!(check.reason, "INVITER_DISABLED");
    let complete =
        pb::RedeemRequest { reservation_id: held.id.clone(), invitee_id: "late".into(), ..Default::default() };
    assert_error(
        &app.redeem_req(complete.clone()).await.expect_err("inert"),
        Code::FailedPrecondition,
        "INVITER_DISABLED",
        None,
    );
    assert_eq!(app.count("redemptions").await, 0);
    // Not revoked: still unspent, waiting.
    let listed = app.list(pb::ListForUserRequest { user_id: "ivy".into(), ..Default::default() }).await.expect("list");
    assert!(listed.invitations.iter().all(|i| i.state == pb::invitation::State::Unspent as i32));

    let again = app.privileges(set("ivy", false)).await.expect("disable again");
    assert!(!again.changed, "already disabled");
    let r = app.privileges(pb::SetInvitePrivilegesRequest { reason: "appeal".into(), ..set("ivy", true) }).await;
    let r = r.expect("enable");
    assert!(r.changed && r.privileges.as_ref().is_some_and(|p| p.enabled && p.reason == "appeal"));

    app.redeem(&codes[0], "newbie").await.expect("works again");
    assert!(app.check(&codes[2]).await.redeemable);
    app.redeem_req(complete).await.expect("the held use completes");
    app.mint_one("ivy").await;
    let g = app.graph(pb::GetInviteGraphRequest { user_id: "ivy".into(), ..Default::default() }).await.expect("graph");
    let shown = g.member.expect("member").invite_privileges.expect("privileges shown");
    assert!(shown.enabled && shown.reason == "appeal" && shown.updated_by == "mod-kim");
}

#[tokio::test]
async fn revoke_subtree_revokes_the_unspent_invitations_of_everyone_below() {
    let app = TestApp::spawn().await;
    // top -> mid -> low, top -> side; elsewhere: other.
    let c = app.mint_one("top").await.code;
    app.redeem(&c, "mid").await.expect("mid");
    let c = app.mint_one("mid").await.code;
    app.redeem(&c, "low").await.expect("low");
    let c = app.mint_one("top").await.code;
    app.redeem(&c, "side").await.expect("side");
    let top_own = app.mint_for("top", 2).await;
    app.mint_for("mid", 3).await;
    let low = app.mint_for("low", 2).await;
    app.mint_for("side", 1).await;
    let other = app.mint_for("other", 2).await;
    app.redeem(&low[0].code, "spent-one").await.expect("spent before");

    let r = app
        .privileges(pb::SetInvitePrivilegesRequest { revoke_subtree: true, ..set("top", false) })
        .await
        .expect("disable and revoke");
    // mid 3 + low 1 left (+ spent-one has none) + side 1; top's own are not revoked.
    assert_eq!(r.revoked_count, 5);
    // In the outbox, from the same transaction: the change and the revocations.
    let events = outbox_events(&app, &["privileges_changed", "revoked"]).await;
    let mut revoked_ids = Vec::new();
    let mut changes = Vec::new();
    for event in events {
        match event.event {
            Some(Payload::PrivilegesChanged(c)) => changes.push((c.user_id, c.enabled, c.reason, c.changed_by)),
            Some(Payload::Revoked(r)) => {
                assert_eq!((r.reason.as_str(), r.revoked_by.as_str()), ("brought in spammers", "mod-kim"));
                revoked_ids.extend(r.invitations.into_iter().map(|i| i.invitation_id));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    let want = ("top".to_owned(), false, "brought in spammers".to_owned(), "mod-kim".to_owned());
    assert_eq!(changes, [want]);
    assert_eq!(revoked_ids.len(), 5);
    for user in ["mid", "low", "side"] {
        let listed = app.list(pb::ListForUserRequest { user_id: user.into(), ..Default::default() }).await;
        for inv in listed.expect("list").invitations {
            if inv.uses == inv.max_uses {
                assert_eq!(inv.state, pb::invitation::State::Redeemed as i32, "spent stays spent");
                assert!(inv.revoke_time.is_none());
            } else {
                assert_eq!(inv.state, pb::invitation::State::Revoked as i32, "{user}");
                assert_eq!((inv.revoke_reason.as_str(), inv.revoked_by.as_str()), ("brought in spammers", "mod-kim"));
            }
        }
    }
    let top = app.list(pb::ListForUserRequest { user_id: "top".into(), ..Default::default() }).await.expect("list");
    let unspent = pb::invitation::State::Unspent as i32;
    assert_eq!(top.invitations.iter().filter(|i| i.state == unspent).count(), top_own.len());
    assert!(app.check(&other[0].code).await.redeemable, "other trees untouched");

    // Re-enabled: top's own work again; the revoked ones stay revoked. A
    // repeated setting changes nothing and says nothing.
    app.privileges(set("top", true)).await.expect("enable");
    app.privileges(set("top", true)).await.expect("enable again");
    assert_eq!(outbox_events(&app, &["privileges_changed"]).await.len(), 2);
    app.redeem(&top_own[0].code, "fresh").await.expect("top's own invitation works");
    let err = app.redeem(&low[1].code, "fresh-2").await.expect_err("revoked");
    assert_error(&err, Code::FailedPrecondition, "REVOKED", None);
}

#[tokio::test]
async fn bad_privilege_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.mint_for("ivy", 1).await;
    let cases = vec![
        (pb::SetInvitePrivilegesRequest { user_id: String::new(), ..set("x", false) }, "user_id"),
        (pb::SetInvitePrivilegesRequest { reason: "r".repeat(1025), ..set("ivy", false) }, "reason"),
        (pb::SetInvitePrivilegesRequest { updated_by: "u".repeat(129), ..set("ivy", false) }, "updated_by"),
        (pb::SetInvitePrivilegesRequest { revoke_subtree: true, ..set("ivy", true) }, "revoke_subtree"),
    ];
    for (request, field) in cases {
        let err = app.privileges(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    let err = app.privileges(set("nobody", false)).await.expect_err("unknown");
    assert_error(&err, Code::NotFound, "NOT_FOUND", Some("user_id"));
    assert_eq!(app.count("members").await, 1, "the unknown user was not created");
    let g = app.graph(pb::GetInviteGraphRequest { user_id: "ivy".into(), ..Default::default() }).await.expect("graph");
    let p = g.member.expect("member").invite_privileges.expect("privileges");
    assert!(p.enabled && p.reason.is_empty() && p.update_time.is_none(), "never changed: {p:?}");
}

/// The decoded events of these types in the outbox, in order.
async fn outbox_events(app: &TestApp, types: &[&str]) -> Vec<pb::InvitationEvent> {
    let pool = app.pool().await;
    let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    let payloads: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = ANY($1) ORDER BY seq")
            .bind(&types)
            .fetch_all(&pool)
            .await
            .expect("outbox");
    pool.close().await;
    payloads.iter().map(|p| pb::InvitationEvent::decode(p.as_slice()).expect("an InvitationEvent")).collect()
}
