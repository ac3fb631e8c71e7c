//! `--request-id-retention`: stored idempotent answers are honoured for the
//! retention, then deleted, after which the same id is a new call.

use std::time::Duration;

use invitations::pb;

use crate::helpers::{Options, TestApp, wait_until};

fn mint(request_id: &str) -> pb::MintRequest {
    pb::MintRequest { user_ids: vec!["alice".into()], per_user: 1, request_id: request_id.into(), ..Default::default() }
}

async fn stored(app: &TestApp, request_id: &str) -> bool {
    let pool = app.pool().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE request_id = $1)")
        .bind(request_id)
        .fetch_one(&pool)
        .await
        .expect("query")
}

#[tokio::test]
async fn answers_past_the_retention_are_swept_and_the_id_starts_anew() {
    // The first server keeps answers forever, so nothing is swept before
    // the rows are aged.
    let first = TestApp::spawn_with(&["--request-id-retention", "0s"]).await;
    let old = first.mint(mint("wave-old")).await.expect("old");
    let recent = first.mint(mint("wave-recent")).await.expect("recent");
    first.mint(mint("wave-fresh")).await.expect("fresh");
    let pool = first.pool().await;
    for (id, days) in [("wave-old", 12), ("wave-recent", 8)] {
        sqlx::query(
            "UPDATE idempotency_keys SET create_time = now() - make_interval(days => $2) WHERE request_id = $1",
        )
        .bind(id)
        .bind(days)
        .execute(&pool)
        .await
        .expect("age the stored answer");
    }

    // Within the retention a retry replays: nothing new is minted.
    assert_eq!(first.mint(mint("wave-old")).await.expect("replay"), old);
    assert_eq!(first.count("invitations").await, 3);

    // A replica with a 10-day retention (its own test database is unused:
    // it serves the first one's) sweeps at start: the 12-day answer
    // goes; the 8-day one, in reach of the same statement, stays.
    let args = vec!["--request-id-retention".to_string(), "10d".to_string()];
    let second = TestApp::spawn_opts(Options { extra_args: args, database_url: Some(first.db.url.clone()) }).await;
    wait_until(Duration::from_secs(20), "the 12-day answer to be swept", || async {
        !stored(&first, "wave-old").await
    })
    .await;
    assert!(stored(&first, "wave-recent").await, "8 days is within a 10-day retention");
    assert!(stored(&first, "wave-fresh").await);

    // Past the retention the same id is a new call: it mints again…
    let again = second.mint(mint("wave-old")).await.expect("a new call");
    assert_ne!(again.invitations[0].code, old.invitations[0].code);
    assert_eq!(first.count("invitations").await, 4);
    // …while the one still retained replays.
    assert_eq!(second.mint(mint("wave-recent")).await.expect("replay"), recent);
    assert_eq!(first.count("invitations").await, 4);
}
