//! Invitations bound to one e-mail address or one domain: matching rules
//! (docs/design.md, "Bound invitations") and that the bound value never shows.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};
use crate::reservations::{complete, reserve, reserve_req};

async fn mint_bound(app: &TestApp, email: &str, domain: &str, max_uses: u32) -> pb::Invitation {
    let request = pb::MintRequest {
        user_ids: vec!["alice".into()],
        bound_email: email.into(),
        bound_domain: domain.into(),
        max_uses,
        request_id: format!("bound-{email}-{domain}"),
        ..Default::default()
    };
    app.mint(request).await.expect("mint").invitations.remove(0)
}

fn redeem_as(code: &str, invitee: &str, email: &str) -> pb::RedeemRequest {
    pb::RedeemRequest { code: code.into(), invitee_id: invitee.into(), email: email.into(), ..Default::default() }
}

/// The status, with every detail, as text: to prove nothing names the address.
fn full_text(status: &tonic::Status) -> String {
    format!("{status:?} {}", String::from_utf8_lossy(status.details()))
}

#[tokio::test]
async fn an_email_bound_invitation_takes_only_that_address_in_any_case() {
    let app = TestApp::spawn().await;
    let inv = mint_bound(&app, "Grace.Hopper@Navy.example", "", 1).await;
    assert_eq!(inv.binding(), pb::Binding::Email);

    for (email, why) in [
        ("", "no address"),
        ("someone@navy.example", "another address"),
        ("grace.hopper+signup@navy.example", "subaddresses are not stripped"),
        ("gracehopper@navy.example", "dots are not removed"),
        ("grace.hopper@mail.navy.example", "another domain"),
    ] {
        let err = app.redeem_req(redeem_as(&inv.code, "bob", email)).await.expect_err(why);
        assert_error(&err, Code::FailedPrecondition, "EMAIL_MISMATCH", None);
        let text = full_text(&err).to_lowercase();
        assert!(!text.contains("grace") && !text.contains("navy"), "{why}: the error names the binding: {text}");
    }
    let check = app.check(&inv.code).await;
    assert!(check.redeemable, "a bound code is redeemable, by the right address");
    assert_eq!(check.binding(), pb::Binding::Email);
    assert!(!format!("{check:?}").to_lowercase().contains("grace"));

    let redeemed = app.redeem_req(redeem_as(&inv.code, "bob", "  GRACE.HOPPER@navy.EXAMPLE ")).await.expect("match");
    assert_eq!(redeemed.invitee_id, "bob");
    assert_eq!(app.count("redemptions").await, 1);
}

#[tokio::test]
async fn a_domain_bound_invitation_takes_any_address_at_exactly_that_domain() {
    let app = TestApp::spawn().await;
    let inv = mint_bound(&app, "", "@Example.COM", 10).await;
    assert_eq!(inv.binding(), pb::Binding::Domain);

    for email in ["x@example.org", "x@sub.example.com", "x@example.com.evil.test"] {
        let err =
            reserve(&app, pb::ReserveRequest { email: email.into(), ..reserve_req(&inv.code) }).await.expect_err(email);
        assert_error(&err, Code::FailedPrecondition, "EMAIL_MISMATCH", None);
        assert!(!full_text(&err).to_lowercase().contains("example.com"), "the error names the domain");
    }
    let err = reserve(&app, reserve_req(&inv.code)).await.expect_err("no address");
    assert_error(&err, Code::FailedPrecondition, "EMAIL_MISMATCH", None);

    // Case and subaddress do not matter for a domain binding.
    let held = reserve(&app, pb::ReserveRequest { email: "Bob+Tag@EXAMPLE.com".into(), ..reserve_req(&inv.code) })
        .await
        .expect("reserve");
    complete(&app, &held.id, "bob").await.expect("complete without repeating the address");

    // Completing may not switch to an address the binding refuses.
    let held = reserve(&app, pb::ReserveRequest { email: "carol@example.com".into(), ..reserve_req(&inv.code) })
        .await
        .expect("reserve");
    let switched = pb::RedeemRequest {
        reservation_id: held.id.clone(),
        invitee_id: "carol".into(),
        email: "carol@elsewhere.test".into(),
        ..Default::default()
    };
    let err = app.redeem_req(switched.clone()).await.expect_err("another domain");
    assert_error(&err, Code::FailedPrecondition, "EMAIL_MISMATCH", None);
    app.redeem_req(pb::RedeemRequest { email: "CAROL@example.com".into(), ..switched }).await.expect("matching");

    app.redeem_req(redeem_as(&inv.code, "dave", "dave@example.com")).await.expect("by code");
    assert_eq!(app.count("redemptions").await, 3);
}

#[tokio::test]
async fn international_domains_match_in_either_form() {
    let app = TestApp::spawn().await;
    let inv = mint_bound(&app, "", "Bücher.example", 2).await;
    app.redeem_req(redeem_as(&inv.code, "bob", "bob@xn--bcher-kva.example")).await.expect("punycode form");
    app.redeem_req(redeem_as(&inv.code, "carol", "carol@BÜCHER.example")).await.expect("unicode form");
}

#[tokio::test]
async fn the_bound_address_is_stored_and_shown_nowhere() {
    let app = TestApp::spawn().await;
    let inv = mint_bound(&app, "ada.lovelace@analytical.example", "", 1).await;
    let listed = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() })
        .await
        .expect("list")
        .invitations;
    assert_eq!(listed[0].binding(), pb::Binding::Email, "the owner sees that it is bound");
    assert!(!format!("{listed:?} {inv:?}").contains("lovelace"), "but not to whom");

    let pool = app.pool().await;
    for (table, sql) in [
        ("invitations", "SELECT count(*) FROM invitations i WHERE row_to_json(i)::text ILIKE '%lovelace%'"),
        ("idempotency_keys", "SELECT count(*) FROM idempotency_keys WHERE position('lovelace' in response) > 0"),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(table);
        assert_eq!(n, 0, "{table} holds the address in clear");
    }
    let digest: Vec<u8> =
        sqlx::query_scalar("SELECT binding_digest FROM invitations").fetch_one(&pool).await.expect("digest");
    assert_eq!(digest.len(), 48, "salt and SHA-256");
}

#[tokio::test]
async fn bad_bindings_are_refused_and_mint_nothing() {
    let app = TestApp::spawn().await;
    for (email, domain, field) in [
        ("a@example.com", "example.com", "bound_domain"),
        ("not-an-email", "", "bound_email"),
        ("a@localhost", "", "bound_email"),
        ("", "exa mple.com", "bound_domain"),
        ("", "-example.com", "bound_domain"),
        ("", "com", "bound_domain"),
    ] {
        let request = pb::MintRequest {
            user_ids: vec!["alice".into()],
            bound_email: email.into(),
            bound_domain: domain.into(),
            ..Default::default()
        };
        let err = app.mint(request).await.expect_err("bad binding");
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("invitations").await, 0);
    let inv = app.mint_one("alice").await;
    let err = app.redeem_req(redeem_as(&inv.code, "bob", "bob@")).await.expect_err("bad email");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("email"));
    assert_eq!(inv.binding(), pb::Binding::Unbound);
    app.redeem_req(redeem_as(&inv.code, "bob", "anything@anywhere.test")).await.expect("unbound takes any address");
}
