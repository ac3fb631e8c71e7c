//! RegisterMembers: an idempotent upsert of users who joined by other routes;
//! Redeem registers invitees by itself.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, member};

const JAN_2020: i64 = 1_577_836_800;
const JUN_2021: i64 = 1_622_505_600;

async fn stored(app: &TestApp, user: &str) -> (Option<time::OffsetDateTime>, bool) {
    let pool = app.pool().await;
    let row = sqlx::query_as("SELECT join_time, hidden FROM members WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("member row");
    pool.close().await;
    row
}

fn at(seconds: i64) -> Option<time::OffsetDateTime> {
    Some(time::OffsetDateTime::from_unix_timestamp(seconds).expect("valid time"))
}

#[tokio::test]
async fn register_is_an_idempotent_upsert() {
    let app = TestApp::spawn().await;
    let batch =
        vec![member("ana", Some(JAN_2020), None), member("bo", None, None), member("cy", Some(JUN_2021), Some(true))];
    let first = app.register(batch.clone()).await.expect("register");
    assert_eq!((first.created_count, first.updated_count), (3, 0));
    assert_eq!(stored(&app, "ana").await, (at(JAN_2020), false));
    assert_eq!(stored(&app, "cy").await, (at(JUN_2021), true));
    let (bo_joined, _) = stored(&app, "bo").await;
    let age = time::OffsetDateTime::now_utc() - bo_joined.expect("no join time given: now");
    assert!(age < time::Duration::minutes(1), "bo joined {age} ago");

    let again = app.register(batch).await.expect("replay");
    assert_eq!((again.created_count, again.updated_count), (0, 0), "a replay changes nothing");
    assert_eq!(stored(&app, "bo").await.0, bo_joined, "an unset join time keeps the known one");

    // Corrections: a new join time, visibility on and off; unset fields stay.
    let fix = app
        .register(vec![member("ana", Some(JUN_2021), None), member("cy", None, Some(false)), member("dee", None, None)])
        .await
        .expect("update");
    assert_eq!((fix.created_count, fix.updated_count), (1, 2));
    assert_eq!(stored(&app, "ana").await, (at(JUN_2021), false));
    assert_eq!(stored(&app, "cy").await, (at(JUN_2021), false));
    assert_eq!(app.count("members").await, 4);
}

#[tokio::test]
async fn redeem_registers_the_invitee_and_owners_of_minted_invitations_have_no_join_time() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("olga").await;
    assert_eq!(stored(&app, "olga").await, (None, false), "known only as an owner: join time unknown");

    let redeemed = app.redeem(&inv.code, "pia").await.expect("redeem");
    let redeem_time = redeemed.redeem_time.expect("redeem time");
    let (joined, _) = stored(&app, "pia").await;
    assert_eq!(joined.map(|t| t.unix_timestamp()), Some(redeem_time.seconds), "join time = redeem time");

    // The redeem time stays: registering cannot move it, but can hide pia.
    let r = app.register(vec![member("pia", Some(JAN_2020), Some(true))]).await.expect("register");
    assert_eq!((r.created_count, r.updated_count), (0, 1));
    assert_eq!(stored(&app, "pia").await, (joined, true));

    // An owner registered later gets the join time it is told.
    app.register(vec![member("olga", Some(JAN_2020), None)]).await.expect("register");
    assert_eq!(stored(&app, "olga").await.0, at(JAN_2020));

    // A member registered before redeeming keeps the registered join time.
    app.register(vec![member("quinn", Some(JUN_2021), None)]).await.expect("register");
    let inv = app.mint_one("olga").await;
    app.redeem(&inv.code, "quinn").await.expect("redeem");
    assert_eq!(stored(&app, "quinn").await.0, at(JUN_2021));
}

#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let far_future = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let many: Vec<_> = (0..10_001).map(|i| member(&format!("u{i}"), None, None)).collect();
    let bad_nanos = pb::MemberRegistration {
        join_time: Some(prost_types::Timestamp { seconds: JAN_2020, nanos: -1 }),
        ..member("ok", None, None)
    };
    let cases: Vec<(Vec<pb::MemberRegistration>, &str)> = vec![
        (vec![], "members"),
        (many, "members"),
        (vec![member("ok", None, None), member("", None, None)], "members[1].user_id"),
        (vec![member(&"x".repeat(129), None, None)], "members[0].user_id"),
        (vec![member("a\u{7}", None, None)], "members[0].user_id"),
        (vec![member("ok", None, None), member("ok", None, None)], "members[1].user_id"),
        (vec![member("ok", Some(far_future), None)], "members[0].join_time"),
        (vec![member("ok", Some(-1), None)], "members[0].join_time"),
        (vec![bad_nanos], "members[0].join_time"),
    ];
    for (members, field) in cases {
        let err = app.register(members).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    assert_eq!(app.count("members").await, 0);

    let most: Vec<_> = (0..10_000).map(|i| member(&format!("u{i}"), Some(JAN_2020), None)).collect();
    let r = app.register(most).await.expect("10,000 is allowed");
    assert_eq!(r.created_count, 10_000);
}
