//! GetStats against a small history built through the RPCs, with the past
//! times set directly in the database, and every number computed by hand
//! (the comments show the arithmetic). Also the window and label filters,
//! folded and unfolded counters, bad input and the admin scope.

use invitations::pb;
use invitations::store::{fold, stats::BATCH_COUNTS};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use tonic::Code;

use crate::helpers::{TestApp, assert_error, bearer, member};

fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    invitations::grpc::convert::timestamp(t)
}

fn hours(h: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: h * 3600, nanos: 0 }
}

/// Midnight UTC ten days ago: the test's window is [M, M + 10 days).
fn base() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT) - Duration::days(10)
}

/// Moves a batch (and its invitations) to `at`; `expire` sets their expiry.
pub async fn mint_at(pool: &PgPool, batch_id: &str, at: OffsetDateTime, expire: Option<OffsetDateTime>) {
    let id: uuid::Uuid = batch_id.parse().expect("batch id");
    sqlx::query("UPDATE batches SET create_time = $2, expire_time = coalesce($3, expire_time) WHERE id = $1")
        .bind(id)
        .bind(at)
        .bind(expire)
        .execute(pool)
        .await
        .expect("move batch");
    sqlx::query("UPDATE invitations SET create_time = $2, expire_time = coalesce($3, expire_time) WHERE batch_id = $1")
        .bind(id)
        .bind(at)
        .bind(expire)
        .execute(pool)
        .await
        .expect("move invitations");
}

/// Moves an invitee's redemption (and join) to `at`.
pub async fn redeemed_at(pool: &PgPool, invitee: &str, at: OffsetDateTime) {
    sqlx::query("UPDATE redemptions SET redeem_time = $2 WHERE invitee_id = $1")
        .bind(invitee)
        .bind(at)
        .execute(pool)
        .await
        .expect("move redemption");
    sqlx::query("UPDATE members SET join_time = $2 WHERE user_id = $1")
        .bind(invitee)
        .bind(at)
        .execute(pool)
        .await
        .expect("move join");
}

async fn mint(app: &TestApp, request: pb::MintRequest) -> pb::MintResponse {
    app.mint(request).await.expect("mint")
}

/// The history (M = base()):
/// - A "spring", 4 for ana, minted day 1 12:00: u1 +1h, u2 +3h (same IP as
///   u1: IP_REUSE), u3 +48h; the 4th revoked.
/// - B "spring", 2 unowned, minted day 3 12:00, expired day 4: none redeemed.
/// - C "summer", 3 for bo, minted day 3 13:00: u4 +5h through a reservation
///   (completed); one revoked; one unspent (reserved and released, then
///   reserved again and lapsed).
/// - D "old", 1 for ana, minted 20 days before M (outside the window),
///   redeemed by u5 on day 4 10:00.
/// - "root" registered with a join time on day 4 11:00.
struct History {
    /// Midnight of day 0 (read once: a test running across midnight keeps it).
    m: OffsetDateTime,
    a: String,
    b: String,
    c: String,
}

async fn build_history(app: &TestApp) -> History {
    let m = base();
    let pool = app.pool().await;
    let mut c = app.client.clone();
    let for_user = |user: &str, n: u32, label: &str| pb::MintRequest {
        user_ids: vec![user.into()],
        per_user: n,
        label: label.into(),
        ..Default::default()
    };
    let a = mint(app, for_user("ana", 4, "spring")).await;
    let b = mint(app, pb::MintRequest { unowned_count: 2, label: "spring".into(), ..Default::default() }).await;
    let cb = mint(app, for_user("bo", 3, "summer")).await;
    let d = mint(app, for_user("ana", 1, "old")).await;

    let redeem_ip = |code: &str, invitee: &str| pb::RedeemRequest {
        code: code.into(),
        invitee_id: invitee.into(),
        client_ip: "198.51.100.7".into(),
        ..Default::default()
    };
    app.redeem_req(redeem_ip(&a.invitations[0].code, "u1")).await.expect("u1");
    app.redeem_req(redeem_ip(&a.invitations[1].code, "u2")).await.expect("u2");
    app.redeem(&a.invitations[2].code, "u3").await.expect("u3");
    app.redeem(&d.invitations[0].code, "u5").await.expect("u5");
    let revoke = pb::RevokeRequest {
        invitation_ids: vec![a.invitations[3].id.clone(), cb.invitations[1].id.clone()],
        ..Default::default()
    };
    assert_eq!(app.revoke(revoke).await.expect("revoke").revoked_count, 2);

    // C: u4 through a reservation; the unspent one reserved and released,
    // then reserved again and left to lapse.
    let reserve = |code: &str| pb::ReserveRequest { code: code.into(), ..Default::default() };
    let held = c.reserve(reserve(&cb.invitations[0].code)).await.expect("reserve").into_inner();
    let held_id = held.reservation.expect("reservation").id;
    let complete = pb::RedeemRequest { reservation_id: held_id.clone(), invitee_id: "u4".into(), ..Default::default() };
    app.redeem_req(complete).await.expect("u4 completes");
    let released = c.reserve(reserve(&cb.invitations[2].code)).await.expect("reserve").into_inner();
    let released_id = released.reservation.expect("reservation").id;
    c.release(pb::ReleaseRequest { reservation_id: released_id }).await.expect("release");
    let lapsing = c.reserve(reserve(&cb.invitations[2].code)).await.expect("reserve").into_inner();
    let lapsing_id: uuid::Uuid = lapsing.reservation.expect("reservation").id.parse().expect("uuid");
    sqlx::query("UPDATE reservations SET expire_time = $2 WHERE id = $1")
        .bind(lapsing_id)
        .bind(m + Duration::days(5) + Duration::minutes(15))
        .execute(&pool)
        .await
        .expect("lapse");
    sqlx::query("UPDATE reservations SET create_time = $1")
        .bind(m + Duration::days(5))
        .execute(&pool)
        .await
        .expect("reservations in the window");

    let root_joined = (m + Duration::days(4) + Duration::hours(11)).unix_timestamp();
    app.register(vec![member("root", Some(root_joined), None)]).await.expect("register");

    let day = |d: i64, h: i64| m + Duration::days(d) + Duration::hours(h);
    mint_at(&pool, &a.batch_id, day(1, 12), None).await;
    mint_at(&pool, &b.batch_id, day(3, 12), Some(day(4, 0))).await;
    mint_at(&pool, &cb.batch_id, day(3, 13), None).await;
    mint_at(&pool, &d.batch_id, m - Duration::days(20), None).await;
    redeemed_at(&pool, "u1", day(1, 13)).await;
    redeemed_at(&pool, "u2", day(1, 15)).await;
    redeemed_at(&pool, "u3", day(3, 12)).await;
    redeemed_at(&pool, "u4", day(3, 18)).await;
    redeemed_at(&pool, "u5", day(4, 10)).await;
    pool.close().await;
    History { m, a: a.batch_id, b: b.batch_id, c: cb.batch_id }
}

fn window(m: OffsetDateTime, label: &str) -> pb::GetStatsRequest {
    pb::GetStatsRequest {
        start_time: Some(ts(m)),
        end_time: Some(ts(m + Duration::days(10))),
        label: label.into(),
        redeemed_within: Some(hours(6)),
        ..Default::default()
    }
}

/// (minted, unspent, redeemed, revoked, expired, used, redemptions, median hours, within 6h)
type Row = (i64, i64, i64, i64, i64, i64, i64, Option<i64>, i64);

fn row(g: &pb::InvitationStats) -> Row {
    let median = g.median_time_to_redeem.as_ref().map(|d| {
        assert_eq!((d.seconds % 3600, d.nanos), (0, 0), "whole hours in this history: {d:?}");
        d.seconds / 3600
    });
    (g.minted, g.unspent, g.redeemed, g.revoked, g.expired, g.used, g.redemptions, median, g.redeemed_within_count)
}

async fn stats(app: &TestApp, request: pb::GetStatsRequest) -> pb::GetStatsResponse {
    app.client.clone().get_stats(request).await.expect("stats").into_inner()
}

#[tokio::test]
async fn stats_match_the_hand_computed_history_folded_or_not() {
    // The fold is off, so the counts come from the deltas; folded below.
    let app = TestApp::spawn_with(&["--graph-fold-interval", "0s"]).await;
    let h = build_history(&app).await;
    let s = stats(&app, window(h.m, "")).await;

    // Cohort A + B + C: minted 4 + 2 + 3 = 9; redeemed (spent) 3 + 0 + 1 = 4;
    // revoked 1 + 0 + 1 = 2; expired 0 + 2 + 0 = 2; unspent 9 - 4 - 2 - 2 = 1.
    // Delays 1h, 3h, 48h, 5h: median (3h + 5h) / 2 = 4h; within 6h: 3.
    let overall = s.overall.clone().expect("overall");
    assert_eq!(row(&overall), (9, 1, 4, 2, 2, 4, 4, Some(4), 3));
    assert_eq!(overall.never_redeemed, 5);
    assert!((overall.never_redeemed_share - 5.0 / 9.0).abs() < 1e-12);
    assert!((overall.redemption_rate - 4.0 / 9.0).abs() < 1e-12);

    // spring = A + B: delays 1h, 3h, 48h -> median 3h, 2 within 6h.
    // summer = C: 5h. Labels in order; D ("old") is outside the window.
    let labels: Vec<(&str, Row)> = s.by_label.iter().map(|g| (g.label.as_str(), row(g))).collect();
    assert_eq!(
        labels,
        vec![("spring", (6, 0, 3, 1, 2, 3, 3, Some(3), 2)), ("summer", (3, 1, 1, 1, 0, 1, 1, Some(5), 1))]
    );

    // Days of minting: day 1 (A), day 3 (B + C).
    let m = h.m;
    let periods: Vec<(Option<prost_types::Timestamp>, Row)> =
        s.by_period.iter().map(|g| (g.period_start, row(g))).collect();
    assert_eq!(
        periods,
        vec![
            (Some(ts(m + Duration::days(1))), (4, 0, 3, 1, 0, 3, 3, Some(3), 2)),
            (Some(ts(m + Duration::days(3))), (5, 1, 1, 1, 2, 1, 1, Some(5), 1)),
        ]
    );

    // Batches newest first: C, B, A.
    let batches: Vec<(&str, &str, Row)> =
        s.by_batch.iter().map(|g| (g.batch_id.as_str(), g.label.as_str(), row(g))).collect();
    assert_eq!(
        batches,
        vec![
            (h.c.as_str(), "summer", (3, 1, 1, 1, 0, 1, 1, Some(5), 1)),
            (h.b.as_str(), "spring", (2, 0, 0, 0, 2, 0, 0, None, 0)),
            (h.a.as_str(), "spring", (4, 0, 3, 1, 0, 3, 3, Some(3), 2)),
        ]
    );
    assert!(!s.batches_truncated);

    // Joins: day 1 u1, u2; day 3 u3, u4; day 4 u5 and root (registered).
    let joins: Vec<(i64, i64)> = s.new_members.iter().map(|d| (d.joined, d.invited)).collect();
    assert_eq!(joins, vec![(0, 0), (2, 2), (0, 0), (2, 2), (2, 1), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)]);
    assert_eq!(s.new_members[4].day, Some(ts(m + Duration::days(4))));

    // Redemptions in the window by inviter: ana u1, u2, u3 and u5 (D's
    // redemption is in the window though D was minted before it); bo u4.
    let top: Vec<(&str, i64)> = s.top_inviters.iter().map(|i| (i.user_id.as_str(), i.redemptions)).collect();
    assert_eq!(top, vec![("ana", 4), ("bo", 1)]);

    let r = s.reservations.expect("reservations");
    assert_eq!((r.reserved, r.held, r.completed, r.released, r.lapsed), (3, 0, 1, 1, 1));
    let flags: Vec<(&str, i64)> = s.abuse_flags.iter().map(|f| (f.flag.as_str(), f.count)).collect();
    assert_eq!(flags, vec![("IP_REUSE", 1)]);

    // The same numbers once every delta is folded into the counters.
    let pool = app.pool().await;
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(fold(&mut conn, &BATCH_COUNTS, 10_000).await.expect("fold"), 5 + 2, "5 uses and 2 revokes");
    drop(conn);
    assert_eq!(app.count("batch_count_deltas").await, 0);
    let folded = stats(&app, window(h.m, "")).await;
    assert_eq!(folded.overall, s.overall);
    assert_eq!(folded.by_label, s.by_label);
    assert_eq!(folded.by_batch, s.by_batch);
    pool.close().await;
}

#[tokio::test]
async fn window_and_label_filters() {
    let app = TestApp::spawn().await;
    let h = build_history(&app).await;
    let m = h.m;

    let spring = stats(&app, window(h.m, "spring")).await;
    assert_eq!(row(&spring.overall.expect("overall")), (6, 0, 3, 1, 2, 3, 3, Some(3), 2));
    assert_eq!(spring.by_batch.len(), 2);
    let top: Vec<(&str, i64)> = spring.top_inviters.iter().map(|i| (i.user_id.as_str(), i.redemptions)).collect();
    assert_eq!(top, vec![("ana", 3)], "u5 came through an 'old' invitation");
    assert_eq!(spring.abuse_flags.len(), 1);
    assert_eq!(spring.reservations.expect("reservations").reserved, 0, "the reservations were on summer");

    let summer = stats(&app, window(h.m, "summer")).await;
    assert!(summer.abuse_flags.is_empty());
    assert_eq!(summer.reservations.expect("reservations").reserved, 3);

    // Days 2-3 only: cohort B + C; redemptions u3 (day 3) and u4; joins u3, u4.
    let narrow = pb::GetStatsRequest {
        start_time: Some(ts(m + Duration::days(2))),
        end_time: Some(ts(m + Duration::days(4))),
        leaderboard_size: 1,
        ..Default::default()
    };
    let s = stats(&app, narrow).await;
    let overall = s.overall.expect("overall");
    assert_eq!((overall.minted, overall.redeemed, overall.expired), (5, 1, 2));
    let top: Vec<(&str, i64)> = s.top_inviters.iter().map(|i| (i.user_id.as_str(), i.redemptions)).collect();
    assert_eq!(top, vec![("ana", 1)], "size 1; ana (u3) and bo (u4) tie, ana sorts first");
    assert_eq!(s.new_members.iter().map(|d| d.joined).collect::<Vec<_>>(), vec![0, 2]);

    // Weeks: every period starts on a Monday and they add up to the cohort.
    let weekly = stats(&app, pb::GetStatsRequest { period: pb::StatsPeriod::Week as i32, ..window(h.m, "") }).await;
    let mut minted = 0;
    for g in &weekly.by_period {
        let start = OffsetDateTime::from_unix_timestamp(g.period_start.expect("period").seconds).expect("time");
        assert_eq!(start.weekday(), time::Weekday::Monday);
        minted += g.minted;
    }
    assert_eq!(minted, 9);

    // A window before anything happened: zeros, no median, no groups.
    let empty = pb::GetStatsRequest {
        start_time: Some(ts(m - Duration::days(300))),
        end_time: Some(ts(m - Duration::days(299))),
        ..Default::default()
    };
    let s = stats(&app, empty).await;
    assert_eq!(row(&s.overall.expect("overall")), (0, 0, 0, 0, 0, 0, 0, None, 0));
    assert!(s.by_label.is_empty() && s.by_batch.is_empty() && s.top_inviters.is_empty());
}

#[tokio::test]
async fn bad_windows_and_sizes_are_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let mut c = app.client.clone();
    let now = OffsetDateTime::now_utc();
    let cases = [
        (
            pb::GetStatsRequest {
                start_time: Some(ts(now)),
                end_time: Some(ts(now - Duration::hours(1))),
                ..Default::default()
            },
            "end_time",
        ),
        (pb::GetStatsRequest { start_time: Some(ts(now)), end_time: Some(ts(now)), ..Default::default() }, "end_time"),
        (pb::GetStatsRequest { start_time: Some(ts(now - Duration::days(367))), ..Default::default() }, "start_time"),
        (pb::GetStatsRequest { leaderboard_size: -1, ..Default::default() }, "leaderboard_size"),
        (pb::GetStatsRequest { period: 9, ..Default::default() }, "period"),
        (pb::GetStatsRequest { label: "x".repeat(129), ..Default::default() }, "label"),
        (
            pb::GetStatsRequest {
                redeemed_within: Some(prost_types::Duration { seconds: -5, nanos: 0 }),
                ..Default::default()
            },
            "redeemed_within",
        ),
        (
            pb::GetStatsRequest {
                start_time: Some(prost_types::Timestamp { seconds: 1, nanos: -1 }),
                ..Default::default()
            },
            "start_time",
        ),
    ];
    for (request, field) in cases {
        let err = c.get_stats(request).await.expect_err(field);
        assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
    }
    // Defaults: the last 30 days, ending now.
    let s = c.get_stats(pb::GetStatsRequest::default()).await.expect("defaults").into_inner();
    let (start, end) = (s.start_time.expect("start").seconds, s.end_time.expect("end").seconds);
    assert_eq!(end - start, 30 * 86_400);
    assert!((end - now.unix_timestamp()).abs() < 60);
    assert_eq!(s.new_members.len(), 31, "a 30-day window not starting at midnight touches 31 days");
}

#[tokio::test]
async fn stats_need_the_admin_scope() {
    const ADMIN: &str = "admin-token-0123456789";
    const READER: &str = "read-token-0123456789";
    const SIGNUP: &str = "signup-token-0123456789";
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, dash:read:{}, web:signup:{}", hash(ADMIN), hash(READER), hash(SIGNUP));
    let app = TestApp::spawn_with(&["--caller-tokens", &tokens]).await;
    let mut c = app.client.clone();
    for token in [READER, SIGNUP] {
        let err = c.get_stats(bearer(pb::GetStatsRequest::default(), token)).await.expect_err("not admin");
        assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
    }
    let err = c.get_stats(pb::GetStatsRequest::default()).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    c.get_stats(bearer(pb::GetStatsRequest::default(), ADMIN)).await.expect("admin reads stats");
}
