use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redeemers_one_winner() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let calls = (0..50).map(|i| {
        let mut client = app.client.clone();
        let code = inv.code.clone();
        tokio::spawn(async move {
            client.redeem(pb::RedeemRequest { code, invitee_id: format!("user-{i}"), ..Default::default() }).await
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut winners = 0;
    for r in results {
        match r.expect("task") {
            Ok(_) => winners += 1,
            Err(status) => assert_error(&status, Code::FailedPrecondition, "ALREADY_REDEEMED", None),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(app.count("redemptions").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_invitee_racing_two_codes_joins_once() {
    let app = TestApp::spawn().await;
    let codes: Vec<String> = app.mint_for("alice", 10).await.into_iter().map(|i| i.code).collect();
    let calls = codes.iter().map(|code| {
        let mut client = app.client.clone();
        let code = code.clone();
        tokio::spawn(async move {
            client.redeem(pb::RedeemRequest { code, invitee_id: "eve".into(), ..Default::default() }).await
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut winners = 0;
    for r in results {
        match r.expect("task") {
            Ok(_) => winners += 1,
            Err(status) => assert_error(&status, Code::FailedPrecondition, "ALREADY_INVITED", None),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(app.count("redemptions").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_roots_redeeming_each_others_codes_do_not_make_a_cycle() {
    for _ in 0..5 {
        let app = TestApp::spawn().await;
        let from_a = app.mint_one("a").await;
        let from_b = app.mint_one("b").await;
        let (x, y) = tokio::join!(app.redeem(&from_a.code, "b"), app.redeem(&from_b.code, "a"));
        let ok = [x.is_ok(), y.is_ok()];
        assert_eq!(ok.iter().filter(|o| **o).count(), 1, "exactly one edge: {x:?} {y:?}");
        for r in [x, y] {
            if let Err(status) = r {
                assert_error(&status, Code::FailedPrecondition, "INVITE_CYCLE", None);
            }
        }
    }
}
