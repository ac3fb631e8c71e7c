//! `invitations admin … --output json`: every subcommand answers with one
//! JSON object on one line, with the field names docs/operations.md
//! promises, and the values say what the service did (checked against the
//! database). Refusals keep stdout empty: the reason goes to stderr.

use std::process::Output;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::admin_cli::{ADMIN, admin, planner_history, secured, stderr_of_failure, stdout};
use crate::helpers::TestApp;

fn parsed(out: &Output) -> Value {
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn time_of(value: &Value) -> OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("not a time string: {value}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    let list = value.as_array().unwrap_or_else(|| panic!("not a list: {value}"));
    list.iter().map(|i| i[key].as_str().unwrap_or_else(|| panic!("no {key} in {i}")).to_owned()).collect()
}

#[tokio::test]
async fn every_admin_command_answers_in_json() {
    let app = secured(&[]).await;
    let mint = ["mint", "--user", "ana", "--user", "bo", "--per-user", "2", "--ttl", "14d", "--label", "cli"];
    let minted = parsed(&admin(&app, Some(ADMIN), &[&mint[..], &["--output", "json"]].concat()).await);
    assert_eq!((&minted["dry_run"], &minted["minted_count"]), (&json!(false), &json!(4)), "{minted}");
    assert!(minted["batch_id"].is_string(), "{minted}");
    assert_eq!(minted["invitations_truncated"], json!(false));
    let invitations = &minted["invitations"];
    let mut owners = strings(invitations, "inviter_id");
    owners.sort();
    assert_eq!(owners, ["ana", "ana", "bo", "bo"]);
    for i in invitations.as_array().into_iter().flatten() {
        assert_eq!((&i["state"], &i["label"], &i["max_uses"]), (&json!("UNSPENT"), &json!("cli"), &json!(1)), "{i}");
        assert_eq!(i["batch_id"], minted["batch_id"]);
        assert!(i["code"].as_str().is_some_and(|c| c.len() >= 15), "{i}");
        let days = (time_of(&i["expire_time"]) - time_of(&i["create_time"])).as_seconds_f64() / 86_400.0;
        assert!((days - 14.0).abs() < 0.01, "ttl 14d: {i}");
    }
    assert_eq!(app.count("invitations").await, 4);

    // The flag may come before the subcommand too (it is global).
    let dry = parsed(&admin(&app, Some(ADMIN), &["--output", "json", "mint", "--unowned", "3", "--dry-run"]).await);
    assert_eq!((&dry["dry_run"], &dry["minted_count"], &dry["batch_id"]), (&json!(true), &json!(3), &Value::Null));
    assert_eq!(app.count("invitations").await, 4, "a dry run mints nothing");

    let bo: Vec<String> = invitations
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["inviter_id"] == "bo")
        .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let revoked =
        parsed(&admin(&app, Some(ADMIN), &["revoke", "--user", "bo", "--reason", "spam", "--output", "json"]).await);
    assert_eq!(revoked["revoked_count"], json!(2), "{revoked}");
    let mut ids = strings(&revoked["invitations"], "id");
    ids.sort();
    let mut want = bo.clone();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(strings(&revoked["invitations"], "state"), ["REVOKED", "REVOKED"]);

    let disable = ["privileges", "disable", "--user", "ana", "--reason", "abuse", "--output", "json"];
    let disabled = parsed(&admin(&app, Some(ADMIN), &disable).await);
    assert_eq!(
        (&disabled["user_id"], &disabled["enabled"], &disabled["changed"], &disabled["reason"]),
        (&json!("ana"), &json!(false), &json!(true), &json!("abuse")),
        "{disabled}"
    );
    assert!((OffsetDateTime::now_utc() - time_of(&disabled["update_time"])).whole_minutes().abs() < 5);
    assert_eq!(disabled["revoked_count"], json!(0));
    let again = parsed(&admin(&app, Some(ADMIN), &disable).await);
    assert_eq!(again["changed"], json!(false), "setting it again changes nothing");
    let enabled =
        parsed(&admin(&app, Some(ADMIN), &["privileges", "enable", "--user", "ana", "--output", "json"]).await);
    assert_eq!((&enabled["enabled"], &enabled["changed"]), (&json!(true), &json!(true)));

    let stats =
        parsed(&admin(&app, Some(ADMIN), &["stats", "--label", "cli", "--since", "1d", "--output", "json"]).await);
    let overall = &stats["overall"];
    for (key, want) in [("minted", 4), ("unspent", 2), ("redeemed", 0), ("revoked", 2), ("expired", 0), ("used", 0)] {
        assert_eq!(overall[key], json!(want), "{key}: {stats}");
    }
    assert_eq!(overall["median_time_to_redeem_seconds"], Value::Null, "nothing redeemed");
    assert_eq!(overall["redemption_rate"], json!(0.0));
    assert_eq!(strings(&stats["by_label"], "label"), ["cli"]);
    assert_eq!(stats["by_batch"][0]["batch_id"], minted["batch_id"]);
    assert_eq!(stats["by_period"].as_array().map(Vec::len), Some(1), "{stats}");
    let window = time_of(&stats["end_time"]) - time_of(&stats["start_time"]);
    assert_eq!(window.whole_days(), 1, "--since 1d");
    assert!(stats["new_members"].as_array().is_some_and(|d| !d.is_empty()), "every day of the window");
    assert_eq!(stats["reservations"], json!({"reserved": 0, "held": 0, "completed": 0, "released": 0, "lapsed": 0}));
    assert_eq!((&stats["top_inviters"], &stats["abuse_flags"]), (&json!([]), &json!([])));
    assert_eq!(stats["batches_truncated"], json!(false));

    // A refusal: nothing on stdout for a script to misread, the reason on stderr.
    let bad = ["stats", "--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z", "--output", "json"];
    let out = admin(&app, Some(ADMIN), &bad).await;
    assert!(stderr_of_failure(&out).contains("INVALID_ARGUMENT"));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn plan_wave_answers_in_json() {
    // Unauthenticated (loopback) server: the history is built by direct calls.
    let app = TestApp::spawn().await;
    planner_history(&app).await;

    // yield = 4 / 10; 6 new members need 15 invitations; 35 members have none unspent.
    let plan = ["plan-wave", "--target-new-members", "6", "--within", "7d", "--output", "json"];
    let v = parsed(&admin(&app, None, &plan).await);
    let history = &v["history"];
    assert_eq!(
        (&history["minted"], &history["redeemed_within"], &history["redemptions"], &history["label"]),
        (&json!(10), &json!(4), &json!(5), &Value::Null),
        "{v}"
    );
    let median = history["median_time_to_redeem_seconds"].as_f64().expect("a median");
    assert!((median - 3.0 * 86_400.0).abs() < 60.0, "3 days: {median}");
    let observed = time_of(&history["end_time"]) - time_of(&history["start_time"]);
    assert_eq!(observed.whole_days(), 90 - 7, "--history 90d less --within 7d");
    assert_eq!((&v["within_seconds"], &v["target_new_members"]), (&json!(604_800.0), &json!(6)));
    assert_eq!((&v["yield_per_invitation"], &v["invitations_needed"]), (&json!(0.4), &json!(15)));
    // Every selector is dry-run, in the order of preference; the first with enough wins.
    let selectors = json!([
        {"selector": "no-unspent-invitation", "matched": 35},
        {"selector": "last-redeemed", "matched": 0},
        {"selector": "never-issued", "matched": 30},
    ]);
    assert_eq!(v["selectors"], selectors);
    assert_eq!(v["plan"]["selector"], json!("no-unspent-invitation"));
    assert_eq!(
        (&v["plan"]["count"], &v["plan"]["short"], &v["plan"]["label"]),
        (&json!(15), &json!(false), &json!("wave"))
    );
    let expected = v["plan"]["expected_new_members"].as_f64().expect("a number");
    assert!((expected - 6.0).abs() < 1e-9, "{expected}");
    assert_eq!((&v["applied"], &v["mint"]), (&json!(false), &Value::Null));
    assert_eq!(app.count("invitations").await, 10, "a plan without --apply mints nothing");

    let short = ["plan-wave", "--target-new-members", "100", "--within", "7d", "--selector", "never-issued"];
    let v = parsed(&admin(&app, None, &[&short[..], &["--output", "json"]].concat()).await);
    assert_eq!(v["selectors"], json!([{"selector": "never-issued", "matched": 30}]));
    assert_eq!((&v["plan"]["count"], &v["plan"]["short"]), (&json!(30), &json!(true)), "{v}");

    let apply = [&plan[..], &["--apply", "--label", "wave-2", "--request-id", "plan-1"]].concat();
    let v = parsed(&admin(&app, None, &apply).await);
    assert_eq!(v["applied"], json!(true));
    assert_eq!((&v["mint"]["minted_count"], &v["mint"]["dry_run"]), (&json!(15), &json!(false)), "{v}");
    let batch = v["mint"]["batch_id"].as_str().expect("a batch").to_owned();
    let pool = app.pool().await;
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM invitations WHERE label = 'wave-2' AND batch_id::text = $1")
            .bind(&batch)
            .fetch_one(&pool)
            .await
            .expect("wave");
    assert_eq!(n, 15, "the batch the JSON names holds the wave");
    pool.close().await;

    let none = [&plan[..], &["--history-label", "nothing-like-this"]].concat();
    let out = admin(&app, None, &none).await;
    assert!(stderr_of_failure(&out).contains("no history"));
    assert!(out.stdout.is_empty(), "no history printed in JSON mode: {}", String::from_utf8_lossy(&out.stdout));
}
