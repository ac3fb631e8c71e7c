//! `invitations admin …`: the built binary against a running server (the
//! harness's), with the token in INVITATIONS_TOKEN; its output and the state
//! it leaves behind.

use std::process::{Command, Output};

use crate::helpers::TestApp;

pub const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";

pub async fn secured(extra: &[&str]) -> TestApp {
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, dash:read:{}", hash(ADMIN), hash(READER));
    TestApp::spawn_with(&[&["--caller-tokens", tokens.as_str()], extra].concat()).await
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
    let app = secured(&[]).await;
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
    let app = secured(&[]).await;
    let out = admin(&app, Some(ADMIN), &["plan-wave", "--target-new-members", "10", "--within", "7d", "--apply"]).await;
    let err = stderr_of_failure(&out);
    assert!(err.contains("no history: no invitations were minted in the history window"), "{err}");
    assert_eq!(app.count("invitations").await, 0);

    let out =
        admin(&app, Some(ADMIN), &["plan-wave", "--target-new-members", "10", "--within", "7d", "--history", "7d"])
            .await;
    assert!(stderr_of_failure(&out).contains("--history (7d) must be longer than --within (7d)"));
    let out = admin(&app, Some(ADMIN), &["plan-wave", "--target-new-members", "0", "--within", "7d"]).await;
    assert!(stderr_of_failure(&out).contains("--target-new-members"));
}

/// History for the planner: 10 unowned invitations labelled "w1" minted 20
/// days ago; 4 redeemed within 7 days of minting (days 1, 2, 3, 6), one
/// after (day 10). Members: m1..m30 (joined 60 days ago, never issued an
/// invitation) and the 5 invitees.
pub async fn planner_history(app: &TestApp) {
    use time::{Duration, OffsetDateTime};
    let now = OffsetDateTime::now_utc();
    let joined = (now - Duration::days(60)).unix_timestamp();
    let members = (1..=30).map(|i| crate::helpers::member(&format!("m{i}"), Some(joined), None)).collect();
    app.register(members).await.expect("register");
    let request = invitations::pb::MintRequest { unowned_count: 10, label: "w1".into(), ..Default::default() };
    let minted = app.mint(request).await.expect("mint");
    for (i, inv) in minted.invitations.iter().take(5).enumerate() {
        app.redeem(&inv.code, &format!("i{}", i + 1)).await.expect("redeem");
    }
    let pool = app.pool().await;
    let at = now - Duration::days(20);
    crate::stats::mint_at(&pool, &minted.batch_id, at, None).await;
    for (i, day) in [1, 2, 3, 6, 10].into_iter().enumerate() {
        crate::stats::redeemed_at(&pool, &format!("i{}", i + 1), at + Duration::days(day)).await;
    }
    pool.close().await;
}

#[tokio::test]
async fn plan_wave_plans_from_the_measured_rate_and_applies() {
    // Unauthenticated (loopback) server: the history is built by direct calls.
    let app = TestApp::spawn().await;
    planner_history(&app).await;

    // yield = 4 / 10 = 0.4; 6 new members need ceil(6 / 0.4) = 15 invitations.
    // No unspent invitation: m1..m30 and i1..i5 = 35 members, enough.
    let plan = ["plan-wave", "--target-new-members", "6", "--within", "7d"];
    let out = stdout(&admin(&app, None, &plan).await);
    for line in [
        "  minted:                       10\n",
        "  redeemed within 7d:           4\n",
        "  redeemed so far:              5\n",
        "  median time to redeem:        3d\n",
        "  yield = 4 / 10 = 0.4000 new members per invitation within 7d\n",
        "  invitations needed = ceil(6 / 0.4000) = 15\n",
        "  no-unspent-invitation    matches 35 members\n",
        "Plan: mint 15 invitations for no-unspent-invitation (label \"wave\").\n",
        "Nothing minted: run again with --apply to mint this wave.\n",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    assert_eq!(app.count("invitations").await, 10, "a plan without --apply mints nothing");

    // 100 members need 250; never-issued (joined ≥ 30d ago) matches only m1..m30.
    let short =
        [&plan[..2], &["100", "--within", "7d", "--selector", "never-issued", "--history-label", "w1"]].concat();
    let out = stdout(&admin(&app, None, &short).await);
    assert!(out.contains("  invitations needed = ceil(100 / 0.4000) = 250\n"), "{out}");
    assert!(
        out.contains(
            "Short: never-issued matches only 30 members; minting one each reaches about 12 new members, not 100."
        ),
        "{out}"
    );
    assert!(!out.contains("no-unspent-invitation"), "only the selector asked for: {out}");
    let none = [&plan[..], &["--history-label", "nothing-like-this"]].concat();
    assert!(stderr_of_failure(&admin(&app, None, &none).await).contains("no history"));

    let apply = [&plan[..], &["--apply", "--label", "wave-2", "--request-id", "plan-1"]].concat();
    let out = stdout(&admin(&app, None, &apply).await);
    assert!(out.contains("Minted 15 invitations in batch "), "{out}");
    let pool = app.pool().await;
    let (n, owners, days): (i64, i64, f64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT inviter_id), \
                max(extract(epoch FROM expire_time - create_time))::float8 / 86400 \
         FROM invitations WHERE label = 'wave-2'",
    )
    .fetch_one(&pool)
    .await
    .expect("wave");
    assert_eq!((n, owners), (15, 15), "one each for 15 members");
    assert!((days - 7.0).abs() < 0.01, "the ttl defaults to --within: {days}");
    // The same request id replays the first wave.
    let again = stdout(&admin(&app, None, &apply).await);
    assert_eq!(batch_of(&again), batch_of(&out));
    assert_eq!(app.count("invitations").await, 25);
    pool.close().await;
}

#[tokio::test]
async fn mint_by_selector_from_the_cli() {
    // Unauthenticated (loopback) server: the history is built by direct calls.
    let app = TestApp::spawn().await;
    planner_history(&app).await;
    let dry = ["mint", "--selector", "no-unspent-invitation", "--count", "5", "--ttl", "14d", "--label", "weekly-wave"];
    let out = stdout(&admin(&app, None, &[&dry[..], &["--dry-run"]].concat()).await);
    assert!(
        out.starts_with("Dry run: would mint 5 invitations (nothing minted)\nMembers matching the selector: 35\n"),
        "{out}"
    );
    assert_eq!(app.count("invitations").await, 10);

    // The CronJob's own arguments (deploy/k8s/cronjob-wave.yaml).
    let out = stdout(&admin(&app, None, &dry).await);
    assert!(out.starts_with("Minted 5 invitations in batch "), "{out}");
    let aged = ["mint", "--selector", "never-issued", "--min-age", "30d", "--count", "100", "--label", "aged"];
    let out = stdout(&admin(&app, None, &aged).await);
    let minted: usize = out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("count");
    assert!((25..=30).contains(&minted), "m1..m30 less those the first wave reached: {out}");
    assert_eq!(app.count("invitations").await, 15 + minted as i64);

    let err = stderr_of_failure(&admin(&app, None, &["mint", "--selector", "last-redeemed", "--count", "3"]).await);
    assert!(err.contains("--selector last-redeemed needs --min-age"), "{err}");
}
