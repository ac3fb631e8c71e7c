//! What a database dump gives away: no plaintext code, no plaintext IP
//! (checked with the real pg_dump), secret rotation with `rekey`, and page
//! tokens that are forged, altered or made under another secret.

use invitations::pb;
use tonic::Code;

use crate::helpers::{Options, TEST_SECRET, TestApp, assert_error};

/// The dump of the test database, as plain SQL.
fn pg_dump(url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--no-owner", "--data-only", url])
        .output()
        .expect("run pg_dump (postgresql-client)");
    assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 dump")
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Every form a value could take in the dump: as text, and as the hex a
/// bytea column (a stored protobuf answer, say) would show it in.
fn assert_absent(dump: &str, value: &str, what: &str) {
    let lower = dump.to_lowercase();
    for form in [value.to_lowercase(), hex(value), hex(&value.to_uppercase())] {
        assert!(!lower.contains(&form), "the dump contains {what} {value:?} (as {form:?})");
    }
}

#[tokio::test]
async fn a_dump_holds_no_plaintext_code_or_ip() {
    let app = TestApp::spawn_with(&["--abuse-ip-reuse", "flag", "--abuse-attempts", "block"]).await;
    // Codes everywhere they could land: minted (with a request id, so the
    // answer is stored), listed, redeemed (stored answer), revoked (stored).
    let minted = app
        .mint(pb::MintRequest {
            user_ids: vec!["alice".into()],
            per_user: 3,
            request_id: "m1".into(),
            ..Default::default()
        })
        .await
        .expect("mint")
        .invitations;
    let ips = ["203.0.113.77", "2001:db8:abcd:12::7"];
    let redeem = pb::RedeemRequest {
        code: minted[0].code.clone(),
        invitee_id: "bob".into(),
        client_ip: ips[0].into(),
        request_id: "r1".into(),
        ..Default::default()
    };
    app.redeem_req(redeem).await.expect("redeem");
    let reserve = pb::ReserveRequest { code: minted[1].code.clone(), client_ip: ips[1].into(), ..Default::default() };
    app.client.clone().reserve(reserve).await.expect("reserve");
    let revoke =
        pb::RevokeRequest { invitation_ids: vec![minted[2].id.clone()], request_id: "v1".into(), ..Default::default() };
    app.revoke(revoke).await.expect("revoke");
    let unknown = invitations::domain::code::CodeGenerator::new(15).expect("len").generate().expect("rng");
    app.redeem_req(pb::RedeemRequest {
        code: unknown.as_str().into(),
        invitee_id: "carol".into(),
        client_ip: ips[1].into(),
        ..Default::default()
    })
    .await
    .expect_err("unknown code: counted against the IP");

    let dump = pg_dump(&app.db.url);
    assert!(dump.contains("COPY public.invitations"), "the dump has the data");
    for inv in &minted {
        assert_absent(&dump, &inv.code, "code");
        assert_absent(&dump, &inv.code.replace('-', ""), "canonical code");
    }
    assert_absent(&dump, unknown.as_str(), "guessed code");
    for ip in ips {
        assert_absent(&dump, ip, "IP");
    }
    // And the codes still work: the service can read them back.
    let listed =
        app.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    let mut codes: Vec<String> = listed.invitations.into_iter().map(|i| i.code).collect();
    codes.sort();
    let mut want: Vec<String> = minted.iter().map(|i| i.code.clone()).collect();
    want.sort();
    assert_eq!(codes, want);
}

async fn sealed_key_ids(app: &TestApp) -> Vec<i32> {
    let pool = app.pool().await;
    sqlx::query_scalar("SELECT DISTINCT code_key_id FROM invitations").fetch_all(&pool).await.expect("key ids")
}

#[tokio::test]
async fn rotating_the_secret_keeps_codes_and_answers_usable() {
    const NEW: &str = "the-next-secret-0123456789abcdef-0123456789";
    let old_app = TestApp::spawn().await;
    let minted = old_app
        .mint(pb::MintRequest {
            user_ids: vec!["alice".into()],
            per_user: 2,
            request_id: "m1".into(),
            ..Default::default()
        })
        .await
        .expect("mint");
    let old_keys = sealed_key_ids(&old_app).await;
    assert_eq!(old_keys.len(), 1);

    // A replica with the new secret and the old one as previous: old codes
    // are found and shown at once, and the background rekey moves them.
    let url = old_app.db.url.clone();
    let args: Vec<String> = ["--secret", NEW, "--previous-secrets", TEST_SECRET].map(String::from).to_vec();
    let rotated = spawn_with_secret(&url, args).await;
    assert!(rotated.check(&minted.invitations[0].code).await.redeemable, "found by its old hash");
    crate::helpers::wait_until(std::time::Duration::from_secs(20), "the rekey to finish", || async {
        // (The shared database is old_app's.)
        let keys = sealed_key_ids(&old_app).await;
        keys.len() == 1 && keys != old_keys
    })
    .await;
    // The rekey is in the history: one entry for the codes, one for the
    // stored answer (the retried Mint's), each under the new key.
    let rekeys = pb::ListHistoryRequest { operation: "rekey".into(), ..Default::default() };
    crate::helpers::wait_until(std::time::Duration::from_secs(20), "the answers' rekey", || async {
        crate::history::all(&rotated, rekeys.clone()).await.len() >= 2
    })
    .await;
    let rekeys = crate::history::all(&rotated, rekeys).await;
    let moved: Vec<_> = rekeys
        .iter()
        .map(|e| (e.caller.as_str(), e.details.get("codes").or(e.details.get("answers")).map(String::as_str)))
        .collect();
    assert_eq!(moved, [("rekey", Some("1")), ("rekey", Some("2"))], "{rekeys:?}");

    // The operator's command agrees: nothing left under the old secret.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invitations"))
        .args(["rekey", "--database-url", &url, "--secret", NEW, "--previous-secrets", TEST_SECRET])
        .output()
        .expect("run rekey");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not yet under the current secret: 0 codes, 0 answers"));

    // Without the old secret: codes still redeem, listing shows them, and a
    // retried Mint replays its (re-sealed) stored answer.
    let only_new = spawn_with_secret(&url, ["--secret", NEW].map(String::from).to_vec()).await;
    let listed =
        only_new.list(pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() }).await.expect("list");
    assert!(listed.invitations.iter().all(|i| !i.code.is_empty()));
    let replay = only_new
        .mint(pb::MintRequest {
            user_ids: vec!["alice".into()],
            per_user: 2,
            request_id: "m1".into(),
            ..Default::default()
        })
        .await
        .expect("replay");
    assert_eq!(replay, minted, "the stored answer opens under the new secret");
    only_new.redeem(&minted.invitations[1].code, "bob").await.expect("redeem after the rotation");

    // A server that has neither secret cannot use the codes (they are bound to it).
    let other =
        spawn_with_secret(&url, ["--secret", "an-unrelated-secret-0123456789abcdef"].map(String::from).to_vec()).await;
    let err = other.redeem(&minted.invitations[0].code, "carol").await.expect_err("unknown under another secret");
    assert_error(&err, Code::NotFound, "CODE_NOT_FOUND", None);
}

/// A server on an existing database with its own `--secret` (and more).
async fn spawn_with_secret(url: &str, args: Vec<String>) -> TestApp {
    TestApp::spawn_opts(Options { extra_args: args, database_url: Some(url.to_owned()) }).await
}

#[tokio::test]
async fn forged_altered_and_foreign_page_tokens_are_invalid() {
    let app = TestApp::spawn().await;
    app.mint_for("alice", 3).await;
    let page = app
        .list(pb::ListForUserRequest { user_id: "alice".into(), page_size: 1, ..Default::default() })
        .await
        .expect("first page");
    let token = page.next_page_token.clone();
    assert!(!token.is_empty());
    let mut altered = token.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let other_server =
        spawn_with_secret(&app.db.url, ["--secret", "an-unrelated-secret-0123456789abcdef"].map(String::from).to_vec())
            .await;
    for (bad, who) in [
        (String::from_utf8(altered).expect("ascii"), &app),
        ("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(), &app),
        ("not a token".to_owned(), &app),
        (token.clone(), &other_server),
    ] {
        let request = pb::ListForUserRequest {
            user_id: "alice".into(),
            page_size: 1,
            page_token: bad.clone(),
            ..Default::default()
        };
        let err = who.list(request).await.expect_err(&bad);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("page_token"));
    }
    let next =
        pb::ListForUserRequest { user_id: "alice".into(), page_size: 1, page_token: token, ..Default::default() };
    app.list(next).await.expect("the genuine token still works");
}

#[tokio::test]
async fn plaintext_codes_from_before_sealing_are_converted_at_start() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let canonical = inv.code.replace('-', "");
    // Turn the row back into what the schema held before codes were sealed.
    let pool = app.pool().await;
    sqlx::query("UPDATE invitations SET code = $1, code_hash = NULL, code_ciphertext = NULL, code_key_id = NULL")
        .bind(&canonical)
        .execute(&pool)
        .await
        .expect("make it legacy");

    let restarted = spawn_with_secret(&app.db.url, ["--secret", TEST_SECRET].map(String::from).to_vec()).await;
    crate::helpers::wait_until(std::time::Duration::from_secs(20), "the start-up conversion", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE code IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
        left == 0
    })
    .await;
    assert!(!pg_dump(&app.db.url).contains(&canonical), "the plaintext is gone");
    let redeemed = restarted.redeem(&inv.code, "bob").await.expect("the converted code redeems");
    assert_eq!(redeemed.code, inv.code);
}
