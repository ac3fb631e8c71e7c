//! Quota policies: welcome grants on RegisterMembers and on Redeem, refill
//! (also under concurrent redeems of one inviter), and the earn schedule with
//! its cap, as ListForUser reports it. Times are fixed in the database where
//! the API cannot set them; the granter runs every 20ms.

use std::collections::BTreeSet;
use std::time::Duration;

use invitations::pb;
use prost::Message;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::helpers::{TestApp, member, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const HOUR: i64 = 3600;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn listing(app: &TestApp, user: &str) -> pb::ListForUserResponse {
    app.list(pb::ListForUserRequest { user_id: user.into(), page_size: 500, ..Default::default() }).await.expect("list")
}

fn unspent(list: &pb::ListForUserResponse) -> usize {
    list.invitations.iter().filter(|i| i.state == pb::invitation::State::Unspent as i32).count()
}

/// (label, minted_by) of a user's invitations, each pair once.
fn origins(list: &pb::ListForUserResponse) -> BTreeSet<(String, String)> {
    list.invitations.iter().map(|i| (i.label.clone(), i.minted_by.clone())).collect()
}

fn policy(name: &str) -> BTreeSet<(String, String)> {
    BTreeSet::from([(name.to_string(), name.to_string())])
}

async fn sql(pool: &PgPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn welcome_grant_on_registering_and_on_redeeming() {
    let app = TestApp::spawn_with(&["--welcome-grant", "3"]).await;
    let pool = app.pool().await;
    // An owner known only from a Mint joins when registered: welcomed then.
    app.mint_one("known").await;
    app.register(vec![
        member("new1", Some(now() - HOUR), None),
        member("new2", None, None),
        member("known", Some(now()), None),
    ])
    .await
    .expect("register");
    for user in ["new1", "new2"] {
        let list = listing(&app, user).await;
        assert_eq!(unspent(&list), 3, "{user}");
        assert_eq!(origins(&list), policy("policy:welcome"));
    }
    assert_eq!(unspent(&listing(&app, "known").await), 4, "its minted one and the welcome");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches WHERE label = 'policy:welcome'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(batches, 1, "one batch per call");
    let welcome_count: i32 = sqlx::query_scalar("SELECT invitation_count FROM batches WHERE label = 'policy:welcome'")
        .fetch_one(&pool)
        .await
        .expect("batch");
    assert_eq!(welcome_count, 9);
    // Announced like any mint: minted events of the welcome batch, 9 invitations.
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'minted'")
        .fetch_all(&pool)
        .await
        .expect("outbox");
    let welcomed: usize = payloads
        .iter()
        .filter_map(|bytes| match pb::InvitationEvent::decode(bytes.as_slice()).expect("event").event {
            Some(pb::invitation_event::Event::Minted(m)) if m.label == "policy:welcome" => {
                assert_eq!(m.minted_by, "policy:welcome");
                Some(m.grants.iter().map(|g| g.invitation_ids.len()).sum::<usize>())
            }
            _ => None,
        })
        .sum();
    assert_eq!(welcomed, 9);
    // Registering again is no new joining.
    app.register(vec![member("new1", Some(now() - 2 * HOUR), None), member("known", None, None)])
        .await
        .expect("register again");
    assert_eq!(unspent(&listing(&app, "new1").await), 3);
    assert_eq!(unspent(&listing(&app, "known").await), 4);

    // A disabled member who joins gets no welcome.
    app.mint_one("banned").await;
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "banned".into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
    app.register(vec![member("banned", Some(now()), None)]).await.expect("register");
    assert_eq!(listing(&app, "banned").await.invitations.len(), 1, "only its minted one");

    // An invitee registered by Redeem is welcomed in the same transaction;
    // one registered before (already welcomed) is not welcomed twice.
    let code = listing(&app, "new1").await.invitations[0].code.clone();
    app.redeem(&code, "invitee").await.expect("redeem");
    let list = listing(&app, "invitee").await;
    assert_eq!(unspent(&list), 3);
    assert_eq!(origins(&list), policy("policy:welcome"));
    let code = listing(&app, "new1").await.invitations[1].code.clone();
    app.redeem(&code, "new2").await.expect("a registered member redeems");
    assert_eq!(unspent(&listing(&app, "new2").await), 3);
    // A retried redeem grants nothing more.
    let code = listing(&app, "new1").await.invitations[2].code.clone();
    app.redeem(&code, "late").await.expect("redeem");
    app.redeem(&code, "late").await.expect("retry");
    assert_eq!(unspent(&listing(&app, "late").await), 3);
    pool.close().await;
}

#[tokio::test]
async fn refill_tops_up_the_inviter_after_each_redeem() {
    let app = TestApp::spawn_with(&["--refill-to", "2"]).await;
    let first = app.mint_one("alice").await;
    app.redeem(&first.code, "bob").await.expect("redeem");
    let list = listing(&app, "alice").await;
    assert_eq!(unspent(&list), 2, "0 unspent after the redeem, topped up to 2");
    let refilled: Vec<_> = list.invitations.iter().filter(|i| i.label == "policy:refill").collect();
    assert_eq!(refilled.len(), 2);
    assert!(refilled.iter().all(|i| i.minted_by == "policy:refill"));
    // At or above the level nothing is added.
    app.mint_for("carol", 4).await;
    let code = listing(&app, "carol").await.invitations[0].code.clone();
    app.redeem(&code, "dan").await.expect("redeem");
    assert_eq!(listing(&app, "carol").await.invitations.len(), 4, "3 unspent left: no refill");
    // The invitee is not refilled (none of its invitations was redeemed).
    assert!(listing(&app, "bob").await.invitations.is_empty());
}

#[tokio::test]
async fn concurrent_redeems_of_one_inviter_never_over_grant() {
    let app = TestApp::spawn_with(&["--refill-to", "3"]).await;
    let codes: Vec<String> = app.mint_for("alice", 8).await.into_iter().map(|i| i.code).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, code) in codes.into_iter().enumerate() {
        let client = app.client.clone();
        tasks.spawn(async move {
            let request = pb::RedeemRequest { code, invitee_id: format!("invitee-{n}"), ..Default::default() };
            client.clone().redeem(request).await.map(|_| ())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("redeem");
    }
    let list = listing(&app, "alice").await;
    // 8 spent; each redeem tops up to 3 from what it sees after the others.
    assert_eq!(unspent(&list), 3, "exactly the refill level");
    assert_eq!(list.invitations.len(), 8 + 3, "8 redeemed, 3 granted in all");
}

/// Sets a member's next earn tick into the past so the granter takes it.
async fn make_due(pool: &PgPool, user: &str) {
    sql(pool, &format!("UPDATE members SET earn_next_time = now() - interval '1 second' WHERE user_id = '{user}'"))
        .await;
}

async fn next_tick(pool: &PgPool, user: &str) -> Option<OffsetDateTime> {
    sqlx::query_scalar("SELECT earn_next_time FROM members WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .expect("member")
}

#[tokio::test]
async fn earn_grants_one_per_interval_up_to_the_cap_and_reports_the_next_grant_time() {
    let app = TestApp::spawn_with(&["--earn-interval", "1h", "--earn-cap", "2", "--earn-grant-interval", "20ms"]).await;
    let pool = app.pool().await;
    // Joined 2.5 intervals ago: ticks at join + 1h, 2h, 3h; the next is 3h.
    let join = now() - 5 * HOUR / 2;
    app.register(vec![member("m", Some(join), None), member("off", Some(join), None)]).await.expect("register");
    let list = listing(&app, "m").await;
    assert!(list.invitations.is_empty(), "no grants for ticks before it joined the service");
    assert_eq!(list.next_grant_time.map(|t| t.seconds), Some(join + 3 * HOUR));

    make_due(&pool, "m").await;
    wait_until(WAIT, "the first earned invitation", || async { listing(&app, "m").await.invitations.len() == 1 }).await;
    let list = listing(&app, "m").await;
    assert_eq!(origins(&list), policy("policy:earn"));
    assert_eq!(list.next_grant_time.map(|t| t.seconds), Some(join + 3 * HOUR), "the next tick after now");

    make_due(&pool, "m").await;
    wait_until(WAIT, "the second earned invitation", || async { listing(&app, "m").await.invitations.len() == 2 })
        .await;
    // At the cap: no next grant time, and a tick grants nothing.
    assert_eq!(listing(&app, "m").await.next_grant_time, None);
    make_due(&pool, "m").await;
    wait_until(WAIT, "the tick at the cap to pass", || async {
        next_tick(&pool, "m").await.is_some_and(|t| t > OffsetDateTime::now_utc())
    })
    .await;
    assert_eq!(listing(&app, "m").await.invitations.len(), 2, "nothing granted at the cap");
    // Below the cap again, the clock shows the next tick.
    let code = listing(&app, "m").await.invitations[0].code.clone();
    app.redeem(&code, "friend").await.expect("redeem");
    assert_eq!(listing(&app, "m").await.next_grant_time.map(|t| t.seconds), Some(join + 3 * HOUR));

    // Disabled: no grants and no next grant time.
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "off".into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
    assert_eq!(listing(&app, "off").await.next_grant_time, None);
    make_due(&pool, "off").await;
    wait_until(WAIT, "the disabled member's tick to pass", || async {
        next_tick(&pool, "off").await.is_some_and(|t| t > OffsetDateTime::now_utc())
    })
    .await;
    assert!(listing(&app, "off").await.invitations.is_empty());

    // A member who joined while the policy was off is scheduled from its
    // next tick, with nothing granted for the past.
    let friend_join: OffsetDateTime = sqlx::query_scalar("SELECT join_time FROM members WHERE user_id = 'friend'")
        .fetch_one(&pool)
        .await
        .expect("friend");
    sql(
        &pool,
        "UPDATE members SET earn_next_time = NULL, join_time = join_time - interval '10 hours 30 minutes' \
         WHERE user_id = 'friend'",
    )
    .await;
    wait_until(WAIT, "the granter to schedule it", || async { next_tick(&pool, "friend").await.is_some() }).await;
    let expected = friend_join - time::Duration::minutes(30) + time::Duration::hours(1);
    assert_eq!(next_tick(&pool, "friend").await, Some(expected), "join + 11h");
    assert!(listing(&app, "friend").await.invitations.is_empty());
    // Without the policy, no next grant time.
    let plain = TestApp::spawn().await;
    plain.register(vec![member("m", Some(join), None)]).await.expect("register");
    assert_eq!(listing(&plain, "m").await.next_grant_time, None);
    pool.close().await;
}

#[tokio::test]
async fn two_replicas_grant_each_due_tick_exactly_once() {
    let args = ["--earn-interval", "1h", "--earn-cap", "5", "--earn-grant-interval", "10ms"];
    let first = TestApp::spawn_with(&args).await;
    let extra_args = args.iter().map(|s| s.to_string()).collect();
    let options = crate::helpers::Options { extra_args, database_url: Some(first.db.url.clone()) };
    let second = TestApp::spawn_opts(options).await;
    let pool = first.pool().await;
    const MEMBERS: usize = 3_000;
    let members: Vec<_> = (0..MEMBERS).map(|i| member(&format!("r{i:04}"), Some(now() - 5 * HOUR / 2), None)).collect();
    first.register(members).await.expect("register");
    // Every member's tick comes at once: three batches of the granter, for two replicas to share.
    sql(&pool, "UPDATE members SET earn_next_time = now() - interval '1 second'").await;
    wait_until(WAIT, "every due tick to be taken", || async {
        let due: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE earn_next_time <= now()")
            .fetch_one(&pool)
            .await
            .expect("count");
        due == 0
    })
    .await;
    let (invitations, owners, most): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT inviter_id), coalesce(max(n), 0) FROM invitations \
         JOIN (SELECT inviter_id AS owner, count(*) AS n FROM invitations GROUP BY inviter_id) c ON c.owner = inviter_id",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!((invitations as usize, owners as usize, most), (MEMBERS, MEMBERS, 1), "one grant per tick");
    assert_eq!(listing(&second, "r0001").await.invitations.len(), 1);
    pool.close().await;
}
