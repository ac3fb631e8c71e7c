//! `invitations admin waitlist …` and `plan-wave --from-waitlist`: the
//! built binary against a running server.

use crate::admin_cli::{admin, stdout};
use crate::helpers::TestApp;
use crate::waitlist::{admit, admit_request, joined};

#[tokio::test]
async fn the_cli_reads_reviews_and_admits_entries_as_json() {
    let app = TestApp::spawn().await;
    let a = joined(&app, "ana", "").await;
    joined(&app, "ben", &a.referral_handle).await;
    let out = stdout(&admin(&app, None, &["waitlist", "get", "--applicant", "ana", "--output", "json"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["entries"][0]["applicant_id"], "ana");
    assert_eq!((v["entries"][0]["position"].as_u64(), v["entries"][0]["referrals"].as_u64()), (Some(1), Some(1)));
    let out =
        stdout(&admin(&app, None, &["waitlist", "review", "--entry", &a.id, "--reject", "--output", "json"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((v["changed_count"].as_u64(), v["entries"][0]["state"].as_str()), (Some(1), Some("rejected")));
    let out = stdout(&admin(&app, None, &["waitlist", "admit", "--count", "5", "--dry-run", "--output", "json"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((v["dry_run"].as_bool(), v["exhausted"].as_bool()), (Some(true), Some(true)));
    assert_eq!(v["entries"][0]["applicant_id"], "ben");
    let out = stdout(&admin(&app, None, &["waitlist", "admit", "--count", "5", "--label", "cli"]).await);
    assert!(out.contains("admitted_count: 1") && out.contains("ben  admitted"), "{out}");
}

#[tokio::test]
async fn plan_wave_from_the_waitlist_uses_the_admitted_redeem_rate() {
    let app = TestApp::spawn().await;
    // History: 10 admitted 20 days ago, 4 of whom redeemed.
    for i in 0..10 {
        joined(&app, &format!("old-{i}"), "").await;
    }
    let wave = admit(&app, admit_request(10)).await;
    for e in wave.entries.iter().take(4) {
        let code = &e.invitation.as_ref().expect("invitation").code;
        app.redeem(code, &e.applicant_id).await.expect("redeem");
    }
    let pool = app.pool().await;
    sqlx::query(
        "UPDATE waitlist_entries SET join_time = now() - interval '25 days', admit_time = now() - interval '20 days'",
    )
    .execute(&pool)
    .await
    .expect("age the history");
    for i in 0..8 {
        joined(&app, &format!("new-{i}"), "").await;
    }
    // yield 4 / 10 = 0.4: 2 new members need 5 admissions.
    let plan = ["plan-wave", "--from-waitlist", "--target-new-members", "2", "--within", "7d"];
    let out = stdout(&admin(&app, None, &plan).await);
    assert!(out.contains("admitted: 10   redeemed: 4"), "{out}");
    assert!(out.contains("admissions needed = ceil(2 / 0.4000) = 5"), "{out}");
    assert!(out.contains("Plan: admit 5 entries from the waitlist"), "{out}");
    assert!(out.contains("Nothing admitted"), "{out}");
    let waiting = |pool: sqlx::PgPool| async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waitlist_entries WHERE state = 'waiting'")
            .fetch_one(&pool)
            .await
            .expect("count");
        n
    };
    assert_eq!(waiting(pool.clone()).await, 8, "a plan without --apply admits nobody");
    let apply = [&plan[..], &["--apply", "--output", "json"]].concat();
    let v: serde_json::Value = serde_json::from_str(&stdout(&admin(&app, None, &apply).await)).expect("json");
    assert_eq!((v["admissions_needed"].as_u64(), v["admit"]["admitted_count"].as_u64()), (Some(5), Some(5)));
    assert_eq!(waiting(pool).await, 3);
}
