//! Vanity codes (issue 18): Mint with custom_code, normalised for case and
//! separators, redeemable like any code, stored hashed and sealed, a taken
//! code ALREADY_EXISTS; the rules they must follow.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

fn vanity(code: &str) -> pb::MintRequest {
    pb::MintRequest {
        unowned_count: 1,
        max_uses: 50,
        ttl: Some(prost_types::Duration { seconds: 7 * 86_400, nanos: 0 }),
        custom_code: code.into(),
        label: "launch-party".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_vanity_code_is_normalised_and_redeemed_like_any_code() {
    let app = TestApp::spawn_with(&["--code-prefix", "INV", "--vanity-codes", "true"]).await;
    let minted = app.mint(vanity("Launch-2026")).await.expect("mint");
    let inv = &minted.invitations[0];
    assert_eq!(inv.code, "LAUNCH2026", "canonical, without the prefix or groups");
    assert_eq!(inv.max_uses, 50);
    assert!(inv.link.ends_with("LAUNCH2026"), "{}", inv.link);

    let check = app.check("launch 2026").await;
    assert!(check.redeemable, "{check:?}");
    assert_eq!(check.normalized_code, "LAUNCH2026");
    assert_eq!(check.remaining_uses, 50);
    app.redeem("launch_2026", "ana").await.expect("redeem, any case and separators");
    app.client
        .clone()
        .reserve(pb::ReserveRequest { code: "LAUNCH.2026".into(), ..Default::default() })
        .await
        .expect("reserve");
    assert_eq!(app.check("LAUNCH-2026").await.remaining_uses, 49);

    // Stored like every code: only the keyed hash and the sealed form.
    let pool = app.pool().await;
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invitations WHERE position(convert_to('LAUNCH2026', 'UTF8') IN code_hash) > 0 \
         OR position(convert_to('LAUNCH2026', 'UTF8') IN code_ciphertext) > 0",
    )
    .fetch_one(&pool)
    .await
    .expect("query");
    assert_eq!(plain, 0, "the code is not in the row in clear");

    // A vanity-shaped code nobody has is not found (and counts as a guess);
    // a typo of a generated code is still told apart without a lookup.
    let missing = app.check("LAUNCH-2027").await;
    assert_eq!(missing.reason, "CODE_NOT_FOUND");
    let generated = app.mint_one("ana-friend").await.code;
    let mut typo: Vec<char> = generated.chars().collect();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    assert_eq!(app.check(&typo).await.reason, "CODE_CHECKSUM_MISMATCH");
}

#[tokio::test]
async fn a_taken_vanity_code_already_exists_whatever_its_spelling() {
    let app = TestApp::spawn_with(&["--vanity-codes", "true"]).await;
    app.mint(vanity("SPRING-PARTY")).await.expect("first");
    let before = (app.count("invitations").await, app.count("batches").await);
    for spelling in ["spring-party", "Spring Party", "SPRINGPARTY", "spring_party"] {
        let status = app.mint(vanity(spelling)).await.expect_err("taken");
        assert_error(&status, Code::AlreadyExists, "CODE_TAKEN", Some("custom_code"));
    }
    assert_eq!((app.count("invitations").await, app.count("batches").await), before, "nothing minted");
}

#[tokio::test]
async fn vanity_codes_follow_their_rules() {
    let app = TestApp::spawn_with(&["--vanity-codes", "true"]).await;
    let cases: Vec<(pb::MintRequest, &str)> = vec![
        (pb::MintRequest { max_uses: 0, ..vanity("LAUNCH-2026") }, "max_uses"),
        (pb::MintRequest { ttl: None, ..vanity("LAUNCH-2026") }, "ttl"),
        (pb::MintRequest { unowned_count: 2, ..vanity("LAUNCH-2026") }, "custom_code"),
        (
            pb::MintRequest { unowned_count: 0, user_ids: vec!["a".into(), "b".into()], ..vanity("LAUNCH-2026") },
            "custom_code",
        ),
        (vanity("BETATESTERS"), "custom_code"),
        (vanity("abc12"), "custom_code"),
        (vanity("launch/2026"), "custom_code"),
        (vanity(&"LAUNCH".repeat(6)), "custom_code"),
    ];
    for (request, field) in cases {
        let status = app.mint(request).await.expect_err(field);
        assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("invitations").await, 0);
    // One named user is fine too; short codes of any letters are allowed.
    let owned = pb::MintRequest { unowned_count: 0, user_ids: vec!["ana".into()], ..vanity("meetup") };
    let minted = app.mint(owned).await.expect("owned vanity");
    assert_eq!((minted.invitations[0].code.as_str(), minted.invitations[0].inviter_id.as_str()), ("MEETUP", "ana"));
}

#[tokio::test]
async fn off_by_default_and_input_stays_a_format_error() {
    let app = TestApp::spawn().await;
    let status = app.mint(vanity("LAUNCH-2026")).await.expect_err("off");
    assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT", Some("custom_code"));
    assert_eq!(app.check("LAUNCH-2026").await.reason, "INVALID_CODE_FORMAT", "no lookup while off");
    assert_eq!(app.count("invitations").await, 0);
}

#[tokio::test]
async fn a_vanity_code_keeps_an_expiry_through_updates() {
    let app = TestApp::spawn_with(&["--vanity-codes", "true"]).await;
    let minted = app.mint(vanity("LAUNCH-2026")).await.expect("mint");
    let id = minted.invitations[0].id.clone();
    let cleared = crate::lifecycle::update(&app, &id, &["expire_time"], pb::InvitationUpdate::default()).await;
    assert_error(
        &cleared.expect_err("never expiring"),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        Some("invitation.expire_time"),
    );
    // Moved is fine, and a generated code may still be made to never expire.
    let later = prost_types::Timestamp {
        seconds: minted.invitations[0].expire_time.as_ref().expect("expiry").seconds + 86_400,
        nanos: 0,
    };
    let update = pb::InvitationUpdate { expire_time: Some(later), ..Default::default() };
    let moved = crate::lifecycle::update(&app, &id, &["expire_time"], update).await.expect("moved");
    assert_eq!(moved.expire_time, Some(later));
    let generated = app.mint_one("ana").await;
    let forever = crate::lifecycle::update(&app, &generated.id, &["expire_time"], pb::InvitationUpdate::default());
    assert_eq!(forever.await.expect("generated code").expire_time, None);
}

#[tokio::test]
async fn guessing_vanity_codes_counts_against_the_attempt_limit() {
    let app =
        TestApp::spawn_with(&["--vanity-codes", "true", "--abuse-attempts", "block", "--attempt-limit", "5"]).await;
    app.mint(vanity("LAUNCH-2026")).await.expect("mint");
    let ip = "192.0.2.10";
    for guess in ["LAUNCH-2020", "LAUNCH-2021", "LAUNCH-2022", "LAUNCH-2023", "LAUNCH-2024"] {
        let check = pb::CheckCodeRequest { code: guess.into(), client_ip: ip.into() };
        assert_eq!(app.client.clone().check_code(check).await.expect("answer").into_inner().reason, "CODE_NOT_FOUND");
    }
    // The sixth guess, even the right code, is refused from that IP.
    let check = pb::CheckCodeRequest { code: "LAUNCH-2026".into(), client_ip: ip.into() };
    let status = app.client.clone().check_code(check).await.expect_err("limited");
    assert_error(&status, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS", None);
    let other = pb::CheckCodeRequest { code: "LAUNCH-2026".into(), client_ip: "192.0.2.11".into() };
    assert!(app.client.clone().check_code(other).await.expect("another IP").into_inner().redeemable);
}
