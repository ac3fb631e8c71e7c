//! UpdateInvitation and RestoreInvitation (issue 18): edits by field mask,
//! the refusals with their reasons, the `updated` and `restored` events, the
//! race of an edit lowering max_uses against 20 concurrent redeems, and
//! restoring after a revoke (and refusing after expiry or with the owner's
//! privileges off).

use std::collections::BTreeMap;

use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;
use prost::Message;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, assert_error};

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

pub async fn update(
    app: &TestApp,
    id: &str,
    paths: &[&str],
    update: pb::InvitationUpdate,
) -> Result<pb::Invitation, tonic::Status> {
    let request = pb::UpdateInvitationRequest {
        invitation_id: id.into(),
        invitation: Some(update),
        update_mask: mask(paths),
        updated_by: "ops".into(),
        ..Default::default()
    };
    app.client.clone().update_invitation(request).await.map(|r| r.into_inner().invitation.expect("the invitation"))
}

pub async fn restore(app: &TestApp, id: &str) -> Result<pb::Invitation, tonic::Status> {
    let request = pb::RestoreInvitationRequest {
        invitation_id: id.into(),
        reason: "revoked by mistake".into(),
        restored_by: "ops".into(),
        ..Default::default()
    };
    app.client.clone().restore_invitation(request).await.map(|r| r.into_inner().invitation.expect("the invitation"))
}

async fn events(app: &TestApp, event_type: &str) -> Vec<Payload> {
    let pool = app.pool().await;
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY seq")
        .bind(event_type)
        .fetch_all(&pool)
        .await
        .expect("outbox");
    payloads
        .iter()
        .map(|p| pb::InvitationEvent::decode(p.as_slice()).expect("decodes").event.expect("an event"))
        .collect()
}

fn in_days(days: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time::OffsetDateTime::now_utc().unix_timestamp() + days * 86_400, nanos: 0 }
}

#[tokio::test]
async fn update_changes_only_the_masked_fields_and_announces_them() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let attributes: BTreeMap<String, String> = [("role".to_string(), "editor".to_string())].into();
    let new = pb::InvitationUpdate {
        expire_time: Some(in_days(7)),
        max_uses: 5,
        label: "spring".into(),
        note: "for the team".into(),
        attributes: attributes.clone(),
    };
    // Only label and max_uses are in the mask: the rest is ignored.
    let updated = update(&app, &inv.id, &["label", "max_uses"], new.clone()).await.expect("update");
    assert_eq!((updated.label.as_str(), updated.max_uses), ("spring", 5));
    assert_eq!((updated.note.as_str(), updated.expire_time, updated.attributes.len()), ("", None, 0));
    assert_eq!(updated.code, inv.code, "the answer shows the code like Mint");
    let updated = update(&app, &inv.id, &["*"], new.clone()).await.expect("update all");
    assert_eq!(updated.expire_time, new.expire_time);
    assert_eq!(updated.note, "for the team");
    assert_eq!(updated.attributes, attributes);
    // Clearing the expiry: expire_time in the mask, unset.
    let cleared = update(&app, &inv.id, &["expire_time"], pb::InvitationUpdate::default()).await.expect("clear");
    assert_eq!(cleared.expire_time, None);
    // The same values again change nothing and announce nothing.
    update(&app, &inv.id, &["label"], pb::InvitationUpdate { label: "spring".into(), ..Default::default() })
        .await
        .expect("no-op");

    let events = events(&app, "updated").await;
    let changed: Vec<Vec<String>> = events
        .iter()
        .map(|e| match e {
            Payload::Updated(u) => u.changed_fields.clone(),
            other => panic!("not an updated event: {other:?}"),
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            vec!["max_uses".to_string(), "label".into()],
            vec!["expire_time".into(), "note".into(), "attributes".into()],
            vec!["expire_time".into()],
        ]
    );
    let Payload::Updated(second) = &events[1] else { unreachable!() };
    assert_eq!((second.inviter_id.as_str(), second.updated_by.as_str()), ("alice", "ops"));
    assert_eq!((second.max_uses, second.label.as_str()), (5, "spring"));
    assert_eq!(second.attributes, attributes);
    assert_eq!(second.expire_time, new.expire_time);
}

#[tokio::test]
async fn update_refusals_name_their_reason_and_change_nothing() {
    let app = TestApp::spawn().await;
    let multi = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], max_uses: 3, ..Default::default() })
        .await
        .expect("mint")
        .invitations
        .remove(0);
    app.redeem(&multi.code, "bob").await.expect("redeem");
    // One use spent, one held by a live reservation: max_uses 1 (= the uses
    // spent) is below spent + held; 2 is the floor.
    app.client
        .clone()
        .reserve(pb::ReserveRequest { code: multi.code.clone(), ..Default::default() })
        .await
        .expect("reserve");
    let uses = |n| pb::InvitationUpdate { max_uses: n, ..Default::default() };
    let status = update(&app, &multi.id, &["max_uses"], uses(1)).await.expect_err("below spent and held");
    assert_error(&status, tonic::Code::FailedPrecondition, "MAX_USES_BELOW_HELD", None);
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    assert_eq!(failure.violations[0].subject, "max_uses");
    assert!(status.message().contains("at least 2"), "{}", status.message());

    // Bad input: the field named.
    let status = update(&app, &multi.id, &["uses"], uses(4)).await.expect_err("not updatable");
    assert_error(&status, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("update_mask"));
    let status = update(&app, &multi.id, &[], uses(4)).await.expect_err("no mask");
    assert_error(&status, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("update_mask"));
    let past = pb::InvitationUpdate { expire_time: Some(in_days(-1)), ..Default::default() };
    let status = update(&app, &multi.id, &["expire_time"], past).await.expect_err("in the past");
    assert_error(&status, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("invitation.expire_time"));
    let bad = pb::InvitationUpdate { attributes: [("role".to_string(), "x".repeat(600))].into(), ..Default::default() };
    let status = update(&app, &multi.id, &["attributes"], bad).await.expect_err("too long");
    assert_error(&status, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("invitation.attributes.role"));
    let status = update(&app, &uuid::Uuid::now_v7().to_string(), &["max_uses"], uses(4)).await.expect_err("none");
    assert_error(&status, tonic::Code::NotFound, "NOT_FOUND", Some("invitation_id"));

    // Revoked, and fully spent.
    let revoked = app.mint_one("alice").await;
    app.revoke(pb::RevokeRequest { invitation_ids: vec![revoked.id.clone()], ..Default::default() })
        .await
        .expect("revoke");
    let status = update(&app, &revoked.id, &["max_uses"], uses(4)).await.expect_err("revoked");
    assert_error(&status, tonic::Code::FailedPrecondition, "REVOKED", None);
    let spent = app.mint_one("alice").await;
    app.redeem(&spent.code, "carol").await.expect("redeem");
    let status = update(&app, &spent.id, &["max_uses"], uses(4)).await.expect_err("spent");
    assert_error(&status, tonic::Code::FailedPrecondition, "ALREADY_REDEEMED", None);

    assert!(events(&app, "updated").await.is_empty(), "no refused edit is announced");
    let page = app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    let multi_now = page.invitations.iter().find(|i| i.id == multi.id).expect("listed");
    assert_eq!((multi_now.max_uses, multi_now.expire_time.is_none()), (3, true), "unchanged");
    // At the floor, and raising, are fine.
    assert_eq!(update(&app, &multi.id, &["max_uses"], uses(2)).await.expect("at the floor").max_uses, 2);
    assert_eq!(update(&app, &multi.id, &["max_uses"], uses(10)).await.expect("raise").max_uses, 10);
}

#[tokio::test]
async fn update_is_idempotent_with_request_id() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let request = pb::UpdateInvitationRequest {
        invitation_id: inv.id.clone(),
        invitation: Some(pb::InvitationUpdate { label: "a".into(), ..Default::default() }),
        update_mask: mask(&["label"]),
        request_id: "edit-1".into(),
        ..Default::default()
    };
    let first = app.client.clone().update_invitation(request.clone()).await.expect("first").into_inner();
    // Someone else edits in between; the replay still answers the first.
    update(&app, &inv.id, &["label"], pb::InvitationUpdate { label: "b".into(), ..Default::default() })
        .await
        .expect("other edit");
    let again = app.client.clone().update_invitation(request.clone()).await.expect("replay").into_inner();
    assert_eq!(again, first);
    assert_eq!(events(&app, "updated").await.len(), 2, "the replay changed nothing");
    let mut other = request;
    other.invitation = Some(pb::InvitationUpdate { label: "c".into(), ..Default::default() });
    let status = app.client.clone().update_invitation(other).await.expect_err("reused");
    assert_error(&status, tonic::Code::InvalidArgument, "REQUEST_ID_REUSED", Some("request_id"));
}

/// An edit lowering max_uses from 20 to 10 while 20 invitees redeem at once:
/// whichever order the row lock gives them, uses never exceed max_uses, and
/// every successful redeem is a counted use.
#[tokio::test]
async fn lowering_max_uses_against_20_concurrent_redeems_never_overspends() {
    let app = TestApp::spawn().await;
    for round in 0..3 {
        let inv = app
            .mint(pb::MintRequest { user_ids: vec!["alice".into()], max_uses: 20, ..Default::default() })
            .await
            .expect("mint")
            .invitations
            .remove(0);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let client = app.client.clone();
            let code = inv.code.clone();
            tasks.spawn(async move {
                let request = pb::RedeemRequest { code, invitee_id: format!("r{round}-{i}"), ..Default::default() };
                client.clone().redeem(request).await.is_ok()
            });
        }
        // Started among the redeems, after about half of them were spawned.
        let lowered = update(&app, &inv.id, &["max_uses"], pb::InvitationUpdate { max_uses: 10, ..Default::default() });
        let lowered = lowered.await;
        let mut redeemed = 0;
        while let Some(ok) = tasks.join_next().await {
            redeemed += u32::from(ok.expect("task"));
        }
        let pool = app.pool().await;
        let (uses, max_uses): (i32, i32) = sqlx::query_as("SELECT uses, max_uses FROM invitations WHERE id = $1::uuid")
            .bind(&inv.id)
            .fetch_one(&pool)
            .await
            .expect("row");
        assert!(uses <= max_uses, "round {round}: {uses} uses of {max_uses}");
        assert_eq!(uses as u32, redeemed, "round {round}: every success is a use");
        match lowered {
            Ok(updated) => {
                assert_eq!(max_uses, 10);
                assert!(updated.uses <= 10);
                assert_eq!(redeemed, 10, "round {round}: the rest were refused at the new limit");
            }
            // More than ten uses were spent (or held) when the edit came; or
            // all twenty were, and a fully spent invitation is not edited.
            Err(status) => {
                let spent = status.get_details_error_info().is_some_and(|i| i.reason == "ALREADY_REDEEMED");
                let reason = if spent && uses == 20 { "ALREADY_REDEEMED" } else { "MAX_USES_BELOW_HELD" };
                assert_error(&status, tonic::Code::FailedPrecondition, reason, None);
                assert_eq!(max_uses, 20);
            }
        }
    }
}

#[tokio::test]
async fn restore_after_revoke_makes_it_redeemable_again() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    app.revoke(pb::RevokeRequest { invitation_ids: vec![inv.id.clone()], reason: "oops".into(), ..Default::default() })
        .await
        .expect("revoke");
    assert_eq!(app.check(&inv.code).await.reason, "REVOKED");
    let restored = restore(&app, &inv.id).await.expect("restore");
    assert_eq!(restored.state, pb::invitation::State::Unspent as i32);
    assert_eq!((restored.revoke_reason.as_str(), restored.revoke_time), ("", None));
    assert!(app.check(&inv.code).await.redeemable);
    let status = restore(&app, &inv.id).await.expect_err("not revoked any more");
    assert_error(&status, tonic::Code::FailedPrecondition, "NOT_REVOKED", None);
    app.redeem(&inv.code, "bob").await.expect("redeem the restored invitation");

    let events = events(&app, "restored").await;
    assert_eq!(events.len(), 1);
    let Payload::Restored(event) = &events[0] else { panic!("a restored event") };
    assert_eq!((event.reason.as_str(), event.restored_by.as_str()), ("revoked by mistake", "ops"));
    let r = event.invitation.as_ref().expect("invitation");
    assert_eq!((r.invitation_id.as_str(), r.inviter_id.as_str()), (inv.id.as_str(), "alice"));

    let status = restore(&app, &uuid::Uuid::now_v7().to_string()).await.expect_err("none");
    assert_error(&status, tonic::Code::NotFound, "NOT_FOUND", Some("invitation_id"));
}

#[tokio::test]
async fn restore_is_refused_after_expiry_or_with_privileges_off() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = app.mint_for("alice", 2).await.into_iter().map(|i| i.id).collect();
    app.revoke(pb::RevokeRequest { invitation_ids: ids.clone(), ..Default::default() }).await.expect("revoke");
    // The first expired meanwhile (its stored time moved back).
    let pool = app.pool().await;
    sqlx::query("UPDATE invitations SET expire_time = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&ids[0])
        .execute(&pool)
        .await
        .expect("expire");
    let status = restore(&app, &ids[0]).await.expect_err("expired");
    assert_error(&status, tonic::Code::FailedPrecondition, "EXPIRED", None);
    // The owner's privileges are off.
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "alice".into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
    let status = restore(&app, &ids[1]).await.expect_err("disabled");
    assert_error(&status, tonic::Code::FailedPrecondition, "INVITER_DISABLED", None);
    assert!(events(&app, "restored").await.is_empty());
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invitations WHERE inviter_id = 'alice' AND revoke_time IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(revoked, 2, "both still revoked");
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "alice".into(), enabled: true, ..Default::default() })
        .await
        .expect("enable");
    restore(&app, &ids[1]).await.expect("restored once privileges are back");
}

#[tokio::test]
async fn the_cli_mints_with_attributes_updates_and_restores() {
    use crate::admin_cli::{ADMIN, admin, secured, stderr_of_failure, stdout};
    let app = secured(&["--vanity-codes", "true"]).await;
    let out = admin(&app, Some(ADMIN), &["--output", "json", "mint", "--user", "ana", "--attribute", "org=acme"]).await;
    let minted: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let id = minted["invitations"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(minted["invitations"][0]["attributes"], serde_json::json!({"org": "acme"}));

    let args = ["update", "--id", &id, "--max-uses", "3", "--label", "team", "--attribute", "role=editor"];
    let text = stdout(&admin(&app, Some(ADMIN), &args).await);
    assert!(text.starts_with(&format!("Updated invitation {id}  UNSPENT\n  uses 0 of 3")), "{text}");
    assert!(text.contains("label \"team\"") && text.contains("attribute role=editor\n"), "{text}");
    assert!(!text.contains("org=acme"), "attributes are replaced: {text}");
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &["update", "--id", &id]).await);
    assert!(err.contains("nothing to change"), "{err}");
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &["update", "--id", &id, "--max-uses", "0"]).await);
    assert!(err.contains("[INVALID_ARGUMENT]") && err.contains("invitation.max_uses"), "{err}");

    stdout(&admin(&app, Some(ADMIN), &["revoke", "--id", &id]).await);
    let text = stdout(&admin(&app, Some(ADMIN), &["restore", "--id", &id, "--reason", "mistake"]).await);
    assert!(text.starts_with(&format!("Restored invitation {id}  UNSPENT")), "{text}");
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &["restore", "--id", &id]).await);
    assert!(err.contains("[NOT_REVOKED]"), "{err}");

    let vanity = ["mint", "--unowned", "1", "--custom-code", "launch-2026", "--max-uses", "9", "--ttl", "7d"];
    let text = stdout(&admin(&app, Some(ADMIN), &vanity).await);
    assert!(text.contains("  LAUNCH2026  "), "{text}");
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &vanity).await);
    assert!(err.contains("AlreadyExists") && err.contains("[CODE_TAKEN]"), "{err}");
}
