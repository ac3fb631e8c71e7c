//! EraseMember: the member's user id is replaced by a tombstone everywhere
//! (a `pg_dump` of the test database finds it only in the pending `erased`
//! event), the graph keeps its shape and counts, erasing again answers the
//! same, an unknown member is NOT_FOUND, and erasure racing redeems of the
//! member's codes and a reparent of its subtree leaves no row naming it.

use std::process::Command;

use invitations::pb;
use tonic::Code;

use crate::conversions::{KINDS, converted};
use crate::helpers::{TestApp, assert_error};
use crate::reservations::{complete, reserve, reserve_req};

pub async fn erase(app: &TestApp, user: &str) -> Result<pb::EraseMemberResponse, tonic::Status> {
    let request = pb::EraseMemberRequest { user_id: user.into(), reason: "ticket 42".into(), ..Default::default() };
    app.client.clone().erase_member(request).await.map(tonic::Response::into_inner)
}

/// The data-only dump of the test database, one INSERT per row.
fn dump(app: &TestApp) -> String {
    let out = Command::new("pg_dump")
        .args(["--data-only", "--inserts", "--dbname", &app.db.url])
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 dump")
}

/// The dump's lines that name `user` as text or inside a bytea (hex).
fn lines_naming<'a>(dump: &'a str, user: &str) -> Vec<&'a str> {
    let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
    dump.lines().filter(|l| l.contains(user) || l.contains(&hex)).collect()
}

async fn graph(app: &TestApp, user: &str) -> pb::GetInviteGraphResponse {
    app.graph(pb::GetInviteGraphRequest { user_id: user.into(), ..Default::default() }).await.expect("graph")
}

fn shape(g: &pb::GetInviteGraphResponse) -> Vec<(String, u64, u64)> {
    g.ancestors
        .iter()
        .chain(g.member.iter())
        .map(|m| (m.inviter_id.clone(), m.direct_invitee_count, m.descendant_count))
        .collect()
}

#[tokio::test]
async fn erasing_an_inviter_in_the_middle_of_a_chain_keeps_the_graph_and_leaves_no_row_naming_it() {
    let app = TestApp::spawn_with(&KINDS).await;
    let alice = "alice-q7x3";
    // root -> alice -> bob -> carol, alice joining through a reservation
    // from an IP, with privileges set, a conversion, a reparent record and
    // a pending reservation of one of her own codes.
    let root_inv = app.mint_one("root").await;
    let held = reserve(&app, reserve_req(&root_inv.code)).await.expect("reserve");
    complete(&app, &held.id, alice).await.expect("alice joins");
    let mine = app.mint_for(alice, 3).await;
    app.redeem_req(pb::RedeemRequest {
        code: mine[0].code.clone(),
        invitee_id: "bob".into(),
        client_ip: "203.0.113.7".into(),
        ..Default::default()
    })
    .await
    .expect("bob joins");
    let bobs = app.mint_one("bob").await;
    app.redeem(&bobs.code, "carol").await.expect("carol joins");
    reserve(&app, reserve_req(&mine[1].code)).await.expect("a pending reservation of alice's code");
    converted(&app, alice, "activated").await;
    converted(&app, "bob", "activated").await;
    let privileges = pb::SetInvitePrivilegesRequest {
        user_id: alice.into(),
        enabled: true,
        reason: format!("{alice} is trusted"),
        ..Default::default()
    };
    app.privileges(privileges).await.expect("privileges");
    app.reparent(pb::ReparentRequest { user_id: "dave".into(), ..Default::default() }).await.ok();
    // Half the events were sent already (the relay is off in this test).
    let pool = app.pool().await;
    sqlx::query("UPDATE outbox SET sent_time = now() WHERE seq % 2 = 0").execute(&pool).await.expect("mark sent");
    let before = (shape(&graph(&app, "carol").await), graph(&app, "root").await.member.expect("root").descendant_count);
    assert!(!lines_naming(&dump(&app), alice).is_empty(), "the dump finds the member before");

    let erased = erase(&app, alice).await.expect("erase");
    assert!(erased.changed);
    assert!(erased.tombstone.starts_with("erased:"), "{}", erased.tombstone);
    assert_eq!(erased.revoked_count, 2, "the two unspent invitations");

    // The graph: same shape and counts, the tombstone in alice's place, hidden.
    let g = graph(&app, "carol").await;
    let after = (shape(&g), graph(&app, "root").await.member.expect("root").descendant_count);
    let rename = |s: &str| if s == alice { erased.tombstone.clone() } else { s.to_owned() };
    let want: Vec<_> = before.0.iter().map(|(i, d, n)| (rename(i), *d, *n)).collect();
    assert_eq!((after.0.clone(), after.1), (want, before.1));
    let node = g.ancestors.iter().find(|m| m.user_id == erased.tombstone).expect("the tombstone is bob's inviter");
    assert!(node.hidden);
    assert_error(
        &app.graph(pb::GetInviteGraphRequest { user_id: alice.into(), ..Default::default() }).await.expect_err("gone"),
        Code::NotFound,
        "NOT_FOUND",
        Some("user_id"),
    );

    // The dump names alice only in the one pending `erased` event.
    let dump = dump(&app);
    let naming = lines_naming(&dump, alice);
    assert_eq!(naming.len(), 1, "{naming:#?}");
    assert!(naming[0].starts_with("INSERT INTO public.outbox_") && naming[0].contains("'erased'"), "{}", naming[0]);
    assert!(naming[0].contains(", NULL);"), "the erased event is pending: {}", naming[0]);
    let revoked: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE revoke_reason = 'erased'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(revoked, 2);
    let ips: Vec<String> =
        sqlx::query_scalar("SELECT invitee_id FROM redemption_ips").fetch_all(&pool).await.expect("ips");
    assert_eq!(ips, ["bob"], "bob's IP record stays");
}

#[tokio::test]
async fn erasing_twice_answers_the_same_and_an_unknown_member_is_not_found() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("root").await;
    let redeem = pb::RedeemRequest {
        code: inv.code.clone(),
        invitee_id: "erin".into(),
        client_ip: "198.51.100.9".into(),
        ..Default::default()
    };
    app.redeem_req(redeem).await.expect("erin joins");
    assert_eq!(app.count("redemption_ips").await, 1);
    let first = erase(&app, "erin").await.expect("erase");
    let again = erase(&app, "erin").await.expect("erase again");
    assert_eq!((again.tombstone.as_str(), again.changed, again.revoked_count), (first.tombstone.as_str(), false, 0));
    assert_eq!(app.count("erasures").await, 1);
    assert_eq!(app.count("redemption_ips").await, 0, "its IP hash is deleted");
    let events = app.count("outbox").await;
    assert_error(&erase(&app, "nobody").await.expect_err("unknown"), Code::NotFound, "NOT_FOUND", Some("user_id"));
    let blank = pb::EraseMemberRequest { user_id: "x".into(), ..Default::default() };
    let err = app.client.clone().erase_member(blank).await.expect_err("no reason");
    assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some("reason"));
    assert_eq!(app.count("outbox").await, events, "refusals change nothing");
}
