//! `invitations admin …`: the built binary against a running server (the
//! harness's), with the token in INVITATIONS_TOKEN; its output and the state
//! it leaves behind.

use std::process::{Command, Output};

use crate::helpers::TestApp;

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";

async fn secured() -> TestApp {
    let hash = invitations::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, dash:read:{}", hash(ADMIN), hash(READER));
    TestApp::spawn_with(&["--caller-tokens", &tokens]).await
}

/// Runs `invitations admin <args> --server <app>` with `token` (if any) in
/// the environment. Off the runtime's thread: the server runs on it.
pub async fn admin(app: &TestApp, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invitations"));
    command.arg("admin").args(args).args(["--server", &format!("http://{}", app.addr)]);
    for var in ["INVITATIONS_TOKEN", "INVITATIONS_SERVER", "INVITATIONS_CA_CERT"] {
        command.env_remove(var);
    }
    command.env("INVITATIONS_LOG", "off");
    if let Some(token) = token {
        command.env("INVITATIONS_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run the binary")
}

pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of_failure(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The batch id in "Minted N invitations in batch <id>".
fn batch_of(text: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once(" in batch ").map(|(_, id)| id.trim().to_owned()))
        .unwrap_or_else(|| panic!("no batch in {text}"))
}

#[tokio::test]
async fn the_cli_mints_revokes_disables_and_reads_stats() {
    let app = secured().await;
    let mint = ["mint", "--user", "ana", "--user", "bo", "--per-user", "2", "--ttl", "14d", "--label", "cli"];
    let with_id = [&mint[..], &["--note", "first", "--request-id", "wave-1"]].concat();
    let out = stdout(&admin(&app, Some(ADMIN), &with_id).await);
    assert!(out.starts_with("Minted 4 invitations in batch "), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" ana ")).count(), 2, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" bo ")).count(), 2, "{out}");
    assert_eq!(app.count("invitations").await, 4);
    let pool = app.pool().await;
    let (label, note, days): (String, String, f64) = sqlx::query_as(
        "SELECT label, note, extract(epoch FROM expire_time - create_time)::float8 / 86400 FROM invitations LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!((label.as_str(), note.as_str()), ("cli", "first"));
    assert!((days - 14.0).abs() < 0.01, "ttl 14d: {days}");

    // A retry with the same request id replays the first answer.
    let again = stdout(&admin(&app, Some(ADMIN), &with_id).await);
    assert_eq!(batch_of(&again), batch_of(&out));
    assert_eq!(app.count("invitations").await, 4);

    let dry = stdout(&admin(&app, Some(ADMIN), &["mint", "--unowned", "3", "--dry-run"]).await);
    assert!(dry.starts_with("Dry run: would mint 3 invitations"), "{dry}");
    assert_eq!(app.count("invitations").await, 4);

    let revoked = stdout(&admin(&app, Some(ADMIN), &["revoke", "--user", "bo", "--reason", "spam"]).await);
    assert!(revoked.starts_with("Revoked 2 invitations"), "{revoked}");

    let disabled =
        stdout(&admin(&app, Some(ADMIN), &["privileges", "disable", "--user", "ana", "--reason", "abuse"]).await);
    assert!(disabled.starts_with("Invite privileges disabled (changed); reason: \"abuse\""), "{disabled}");
    let refused = stderr_of_failure(&admin(&app, Some(ADMIN), &["mint", "--user", "ana"]).await);
    assert!(refused.contains("INVITE_PRIVILEGES_DISABLED"), "{refused}");
    let enabled = stdout(&admin(&app, Some(ADMIN), &["privileges", "enable", "--user", "ana"]).await);
    assert!(enabled.starts_with("Invite privileges enabled (changed)"), "{enabled}");

    let stats = stdout(&admin(&app, Some(ADMIN), &["stats", "--label", "cli", "--since", "1d"]).await);
    assert!(stats.contains("  minted 4  unspent 2  redeemed 0  revoked 2  expired 0\n"), "{stats}");
    assert!(stats.contains("Reservations: reserved 0"), "{stats}");

    // Refusals come back readable, with the fields named, and change nothing.
    let bad = ["stats", "--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z"];
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &bad).await);
    assert!(err.contains("INVALID_ARGUMENT") && err.contains("end_time: must be after start_time"), "{err}");
    let err = stderr_of_failure(&admin(&app, None, &["stats"]).await);
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = stderr_of_failure(&admin(&app, Some(READER), &["mint", "--unowned", "1"]).await);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert_eq!(app.count("invitations").await, 4);
    pool.close().await;
}

#[tokio::test]
async fn plan_wave_without_history_says_so_and_mints_nothing() {
    let app = secured().await;
    let out = admin(&app, Some(ADMIN), &["plan-wave", "--target-new-members", "10", "--within", "7d", "--apply"]).await;
    let err = stderr_of_failure(&out);
    assert!(err.contains("no history: no invitations were minted in the history window"), "{err}");
    assert_eq!(app.count("invitations").await, 0);

    let out =
        admin(&app, Some(ADMIN), &["plan-wave", "--target-new-members", "10", "--within", "7d", "--history", "7d"])
            .await;
    assert!(stderr_of_failure(&out).contains("--history (7d) must be longer than --within (7d)"));
}
