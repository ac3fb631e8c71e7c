//! Start-up against a database it cannot use: the real binary exits non-zero
//! and says why, once (connection refused, no such database), instead of the
//! pool's "timed out while waiting for an open connection".

use std::process::{Command, Output};

use crate::helpers::{TEST_SECRET, server_url, with_database};

/// Runs `invitations <args>` to its end with a clean environment.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invitations"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("INVITATIONS_") || key == "NATS_URL" || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command.output().expect("run the invitations binary")
}

fn serve(database_url: &str) -> Output {
    run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--nats-url",
        "",
        "--secret",
        TEST_SECRET,
        "--migrate",
        "true",
        "--db-acquire-timeout",
        "3s",
        "--database-url",
        database_url,
    ])
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

#[track_caller]
fn assert_fails_once_with(output: &Output, cause: &str, target: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited successfully:\n{stderr}");
    assert_eq!(stderr.matches(cause).count(), 1, "the cause {cause:?}, once:\n{stderr}");
    assert_eq!(stderr.matches("exiting with an error").count(), 1, "one error line:\n{stderr}");
    let at = stderr.find("connecting to the database at ").expect("says what it was doing");
    assert!(stderr[at..].lines().next().is_some_and(|l| l.contains(target)), "where:\n{stderr}");
    assert!(!stderr.contains("pool timed out"), "the pool's timeout hides the cause:\n{stderr}");
}

#[test]
fn serve_with_migrations_says_why_the_database_is_unreachable() {
    let port = closed_port();
    let output = serve(&format!("postgres://postgres@127.0.0.1:{port}/invitations"));
    assert_fails_once_with(&output, "Connection refused", &format!("127.0.0.1:{port}/invitations"));

    let name = format!("invtest_missing_{}", uuid::Uuid::new_v4().simple());
    let output = serve(&with_database(&server_url(), &name));
    assert_fails_once_with(&output, &format!("database \"{name}\" does not exist"), &format!("/{name}"));
}

#[test]
fn the_migrate_command_says_why_too() {
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/invitations");
    let output = run(&["migrate", "--database-url", &url, "--db-acquire-timeout", "3s"]);
    assert_fails_once_with(&output, "Connection refused", &format!("127.0.0.1:{port}/invitations"));
}

#[test]
fn with_the_log_off_the_error_still_reaches_stderr_once() {
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/invitations");
    let output = run(&["--log", "off", "migrate", "--database-url", &url, "--db-acquire-timeout", "3s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: connecting to the database at "), "{stderr}");
}
