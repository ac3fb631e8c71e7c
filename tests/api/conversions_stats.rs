//! GetStats' conversions section against a constructed history: per label,
//! batch and day of minting, the rate, median time to convert and value,
//! within a limit; the leaderboard by conversions of a kind; rewards by
//! state.

use invitations::pb;

use crate::conversions::{converted, record_request};
use crate::helpers::{TestApp, member};

async fn stats(app: &TestApp, request: pb::GetStatsRequest) -> pb::ConversionStats {
    app.client.clone().get_stats(request).await.expect("stats").into_inner().conversions.expect("conversions")
}

fn group<'a>(groups: &'a [pb::ConversionGroup], key: &str, kind: &str) -> &'a pb::ConversionGroup {
    groups
        .iter()
        .find(|g| (g.label == key || g.batch_id == key) && g.kind == kind)
        .unwrap_or_else(|| panic!("no group {key}/{kind} in {groups:#?}"))
}

#[tokio::test]
async fn stats_count_conversions_per_group_with_rate_median_value_and_leaderboard() {
    let app = TestApp::spawn_with(&["--conversion-kinds", "activated,paid", "--reward-rule", "activated=1:1"]).await;
    let mint = |user: &str, n: u32, label: &str| pb::MintRequest {
        user_ids: vec![user.into()],
        per_user: n,
        label: label.into(),
        ..Default::default()
    };
    let a = app.mint(mint("alice", 4, "wave-a")).await.expect("mint");
    let b = app.mint(mint("bob", 2, "wave-b")).await.expect("mint");
    for (i, inv) in a.invitations.iter().enumerate() {
        app.redeem(&inv.code, &format!("a{i}")).await.expect("redeem");
    }
    for (i, inv) in b.invitations.iter().enumerate() {
        app.redeem(&inv.code, &format!("b{i}")).await.expect("redeem");
    }
    converted(&app, "a0", "activated").await;
    converted(&app, "a1", "activated").await;
    let paid = pb::RecordConversionRequest { value: Some(500), ..record_request("a0", "paid") };
    app.client.clone().record_conversion(paid).await.expect("paid");
    converted(&app, "b0", "activated").await;
    let voided = converted(&app, "b1", "activated").await;
    let void = pb::VoidConversionRequest { conversion_id: voided.id, reason: "refund".into(), ..Default::default() };
    app.client.clone().void_conversion(void).await.expect("void");
    app.register(vec![member("founder", Some(1_600_000_000), None)]).await.expect("register");
    converted(&app, "founder", "activated").await;
    // The history: a0 converted 2 h after redeeming, a1 4 h, b0 10 days.
    let pool = app.pool().await;
    for (user, hours) in [("a0", 2), ("a1", 4), ("b0", 240)] {
        sqlx::query("UPDATE conversions SET redeem_time = occur_time - make_interval(hours => $2) WHERE user_id = $1")
            .bind(user)
            .bind(hours)
            .execute(&pool)
            .await
            .expect("history");
    }
    pool.close().await;

    let s = stats(&app, pb::GetStatsRequest::default()).await;
    let act = group(&s.by_label, "wave-a", "activated");
    assert_eq!((act.redeemed, act.converted, act.conversion_rate), (4, 2, 0.5));
    assert_eq!(act.median_time_to_convert, Some(prost_types::Duration { seconds: 3 * 3600, nanos: 0 }));
    let paid = group(&s.by_label, "wave-a", "paid");
    assert_eq!((paid.converted, paid.value), (1, 500));
    let wave_b = group(&s.by_label, "wave-b", "activated");
    assert_eq!((wave_b.redeemed, wave_b.converted, wave_b.conversion_rate), (2, 1, 0.5), "the voided one not counted");
    assert_eq!(group(&s.by_batch, &a.batch_id, "activated").converted, 2);
    let day: i64 = s.by_day.iter().filter(|g| g.kind == "activated").map(|g| g.converted).sum();
    assert_eq!(day, 3);

    // Within 7 days of redeeming: b0 (10 days) no longer counts.
    let week = prost_types::Duration { seconds: 7 * 86_400, nanos: 0 };
    let s = stats(&app, pb::GetStatsRequest { converted_within: Some(week), ..Default::default() }).await;
    let wave_b = group(&s.by_label, "wave-b", "");
    assert_eq!((wave_b.redeemed, wave_b.converted), (2, 0));
    assert_eq!(group(&s.by_label, "wave-a", "activated").converted, 2);

    // Seed 1's "who referred the most active users".
    let request = pb::GetStatsRequest { conversion_kind: "activated".into(), ..Default::default() };
    let s = stats(&app, request).await;
    let top: Vec<(String, i64)> = s.top_converters.iter().map(|t| (t.inviter_id.clone(), t.conversions)).collect();
    assert_eq!(top, vec![("alice".to_owned(), 2), ("bob".to_owned(), 1)]);
    let request = pb::GetStatsRequest { conversion_kind: "paid".into(), ..Default::default() };
    let top = stats(&app, request).await.top_converters;
    assert_eq!((top.len(), top[0].conversions), (1, 1));

    let r = s.rewards.expect("rewards");
    assert_eq!((r.recorded, r.unattributed, r.granted, r.voided), (6, 1, 3, 1));
    assert_eq!(r.invitations_granted, 6);
    assert_eq!((r.pending, r.review, r.denied), (0, 0, 0));
}

#[tokio::test]
async fn the_leaderboard_counts_the_conversions_of_the_window_only() {
    let app = TestApp::spawn_with(&["--conversion-kinds", "activated"]).await;
    for (inviter, invitees) in [("alice", ["a0", "a1"]), ("bob", ["b0", "b1"])] {
        for (inv, invitee) in app.mint_for(inviter, 2).await.iter().zip(invitees) {
            app.redeem(&inv.code, invitee).await.expect("redeem");
            converted(&app, invitee, "activated").await;
        }
    }
    // Alice's two converted ten days ago, bob's one of his yesterday.
    let pool = app.pool().await;
    for (user, days) in [("a0", 10), ("a1", 10), ("b0", 1)] {
        sqlx::query("UPDATE conversions SET occur_time = now() - make_interval(days => $2) WHERE user_id = $1")
            .bind(user)
            .bind(days)
            .execute(&pool)
            .await
            .expect("history");
    }
    pool.close().await;
    let ago = |days: i64| prost_types::Timestamp {
        seconds: time::OffsetDateTime::now_utc().unix_timestamp() - days * 86_400,
        nanos: 0,
    };
    let top = |s: pb::ConversionStats| {
        s.top_converters.iter().map(|t| (t.inviter_id.clone(), t.conversions)).collect::<Vec<_>>()
    };
    // Seed 1's "in the last 7 days": only bob's two.
    let week = pb::GetStatsRequest { start_time: Some(ago(7)), ..Default::default() };
    assert_eq!(top(stats(&app, week).await), vec![("bob".to_owned(), 2)]);
    // The last 30 days (the default): alice's too.
    assert_eq!(
        top(stats(&app, pb::GetStatsRequest::default()).await),
        vec![("alice".to_owned(), 2), ("bob".to_owned(), 2)]
    );
    // A window that ends before bob's: alice's only.
    let before = pb::GetStatsRequest { start_time: Some(ago(20)), end_time: Some(ago(5)), ..Default::default() };
    assert_eq!(top(stats(&app, before).await), vec![("alice".to_owned(), 2)]);
    let one = pb::GetStatsRequest { leaderboard_size: 1, ..Default::default() };
    assert_eq!(top(stats(&app, one).await), vec![("alice".to_owned(), 2)], "ties by id, as long as asked");
}

#[tokio::test]
async fn conversions_per_batch_cover_the_same_newest_100_batches_as_by_batch() {
    let app = TestApp::spawn_with(&["--conversion-kinds", "activated"]).await;
    let oldest = app.mint_for("alice", 1).await.remove(0);
    app.redeem(&oldest.code, "a0").await.expect("redeem");
    converted(&app, "a0", "activated").await;
    for _ in 0..100 {
        app.mint_for("bob", 1).await;
    }
    let newest = app.mint_for("carol", 1).await.remove(0);
    app.redeem(&newest.code, "c0").await.expect("redeem");
    converted(&app, "c0", "activated").await;

    let response = app.client.clone().get_stats(pb::GetStatsRequest::default()).await.expect("stats").into_inner();
    assert!(response.batches_truncated);
    let shown: std::collections::HashSet<&str> = response.by_batch.iter().map(|b| b.batch_id.as_str()).collect();
    assert_eq!(shown.len(), 100);
    let s = response.conversions.expect("conversions");
    assert!(s.by_batch.iter().all(|g| shown.contains(g.batch_id.as_str())), "only the batches by_batch shows");
    assert_eq!(group(&s.by_batch, &newest.batch_id, "activated").converted, 1);
    assert!(!s.by_batch.iter().any(|g| g.batch_id == oldest.batch_id), "the 101st newest is left out");
    // The totals still count every batch of the window.
    let day: i64 = s.by_day.iter().map(|g| g.converted).sum();
    assert_eq!(day, 2);
}

#[tokio::test]
async fn plan_wave_plans_for_conversions_from_the_measured_conversion_yield() {
    use crate::admin_cli::{admin, stdout};
    let app = TestApp::spawn_with(&["--conversion-kinds", "activated"]).await;
    // 10 invitations minted 20 days ago, 5 redeemed (admin_cli::planner_history);
    // i1 and i2 convert a day after redeeming, i5 nine days after.
    crate::admin_cli::planner_history(&app).await;
    for user in ["i1", "i2", "i5"] {
        converted(&app, user, "activated").await;
    }
    let pool = app.pool().await;
    for (user, days) in [("i1", 1), ("i2", 1), ("i5", 9)] {
        sqlx::query("UPDATE conversions SET occur_time = redeem_time + make_interval(days => $2) WHERE user_id = $1")
            .bind(user)
            .bind(days)
            .execute(&pool)
            .await
            .expect("history");
    }
    pool.close().await;
    // yield = 2 / 10 = 0.2 converted members per invitation; 3 need 15.
    let plan = ["plan-wave", "--target-conversions", "3", "--kind", "activated", "--within", "7d"];
    let out = stdout(&admin(&app, None, &plan).await);
    for line in [
        "  minted:                       10\n",
        "  converted within 7d:          2\n",
        "  yield = 2 / 10 = 0.2000 converted members (activated) per invitation within 7d\n",
        "  invitations needed = ceil(3 / 0.2000) = 15\n",
        "Nothing minted: run again with --apply to mint this wave.\n",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    let out = stdout(&admin(&app, None, &[&plan[..], &["--output", "json"]].concat()).await);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((v["target_conversions"].as_u64(), v["invitations_needed"].as_u64()), (Some(3), Some(15)));
    assert_eq!(v["conversion_kind"], "activated");
}
