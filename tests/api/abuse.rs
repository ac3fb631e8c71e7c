//! Abuse controls on Redeem and Reserve, each in block, flag and off mode:
//! IP reuse (with prefixes), same IP as the inviter, disposable e-mail, and
//! the failed-attempt limit (shared by two servers on one database).

use invitations::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Options, TestApp, assert_error};

fn redeem(code: &str, invitee: &str, ip: &str) -> pb::RedeemRequest {
    pb::RedeemRequest { code: code.into(), invitee_id: invitee.into(), client_ip: ip.into(), ..Default::default() }
}

/// Every check off except what `extra` turns on.
async fn app(extra: &[&str]) -> TestApp {
    TestApp::spawn_with(&checks_off_except(extra)).await
}

fn checks_off_except<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    for check in ["--abuse-ip-reuse", "--abuse-same-ip", "--abuse-disposable-email", "--abuse-attempts"] {
        if !extra.contains(&check) {
            args.extend([check, "off"]);
        }
    }
    args.extend_from_slice(extra);
    args
}

async fn listed_flags(app: &TestApp, user: &str) -> Vec<String> {
    let list = app.list(pb::ListForUserRequest { user_id: user.into(), ..Default::default() }).await.expect("list");
    let mut flags: Vec<String> = list.invitations.into_iter().flat_map(|i| i.abuse_flags).collect();
    flags.sort();
    flags.dedup();
    flags
}

#[tokio::test]
async fn ip_reuse_in_each_mode() {
    let blocking = app(&["--abuse-ip-reuse", "block", "--abuse-ipv4-prefix", "24"]).await;
    let codes = blocking.mint_for("alice", 3).await;
    blocking.redeem_req(redeem(&codes[0].code, "bob", "203.0.113.7")).await.expect("first from the network");
    let err = blocking.redeem_req(redeem(&codes[1].code, "carol", "203.0.113.99")).await.expect_err("same /24");
    assert_error(&err, Code::FailedPrecondition, "IP_ALREADY_USED", None);
    assert_eq!(blocking.count("redemptions").await, 1, "a refused redeem changes nothing");
    blocking.redeem_req(redeem(&codes[1].code, "carol", "203.0.114.1")).await.expect("another /24");
    blocking.redeem_req(redeem(&codes[2].code, "dave", "")).await.expect("no IP given: nothing to check");

    let flagging = app(&["--abuse-ip-reuse", "flag"]).await;
    let codes = flagging.mint_for("alice", 2).await;
    let first = flagging.redeem_req(redeem(&codes[0].code, "bob", "2001:db8:1:2::1")).await.expect("first");
    assert!(first.abuse_flags.is_empty());
    let second = flagging.redeem_req(redeem(&codes[1].code, "carol", "2001:db8:1:2::99")).await.expect("flagged");
    assert_eq!(second.abuse_flags, ["IP_REUSE"], "same /64");
    assert_eq!(listed_flags(&flagging, "alice").await, ["IP_REUSE"], "admins see it in ListForUser");
    let mut conn = flagging.pool().await.acquire().await.expect("conn");
    let counts = invitations::store::abuse::flag_counts(&mut conn).await.expect("counts");
    assert_eq!(counts, [("IP_REUSE".to_owned(), 1)]);

    let off = app(&[]).await;
    let codes = off.mint_for("alice", 2).await;
    off.redeem_req(redeem(&codes[0].code, "bob", "203.0.113.7")).await.expect("first");
    let second = off.redeem_req(redeem(&codes[1].code, "carol", "203.0.113.7")).await.expect("off");
    assert!(second.abuse_flags.is_empty());
    assert_eq!(off.count("redemption_ips").await, 0, "no IP kept when no IP check needs it");
}

/// alice joins through an unowned invitation from `ip`, then invites bob.
async fn inviter_joined_from(app: &TestApp, ip: &str) -> String {
    let root = app.mint(pb::MintRequest { unowned_count: 1, ..Default::default() }).await.expect("mint");
    app.redeem_req(redeem(&root.invitations[0].code, "alice", ip)).await.expect("alice joins");
    app.mint_one("alice").await.code
}

#[tokio::test]
async fn same_ip_as_the_inviter_in_each_mode() {
    let blocking = app(&["--abuse-same-ip", "block"]).await;
    let code = inviter_joined_from(&blocking, "198.51.100.4").await;
    let err = blocking.redeem_req(redeem(&code, "bob", "198.51.100.4")).await.expect_err("self-referral");
    assert_error(&err, Code::FailedPrecondition, "SAME_IP_AS_INVITER", None);
    let reserve = pb::ReserveRequest { code: code.clone(), client_ip: "198.51.100.4".into(), ..Default::default() };
    let err = blocking.client.clone().reserve(reserve).await.expect_err("Reserve refuses it too");
    assert_error(&err, Code::FailedPrecondition, "SAME_IP_AS_INVITER", None);
    blocking.redeem_req(redeem(&code, "bob", "198.51.100.5")).await.expect("another IP");

    let flagging = app(&["--abuse-same-ip", "flag"]).await;
    let code = inviter_joined_from(&flagging, "198.51.100.4").await;
    let bob = flagging.redeem_req(redeem(&code, "bob", "198.51.100.4")).await.expect("flagged");
    assert_eq!(bob.abuse_flags, ["SAME_IP_AS_INVITER"]);
    assert_eq!(listed_flags(&flagging, "alice").await, ["SAME_IP_AS_INVITER"]);

    let off = app(&[]).await;
    let code = inviter_joined_from(&off, "198.51.100.4").await;
    assert!(off.redeem_req(redeem(&code, "bob", "198.51.100.4")).await.expect("off").abuse_flags.is_empty());
}

fn with_email(code: &str, invitee: &str, email: &str) -> pb::RedeemRequest {
    pb::RedeemRequest { email: email.into(), ..redeem(code, invitee, "") }
}

#[tokio::test]
async fn disposable_email_in_each_mode() {
    let extra = "burner.example, bücher-wegwerf.example";
    let blocking = app(&["--abuse-disposable-email", "block", "--disposable-domains", extra]).await;
    let codes = blocking.mint_for("alice", 2).await;
    let punycode = format!("x@{}", invitations::domain::email::parse_domain("bücher-wegwerf.example").expect("domain"));
    assert!(punycode.starts_with("x@xn--"));
    for email in
        ["x@mailinator.com", "x@EU.Mailinator.COM", "x@burner.example", &punycode, "x@a.bücher-wegwerf.example"]
    {
        let err = blocking.redeem_req(with_email(&codes[0].code, "bob", email)).await.expect_err(email);
        assert_error(&err, Code::FailedPrecondition, "DISPOSABLE_EMAIL", None);
    }
    let reserve =
        pb::ReserveRequest { code: codes[0].code.clone(), email: "x@yopmail.com".into(), ..Default::default() };
    let err = blocking.client.clone().reserve(reserve).await.expect_err("Reserve refuses it too");
    assert_error(&err, Code::FailedPrecondition, "DISPOSABLE_EMAIL", None);
    blocking.redeem_req(with_email(&codes[0].code, "bob", "bob@example.org")).await.expect("ordinary address");
    blocking.redeem_req(with_email(&codes[1].code, "carol", "c@notmailinator.com")).await.expect("look-alike");

    let flagging = app(&["--abuse-disposable-email", "flag"]).await;
    let code = flagging.mint_one("alice").await.code;
    let bob = flagging.redeem_req(with_email(&code, "bob", "bob@guerrillamail.com")).await.expect("flagged");
    assert_eq!(bob.abuse_flags, ["DISPOSABLE_EMAIL"]);

    let off = app(&[]).await;
    let code = off.mint_one("alice").await.code;
    assert!(off.redeem_req(with_email(&code, "bob", "bob@mailinator.com")).await.expect("off").abuse_flags.is_empty());
}

/// A well-formed code (valid check symbol) that no invitation has.
pub fn unknown_code() -> String {
    invitations::domain::code::CodeGenerator::new(15).expect("length").generate().expect("random").as_str().to_owned()
}

fn assert_limited(status: &tonic::Status) {
    assert_error(status, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS", None);
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(delay.as_secs() >= 1 && delay.as_secs() <= 3600, "{delay:?}");
}

#[tokio::test]
async fn failed_attempts_are_limited_per_ip_across_replicas() {
    let first = app(&["--abuse-attempts", "block", "--attempt-limit", "5"]).await;
    // A second server on the same database: the counters are shared.
    let url = first.db.url.clone();
    let args = checks_off_except(&["--abuse-attempts", "block", "--attempt-limit", "5"]);
    let args = args.into_iter().map(String::from).collect();
    let second = TestApp::spawn_opts(Options { extra_args: args, database_url: Some(url) }).await;
    let good = first.mint_one("alice").await.code;
    let ip = "192.0.2.10";

    // Mistyped codes (caught by the check symbol) do not count…
    let mut typo: Vec<char> = good.chars().collect();
    typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    for _ in 0..10 {
        let err = first.redeem_req(redeem(&typo, "mallory", ip)).await.expect_err("typo");
        assert_error(&err, Code::InvalidArgument, "CODE_CHECKSUM_MISMATCH", None);
    }
    // …unknown well-formed codes do, on whichever replica they land.
    for i in 0..5 {
        let app = if i % 2 == 0 { &first } else { &second };
        let check = pb::CheckCodeRequest { code: unknown_code(), client_ip: ip.into() };
        let answer = app.client.clone().check_code(check).await.expect("an answer").into_inner();
        assert_eq!(answer.reason, "CODE_NOT_FOUND");
        assert!(!answer.normalized_code.is_empty(), "still the full answer");
    }
    // Over the limit: every attempt from that IP is refused, even a good code,
    // on both replicas; other IPs are not affected.
    let err = second.redeem_req(redeem(&good, "mallory", ip)).await.expect_err("limited");
    assert_limited(&err);
    let check = pb::CheckCodeRequest { code: unknown_code(), client_ip: ip.into() };
    assert_limited(&first.client.clone().check_code(check).await.expect_err("limited"));
    let reserve = pb::ReserveRequest { code: good.clone(), client_ip: ip.into(), ..Default::default() };
    assert_limited(&first.client.clone().reserve(reserve).await.expect_err("limited"));
    first.redeem_req(redeem(&good, "mallory", "192.0.2.11")).await.expect("another IP is not limited");
}

#[tokio::test]
async fn failed_attempts_are_limited_per_invitee() {
    let app = app(&["--abuse-attempts", "block", "--attempt-limit", "3"]).await;
    let good = app.mint_one("alice").await.code;
    for i in 0..3 {
        // A new IP every time: only the invitee links the attempts.
        let err =
            app.redeem_req(redeem(&unknown_code(), "mallory", &format!("192.0.2.{i}"))).await.expect_err("unknown");
        assert_error(&err, Code::NotFound, "CODE_NOT_FOUND", None);
    }
    assert_limited(&app.redeem_req(redeem(&good, "mallory", "192.0.2.200")).await.expect_err("limited"));
    assert_limited(&app.redeem(&good, "mallory").await.expect_err("limited without an IP too"));
    app.redeem(&good, "someone-else").await.expect("other invitees are not limited");
}

#[tokio::test]
async fn the_attempt_limit_flags_or_stays_off() {
    let flagging = app(&["--abuse-attempts", "flag", "--attempt-limit", "2"]).await;
    let good = flagging.mint_one("alice").await.code;
    for _ in 0..2 {
        flagging.redeem_req(redeem(&unknown_code(), "mallory", "192.0.2.1")).await.expect_err("unknown");
    }
    let mallory = flagging.redeem_req(redeem(&good, "mallory", "192.0.2.1")).await.expect("flag mode lets it through");
    assert_eq!(mallory.abuse_flags, ["ATTEMPT_LIMIT"]);

    let off = app(&["--attempt-limit", "1"]).await;
    let good = off.mint_one("alice").await.code;
    for _ in 0..3 {
        off.redeem_req(redeem(&unknown_code(), "mallory", "192.0.2.1")).await.expect_err("unknown");
    }
    assert!(off.redeem_req(redeem(&good, "mallory", "192.0.2.1")).await.expect("off").abuse_flags.is_empty());
    assert_eq!(off.count("attempt_counters").await, 0, "off keeps no counters");
}

#[tokio::test]
async fn ip_hashes_and_counters_go_once_their_window_passed() {
    let app = app(&["--abuse-ip-reuse", "flag", "--abuse-attempts", "block"]).await;
    let code = app.mint_one("alice").await.code;
    app.redeem_req(redeem(&code, "bob", "203.0.113.7")).await.expect("redeem");
    app.redeem_req(redeem(&unknown_code(), "carol", "203.0.113.8")).await.expect_err("unknown");
    assert_eq!(app.count("redemption_ips").await, 1);
    assert_eq!(app.count("attempt_counters").await, 2, "one per IP prefix, one per invitee");
    let hash_len: i32 = sqlx::query_scalar("SELECT length(ip_hash) FROM redemption_ips")
        .fetch_one(&app.pool().await)
        .await
        .expect("row");
    assert_eq!(hash_len, 32, "an HMAC, not an address");

    let mut conn = app.pool().await.acquire().await.expect("conn");
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let (ips, counters) = invitations::store::abuse::sweep(&mut conn, later, later).await.expect("sweep");
    assert_eq!((ips, counters), (1, 2));
    assert_eq!(app.count("redemption_ips").await, 0);
    assert_eq!(app.count("attempt_counters").await, 0);
}
