//! The abuse records partitioned by day (issue 21): IP hashes and attempt
//! counters land in today's partition, the checks read them as before, and
//! a sweep (a replica's first, at start) drops the days past their windows
//! whole and keeps today's.

use invitations::pb;
use std::time::Duration;
use tonic::Code;

use crate::helpers::{Options, TestApp, assert_error, wait_until};

async fn scalar(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn abuse_records_live_in_day_partitions_and_past_days_are_dropped_whole() {
    let app = TestApp::spawn_with(&["--abuse-ip-reuse", "block"]).await;
    let pool = app.pool().await;
    let partitioned =
        "SELECT count(*) FROM pg_class WHERE relkind = 'p' AND relname IN ('redemption_ips', 'attempt_counters')";
    assert_eq!(scalar(&pool, partitioned).await, 2);
    let days = "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ '^redemption_ips_p[0-9]{8}$'";
    assert_eq!(scalar(&pool, days).await, 8, "today and the coming week");

    let first = app.mint_one("root").await;
    let ivy = pb::RedeemRequest {
        code: first.code.clone(),
        invitee_id: "ivy".into(),
        client_ip: "198.51.100.20".into(),
        ..Default::default()
    };
    app.redeem_req(ivy).await.expect("ivy joins");
    let unknown = pb::RedeemRequest {
        code: crate::abuse::unknown_code(),
        invitee_id: "eve".into(),
        client_ip: "198.51.100.21".into(),
        ..Default::default()
    };
    app.redeem_req(unknown).await.expect_err("no such code");
    let today = time::OffsetDateTime::now_utc().date();
    let suffix = format!("{:04}{:02}{:02}", today.year(), u8::from(today.month()), today.day());
    let homes: Vec<String> = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM redemption_ips UNION ALL SELECT tableoid::regclass::text FROM attempt_counters",
    )
    .fetch_all(&pool)
    .await
    .expect("homes");
    assert!(homes.contains(&format!("redemption_ips_p{suffix}")), "{homes:?}");
    assert!(homes.iter().filter(|h| **h == format!("attempt_counters_p{suffix}")).count() >= 1, "{homes:?}");

    // The IP check reads the partitioned table: the same prefix is refused.
    let second = app.mint_one("root").await;
    let again = pb::RedeemRequest {
        code: second.code.clone(),
        invitee_id: "jo".into(),
        client_ip: "198.51.100.20".into(),
        ..Default::default()
    };
    assert_error(&app.redeem_req(again).await.expect_err("reuse"), Code::FailedPrecondition, "IP_ALREADY_USED", None);

    // Days long past, as an older deployment would have left them.
    let mut tx = pool.begin().await.expect("begin");
    for (table, insert) in [
        (
            "redemption_ips",
            "INSERT INTO redemption_ips (redemption_id, invitee_id, ip_hash, key_id, redeem_time) \
             SELECT id, 'old', '\\x00', 1, '2020-01-01 10:00Z' FROM redemptions LIMIT 1",
        ),
        (
            "attempt_counters",
            "INSERT INTO attempt_counters (key_hash, window_start, failures) VALUES ('\\x01', '2020-01-01 10:00Z', 3)",
        ),
    ] {
        let create = format!(
            "CREATE TABLE {table}_p20200101 PARTITION OF {table} FOR VALUES FROM ('2020-01-01Z') TO ('2020-01-02Z')"
        );
        sqlx::query(&create).execute(&mut *tx).await.expect("an old day");
        sqlx::query(insert).execute(&mut *tx).await.expect("a row in it");
    }
    tx.commit().await.expect("commit");
    let old_days =
        "SELECT count(*) FROM pg_class WHERE relname IN ('redemption_ips_p20200101', 'attempt_counters_p20200101')";
    assert_eq!(scalar(&pool, old_days).await, 2);

    // A second replica's sweep runs at its start.
    let replica = TestApp::spawn_opts(Options { extra_args: Vec::new(), database_url: Some(app.db.url.clone()) }).await;
    wait_until(Duration::from_secs(20), "the old days to be dropped", || async { scalar(&pool, old_days).await == 0 })
        .await;
    assert_eq!(scalar(&pool, "SELECT count(*) FROM redemption_ips").await, 1, "ivy's stays");
    assert!(scalar(&pool, "SELECT count(*) FROM attempt_counters").await >= 1, "today's counters stay");
    drop(replica);
}
