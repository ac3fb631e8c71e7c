//! The graph under concurrency: redeems into a subtree while Reparent moves
//! it, crossing moves and merges that would close a cycle. After each race
//! the stored paths and counters must agree with the inviter edges.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

fn move_to(user: &str, to: &str) -> pb::ReparentRequest {
    pb::ReparentRequest { user_id: user.into(), new_inviter_id: to.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeems_into_a_subtree_race_with_reparents_of_it() {
    let app = TestApp::spawn().await;
    // root-1 -> a -> b, and root-2; a's subtree moves between the roots.
    let a_code = app.mint_one("root-1").await.code;
    app.redeem(&a_code, "a").await.expect("a joins");
    let b_code = app.mint_one("a").await.code;
    app.redeem(&b_code, "b").await.expect("b joins");
    app.mint_one("root-2").await;
    let first: Vec<String> = app.mint_for("b", 60).await.into_iter().map(|i| i.code).collect();

    // Moves a's subtree back and forth until every join is done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let client = app.client.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut moves = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || moves % 2 == 1 {
                let to = if moves % 2 == 0 { "root-2" } else { "root-1" };
                client.clone().reparent(move_to("a", to)).await.expect("reparent");
                moves += 1;
            }
            moves
        })
    };
    let joins = first.into_iter().enumerate().map(|(i, code)| {
        let mut client = app.client.clone();
        tokio::spawn(async move {
            let invitee = format!("c{i}");
            let r = pb::RedeemRequest { code, invitee_id: invitee.clone(), ..Default::default() };
            client.redeem(r).await.expect("joins under b");
            // One level further down, under a member that only just joined.
            let minted = client
                .mint(pb::MintRequest { user_ids: vec![invitee], ..Default::default() })
                .await
                .expect("mint")
                .into_inner();
            let r = pb::RedeemRequest {
                code: minted.invitations[0].code.clone(),
                invitee_id: format!("d{i}"),
                ..Default::default()
            };
            client.redeem(r).await.expect("joins under c");
        })
    });
    let joins: Vec<_> = joins.collect();
    for task in joins {
        task.await.expect("task");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let moves = mover.await.expect("mover");
    assert!(moves >= 2, "the subtree moved while members joined ({moves} moves)");

    app.assert_graph_consistent().await;
    let g = app.graph(pb::GetInviteGraphRequest { user_id: "d7".into(), ..Default::default() }).await.expect("graph");
    let chain: Vec<_> = g.ancestors.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(chain, ["root-1", "a", "b", "c7"], "a ends under root-1 (an even number of moves)");
    let a = app.graph(pb::GetInviteGraphRequest { user_id: "a".into(), ..Default::default() }).await.expect("a");
    assert_eq!(a.member.expect("a").descendant_count, 121);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_moves_and_merges_never_close_a_cycle() {
    for round in 0..4 {
        let app = TestApp::spawn().await;
        // Two trees: x -> x1 and y -> y1.
        let x1 = app.mint_one("x").await.code;
        app.redeem(&x1, "x1").await.expect("x1");
        let y1 = app.mint_one("y").await.code;
        app.redeem(&y1, "y1").await.expect("y1");
        let outcomes = if round % 2 == 0 {
            // Two reparents, each putting one tree under the other.
            let (p, q) = tokio::join!(app.reparent(move_to("x", "y1")), app.reparent(move_to("y", "x1")));
            [p.map(|_| ()), q.map(|_| ())]
        } else {
            // A merge (x redeems y1's code) racing a reparent of y under x1.
            let code = app.mint_one("y1").await.code;
            let (p, q) = tokio::join!(app.redeem(&code, "x"), app.reparent(move_to("y", "x1")));
            [p.map(|_| ()), q.map(|_| ())]
        };
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: exactly one edge: {outcomes:?}");
        for o in outcomes {
            if let Err(status) = o {
                assert_error(&status, Code::FailedPrecondition, "INVITE_CYCLE", None);
            }
        }
        app.assert_graph_consistent().await;
    }
}

/// Waits until `n` backends of the test database wait for a lock.
async fn wait_for_lock_waiters(app: &TestApp, n: i64) {
    let pool = app.pool().await;
    crate::helpers::wait_until(
        std::time::Duration::from_secs(10),
        &format!("{n} calls waiting for a lock"),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("pg_stat_activity");
            waiting >= n
        },
    )
    .await;
    pool.close().await;
}

/// The interleaving that would leave a stale path without the tree locks:
/// a redeem has read its inviter's path and is held up (here: on the
/// invitation's row, which the test locks) when a Reparent moves the
/// inviter's subtree. The move must wait for the redeem and then move the
/// new member too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redeem_in_flight_under_a_moving_subtree_keeps_its_path() {
    let app = TestApp::spawn().await;
    let a = app.mint_one("root-1").await.code;
    app.redeem(&a, "a").await.expect("a joins");
    let c = app.mint_one("a").await.code;
    app.redeem(&c, "c").await.expect("c joins");
    app.mint_one("root-2").await;
    let for_d = app.mint_one("c").await;

    let pool = app.pool().await;
    let mut hold = pool.begin().await.expect("begin");
    let id = uuid::Uuid::parse_str(&for_d.id).expect("uuid");
    sqlx::query("SELECT 1 FROM invitations WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *hold).await.expect("lock");

    let redeem = {
        let mut client = app.client.clone();
        let code = for_d.code.clone();
        tokio::spawn(async move {
            client.redeem(pb::RedeemRequest { code, invitee_id: "d".into(), ..Default::default() }).await
        })
    };
    wait_for_lock_waiters(&app, 1).await;
    let reparent = {
        let mut client = app.client.clone();
        tokio::spawn(async move { client.reparent(move_to("a", "root-2")).await })
    };
    wait_for_lock_waiters(&app, 2).await;
    hold.commit().await.expect("release the invitation");
    redeem.await.expect("task").expect("d joins");
    let moved = reparent.await.expect("task").expect("a moves").into_inner();
    assert_eq!(moved.moved_count, 3, "a, c and the new d");

    app.assert_graph_consistent().await;
    let g = app.graph(pb::GetInviteGraphRequest { user_id: "d".into(), ..Default::default() }).await.expect("graph");
    let chain: Vec<_> = g.ancestors.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(chain, ["root-2", "a", "c"]);
    pool.close().await;
}
