//! The outbox partitioned by day (migrations/0065): events land in today's
//! partition, the coming days' exist, and the maintenance task drops a day
//! only once every event in it was sent before the retention, never one
//! with a pending or recent event.

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{TestApp, wait_until};

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .expect("query")
}

async fn add_event(conn: &mut sqlx::PgConnection, create_time: &str, sent_time: Option<&str>) {
    sqlx::query(
        "INSERT INTO outbox (id, event_type, partition, payload, create_time, sent_time) \
         VALUES (gen_random_uuid(), 'minted', 0, '\\x00', $1::timestamptz, $2::timestamptz)",
    )
    .bind(create_time)
    .bind(sent_time)
    .execute(conn)
    .await
    .expect("insert an event");
}

#[tokio::test]
async fn days_are_dropped_only_when_every_event_in_them_was_sent_before_the_retention() {
    let app = TestApp::spawn_with(&["--outbox-retention", "1day", "--outbox-stats-interval", "50ms"]).await;
    let pool = app.pool().await;
    // Today's and the next three days' partitions exist; a minted event is in today's.
    let days: Vec<String> = sqlx::query_scalar(
        "SELECT to_char((now() AT TIME ZONE 'UTC')::date + i, '\"outbox_p\"YYYYMMDD') FROM generate_series(0, 3) i",
    )
    .fetch_all(&pool)
    .await
    .expect("names");
    for day in &days {
        assert!(exists(&pool, day).await, "{day} exists");
    }
    app.mint_one("ann").await;
    let home: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM outbox LIMIT 1").fetch_one(&pool).await.expect("row");
    assert_eq!(home, days[0], "events of today are in today's partition");

    // Four old days: all sent long ago; one pending; one sent a moment ago;
    // one already detached (a replica stopped between detach and drop).
    // All in one transaction: the service's maintenance (every 50 ms) would
    // otherwise drop an old day while it is still empty, before its event
    // is written.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT inv_outbox_ensure_partitions('2020-01-01', '2020-01-04')")
        .execute(&mut *tx)
        .await
        .expect("old");
    add_event(&mut tx, "2020-01-01 10:00+00", Some("2020-01-01 10:00:01+00")).await;
    add_event(&mut tx, "2020-01-01 11:00+00", Some("2020-01-01 11:00:01+00")).await;
    add_event(&mut tx, "2020-01-02 10:00+00", None).await;
    add_event(&mut tx, "2020-01-03 10:00+00", Some("now")).await;
    add_event(&mut tx, "2020-01-04 10:00+00", Some("2020-01-04 10:00:01+00")).await;
    sqlx::query("ALTER TABLE outbox DETACH PARTITION outbox_p20200104").execute(&mut *tx).await.expect("detach");
    tx.commit().await.expect("commit");

    wait_until(Duration::from_secs(20), "the old, fully sent days to be dropped", || async {
        !exists(&pool, "outbox_p20200101").await && !exists(&pool, "outbox_p20200104").await
    })
    .await;
    assert!(exists(&pool, "outbox_p20200102").await, "a day with a pending event stays");
    assert!(exists(&pool, "outbox_p20200103").await, "a day with an event sent within the retention stays");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.expect("count");
    assert_eq!(kept, 3, "today's minted event and the two old days' events, nothing else lost");
    assert!(exists(&pool, &days[0]).await);
}
