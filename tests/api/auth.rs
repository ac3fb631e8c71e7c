//! Caller authentication: every scope and failure code, the caller recorded
//! on what it changes, health and reflection, and the secure-by-default bind
//! rule.

use invitations::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TEST_SECRET, TestApp, assert_error, bearer};

const ADMIN: &str = "admin-token-0123456789";
const SIGNUP: &str = "signup-token-0123456789";
const READER: &str = "read-token-0123456789";

fn tokens() -> String {
    let hash = invitations::grpc::auth::token_digest_hex;
    format!("ops:admin:{}, signup-svc:signup:{}, dashboard:read:{}", hash(ADMIN), hash(SIGNUP), hash(READER))
}

async fn app() -> TestApp {
    TestApp::spawn_with(&["--caller-tokens", &tokens()]).await
}

fn mint_req() -> pb::MintRequest {
    pb::MintRequest { user_ids: vec!["alice".into()], ..Default::default() }
}

#[tokio::test]
async fn each_scope_reaches_its_rpcs_and_nothing_else() {
    let app = app().await;
    let mut c = app.client.clone();

    // admin: Mint (and everything else).
    let minted = c.mint(bearer(mint_req(), ADMIN)).await.expect("admin mints").into_inner();
    let code = minted.invitations[0].code.clone();
    let list = pb::ListForUserRequest { user_id: "alice".into(), ..Default::default() };
    c.list_for_user(bearer(list.clone(), ADMIN)).await.expect("admin may read");

    // read: ListForUser and GetInviteGraph, not Mint or Redeem.
    c.list_for_user(bearer(list.clone(), READER)).await.expect("reader lists");
    c.get_invite_graph(bearer(pb::GetInviteGraphRequest { user_id: "alice".into(), ..Default::default() }, READER))
        .await
        .expect("reader reads the graph");
    let err = c.mint(bearer(mint_req(), READER)).await.expect_err("reader cannot mint");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
    assert_eq!(err.get_details_error_info().expect("info").metadata.get("scope").map(String::as_str), Some("admin"));
    let check = pb::CheckCodeRequest { code: code.clone(), ..Default::default() };
    let err = c.check_code(bearer(check.clone(), READER)).await.expect_err("reader cannot check codes");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);

    // signup: CheckCode, Reserve, Release, Redeem; not ListForUser, Mint or Revoke.
    assert!(c.check_code(bearer(check, SIGNUP)).await.expect("signup checks").into_inner().redeemable);
    let reserve = pb::ReserveRequest { code: code.clone(), ..Default::default() };
    let held = c.reserve(bearer(reserve, SIGNUP)).await.expect("signup reserves").into_inner();
    let id = held.reservation.expect("reservation").id;
    c.release(bearer(pb::ReleaseRequest { reservation_id: id }, SIGNUP)).await.expect("signup releases");
    let redeem = pb::RedeemRequest { code: code.clone(), invitee_id: "bob".into(), ..Default::default() };
    c.redeem(bearer(redeem, SIGNUP)).await.expect("signup redeems");
    let err = c.list_for_user(bearer(list, SIGNUP)).await.expect_err("signup cannot list");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
    assert_eq!(err.get_details_error_info().expect("info").metadata.get("scope").map(String::as_str), Some("read"));
    let err = c.mint(bearer(mint_req(), SIGNUP)).await.expect_err("signup cannot mint");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
    let revoke = pb::RevokeRequest { user_id: "alice".into(), ..Default::default() };
    let err = c.revoke(bearer(revoke, SIGNUP)).await.expect_err("signup cannot revoke");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
    assert_eq!(app.count("invitations").await, 1, "refused calls changed nothing");
}

#[tokio::test]
async fn missing_or_invalid_credentials_are_unauthenticated() {
    let app = app().await;
    let mut c = app.client.clone();
    let err = c.mint(mint_req()).await.expect_err("no token");
    assert_error(&err, Code::Unauthenticated, "UNAUTHENTICATED", None);
    let err = c.mint(bearer(mint_req(), "not-a-token")).await.expect_err("unknown token");
    assert_error(&err, Code::Unauthenticated, "UNAUTHENTICATED", None);
    let mut basic = tonic::Request::new(mint_req());
    basic.metadata_mut().insert("authorization", "Basic b3BzOnB3".parse().expect("ascii"));
    let err = c.mint(basic).await.expect_err("not a bearer token");
    assert_error(&err, Code::Unauthenticated, "UNAUTHENTICATED", None);
    // The claimed caller name is no credential.
    let mut claimed = tonic::Request::new(mint_req());
    claimed.metadata_mut().insert("x-caller", "ops".parse().expect("ascii"));
    let err = c.mint(claimed).await.expect_err("a claim is not a credential");
    assert_error(&err, Code::Unauthenticated, "UNAUTHENTICATED", None);
    assert_eq!(app.count("invitations").await, 0);
}

#[tokio::test]
async fn the_caller_is_recorded_on_what_it_changes() {
    let app = app().await;
    let mut c = app.client.clone();
    let own = c.mint(bearer(mint_req(), ADMIN)).await.expect("mint").into_inner().invitations.remove(0);
    assert_eq!(own.minted_by, "ops");
    let request = pb::MintRequest { minted_by: "alice@ops".into(), ..mint_req() };
    let on_behalf = c.mint(bearer(request, ADMIN)).await.expect("mint").into_inner().invitations.remove(0);
    assert_eq!(on_behalf.minted_by, "ops for alice@ops");
    let revoke = pb::RevokeRequest { invitation_ids: vec![own.id.clone()], ..Default::default() };
    let revoked = c.revoke(bearer(revoke, ADMIN)).await.expect("revoke").into_inner().invitations.remove(0);
    assert_eq!(revoked.revoked_by, "ops");
    let stored: String = sqlx::query_scalar("SELECT revoked_by FROM invitations WHERE id = $1::uuid")
        .bind(&own.id)
        .fetch_one(&app.pool().await)
        .await
        .expect("row");
    assert_eq!(stored, "ops");
}

#[tokio::test]
async fn health_is_open_and_reflection_follows_its_setting() {
    let app = app().await;
    assert!(app.health_status("").await.is_ok(), "health needs no credentials");
    let err = reflection_list(&app, None).await.expect_err("reflection needs a caller");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        reflection_list(&app, Some(READER))
            .await
            .expect("any caller")
            .contains(&"invitations.v1.InvitationService".to_owned())
    );

    let public = TestApp::spawn_with(&["--caller-tokens", &tokens(), "--reflection-public", "true"]).await;
    assert!(reflection_list(&public, None).await.is_ok(), "public reflection");
}

async fn reflection_list(app: &TestApp, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = crate::helpers::connect(app.addr).await;
    let message = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = tonic::Request::new(tokio_stream::once(message));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    let mut stream = ServerReflectionClient::new(channel).server_reflection_info(request).await?.into_inner();
    let response = stream.message().await?.expect("one answer");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Starts `serve` on `listener` and returns its result once it stops by itself.
async fn serve_on(listener: tokio::net::TcpListener, extra: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let db = crate::helpers::TestDb::create().await;
    let mut argv = vec!["invitations", "serve", "--database-url", &db.url, "--secret", TEST_SECRET];
    argv.extend_from_slice(extra);
    let invitations::cli::args::Command::Serve(args) =
        invitations::cli::args::Cli::try_parse_from(argv).expect("args").command
    else {
        unreachable!("serve")
    };
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listeners = invitations::app::Listeners { grpc: listener, admin };
    // Stops at once if serving starts (the rule let it through).
    invitations::cli::serve(args, listeners, async {}).await
}

#[tokio::test]
async fn without_credentials_only_loopback_is_served() {
    // A non-loopback listener without credentials is refused…
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind all interfaces");
    let err = serve_on(open, &[]).await.expect_err("refused");
    assert!(err.to_string().contains("--insecure-allow-unauthenticated"), "{err}");
    // …unless credentials are configured, or the operator insists.
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind all interfaces");
    serve_on(open, &["--caller-tokens", &tokens()]).await.expect("with credentials");
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind all interfaces");
    serve_on(open, &["--insecure-allow-unauthenticated", "true"]).await.expect("explicitly insecure");
    // Loopback without credentials is the development default.
    let loopback = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    serve_on(loopback, &[]).await.expect("loopback");
}

#[test]
fn hash_token_prints_the_sha256_of_stdin() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_invitations"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the binary");
    child.stdin.take().expect("stdin").write_all(b"abc\n").expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), invitations::grpc::auth::token_digest_hex("abc"));
}
