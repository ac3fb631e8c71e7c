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
    let rewards = ["--reward-rule", "activated=1:1", "--reward-hold", "1h"];
    let app = TestApp::spawn_with(&[&KINDS[..], &rewards[..]].concat()).await;
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
    let bobs_conversion = converted(&app, "bob", "activated").await;
    let pending = bobs_conversion.reward.as_ref().expect("reward").state;
    assert_eq!(pending, pb::conversion_reward::State::Pending as i32, "alice's reward is held");
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
    let held_for: Option<String> = sqlx::query_scalar("SELECT inviter_id FROM conversions WHERE user_id = 'bob'")
        .fetch_one(&pool)
        .await
        .expect("bob's conversion");
    assert_eq!(held_for.as_deref(), Some(erased.tombstone.as_str()), "the held reward goes to the tombstone");
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

#[tokio::test]
async fn erasing_during_redeems_of_its_codes_and_a_reparent_of_its_subtree_leaves_no_row_naming_it() {
    let app = TestApp::spawn().await;
    let alice = "alice-r4c9";
    let root_inv = app.mint_one("root").await;
    app.redeem(&root_inv.code, alice).await.expect("alice joins");
    let other = app.mint_one("root").await;
    app.redeem(&other.code, "zed").await.expect("zed joins");
    let first = app.mint_one(alice).await;
    app.redeem(&first.code, "bob").await.expect("bob joins");
    let codes = app.mint_for(alice, 20).await;

    let mut tasks = Vec::new();
    for (i, inv) in codes.iter().enumerate() {
        let (app_client, code) = (app.client.clone(), inv.code.clone());
        tasks.push(tokio::spawn(async move {
            let request = pb::RedeemRequest { code, invitee_id: format!("invitee-{i}"), ..Default::default() };
            app_client.clone().redeem(request).await.map(|_| ())
        }));
    }
    let client = app.client.clone();
    let reparent = tokio::spawn(async move {
        let request = pb::ReparentRequest { user_id: "bob".into(), new_inviter_id: "zed".into(), ..Default::default() };
        client.clone().reparent(request).await.map(|_| ())
    });
    let erased = erase(&app, alice).await.expect("erase");
    let mut joined = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => joined += 1,
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::NotFound),
                "a redeem refused after the erasure: {status:?}"
            ),
        }
    }
    reparent.await.expect("task").expect("the reparent succeeds before or after the erasure");

    // No lost edge: every invitee that joined hangs under the tombstone.
    let pool = app.pool().await;
    let under: i64 =
        sqlx::query_scalar("SELECT count(*) FROM members WHERE inviter_id = $1 AND user_id LIKE 'invitee-%'")
            .bind(&erased.tombstone)
            .fetch_one(&pool)
            .await
            .expect("count");
    let redemptions: i64 = sqlx::query_scalar("SELECT count(*) FROM redemptions WHERE inviter_id = $1")
        .bind(&erased.tombstone)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!((under, redemptions), (joined, joined + 1), "bob's redemption too");
    let bob = graph(&app, "bob").await.member.expect("bob");
    assert_eq!(bob.inviter_id, "zed");
    let root = graph(&app, "root").await.member.expect("root");
    assert_eq!(root.descendant_count as i64, 3 + joined, "alice, zed, bob and the invitees");

    let dump = dump(&app);
    let naming = lines_naming(&dump, alice);
    assert_eq!(naming.len(), 1, "{naming:#?}");
    assert!(naming[0].contains("'erased'"), "{}", naming[0]);
}

#[tokio::test]
async fn the_erased_event_goes_through_nats_with_the_old_id_and_the_tombstone() {
    use crate::events::{WAIT, assert_unique, outbox_rows, relay_args, spawn, wait_relay};
    use pb::invitation_event::Event as Payload;
    use tonic_health::pb::health_check_response::ServingStatus;

    let nats = crate::nats::NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let consumer = nats.consumer().await;
    let inv = app.mint_one("root").await;
    app.redeem(&inv.code, "frank").await.expect("frank joins");
    app.mint_for("frank", 2).await;
    let erased = erase(&app, "frank").await.expect("erase");

    let (rows, _) = outbox_rows(&app).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    assert_unique(&events);
    let erased_events: Vec<_> = events.iter().filter(|e| e.kind() == "erased").collect();
    assert_eq!(erased_events.len(), 1);
    assert!(erased_events[0].subject.ends_with(".erased"), "{}", erased_events[0].subject);
    let want = pb::Erased { user_id: "frank".into(), tombstone: erased.tombstone.clone() };
    assert_eq!(erased_events[0].payload(), &Payload::Erased(want));
    let revoked: Vec<_> = events
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::Revoked(r) if r.reason == "erased" => Some(r.invitations.len()),
            _ => None,
        })
        .collect();
    assert_eq!(revoked.iter().sum::<usize>(), 2, "its two unspent invitations, revoked");
    // Once delivered, the erased event leaves the outbox: no row names frank.
    assert_no_row_comes_to_name(&app, "frank").await;
    assert_eq!(rows_of(&app, "erased").await, 0);
}

/// Waits (up to the events' deadline) until no row of the dump names
/// `user`, and fails showing the rows that still do.
async fn assert_no_row_comes_to_name(app: &TestApp, user: &str) {
    let deadline = tokio::time::Instant::now() + crate::events::WAIT;
    loop {
        let dump = dump(app);
        let naming = lines_naming(&dump, user);
        if naming.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "rows still naming {user}: {naming:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn erasing_while_the_relay_sends_the_members_events_leaves_no_row_naming_it() {
    use crate::events::{relay_args, spawn, wait_relay};
    use tonic_health::pb::health_check_response::ServingStatus;

    // The relay marks rows sent while the erasure decides which rows naming
    // the member are sent (deleted) and which pending (re-encoded): a row
    // that changed state between the two was once left naming the member.
    let nats = crate::nats::NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let root = app.mint_for("root", 6).await;
    for (i, inv) in root.iter().enumerate() {
        let member = format!("zed-{i}");
        app.redeem(&inv.code, &member).await.expect("joins");
        // Twenty events naming the member, the relay sending them while
        // the erasure runs.
        let mints = (0..20).map(|_| app.mint_for(&member, 1));
        futures::future::join_all(mints).await;
        erase(&app, &member).await.expect("erase");
    }
    for i in 0..root.len() {
        assert_no_row_comes_to_name(&app, &format!("zed-{i}")).await;
    }
}

async fn rows_of(app: &TestApp, event_type: &str) -> i64 {
    let pool = app.pool().await;
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn erasing_an_invitee_drops_the_stored_answers_that_name_it_and_keeps_the_others() {
    let app = TestApp::spawn().await;
    let minted = app
        .mint(pb::MintRequest {
            user_ids: vec!["root".into()],
            per_user: 2,
            request_id: "mint-1".into(),
            ..Default::default()
        })
        .await
        .expect("mint");
    let redeem = |code: &str, invitee: &str, id: &str| pb::RedeemRequest {
        code: code.into(),
        invitee_id: invitee.into(),
        request_id: id.into(),
        ..Default::default()
    };
    app.redeem_req(redeem(&minted.invitations[0].code, "gina-5k", "r-1")).await.expect("gina joins");
    app.redeem_req(redeem(&minted.invitations[1].code, "hal", "r-2")).await.expect("hal joins");
    assert_eq!(app.count("idempotency_keys").await, 3);

    let erased = erase(&app, "gina-5k").await.expect("erase");
    assert_eq!(erased.revoked_count, 0, "an invitee without invitations");
    let pool = app.pool().await;
    let kept: Vec<String> = sqlx::query_scalar("SELECT request_id FROM idempotency_keys ORDER BY request_id")
        .fetch_all(&pool)
        .await
        .expect("keys");
    assert_eq!(kept, ["mint-1", "r-2"], "only gina's Redeem answer named her");
    let root = graph(&app, "root").await;
    let invitees: Vec<&str> = root.descendants.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(invitees.len(), 2);
    assert!(invitees.contains(&erased.tombstone.as_str()) && invitees.contains(&"hal"), "{invitees:?}");
    let dump = dump(&app);
    let naming = lines_naming(&dump, "gina-5k");
    assert_eq!(naming.len(), 1, "{naming:#?}");
    assert!(naming[0].contains("'erased'"), "{}", naming[0]);
}

#[tokio::test]
async fn the_cli_erases_a_member_and_says_so_again_the_second_time() {
    use crate::admin_cli::{ADMIN, admin, secured, stdout};

    let app = secured(&[]).await;
    let pool = app.pool().await;
    stdout(&admin(&app, Some(ADMIN), &["mint", "--user", "ivy"]).await);
    let exists: i64 =
        sqlx::query_scalar("SELECT count(*) FROM members WHERE user_id = 'ivy'").fetch_one(&pool).await.expect("count");
    assert_eq!(exists, 1);
    let args = ["erase", "--user", "ivy", "--reason", "GDPR ticket 7"];
    let first = stdout(&admin(&app, Some(ADMIN), &args).await);
    assert!(first.starts_with("erased: now erased:") && first.contains("(1 unspent"), "{first}");
    let again = stdout(&admin(&app, Some(ADMIN), &args).await);
    let tombstone = first.split_whitespace().nth(2).expect("the tombstone");
    assert_eq!(again, format!("already erased: now {tombstone} (0 unspent invitations revoked)\n"));
    let revoked_by: String =
        sqlx::query_scalar("SELECT revoked_by FROM invitations").fetch_one(&pool).await.expect("row");
    assert_eq!(revoked_by, "ops", "the authenticated caller");
}

#[tokio::test]
async fn erasing_a_member_admitted_from_the_waitlist_forgets_its_entry_and_binding() {
    use crate::waitlist::{admit, admit_request};

    let app = TestApp::spawn().await;
    let inv = app.mint_one("root").await;
    app.redeem(&inv.code, "rita").await.expect("rita joins");
    let join = pb::JoinWaitlistRequest {
        applicant_id: "wes-2n8".into(),
        referrer: "rita".into(),
        client_ip: "192.0.2.44".into(),
        ..Default::default()
    };
    app.client.clone().join_waitlist(join).await.expect("join");
    let wave = admit(&app, admit_request(1)).await;
    let invitation = wave.entries[0].invitation.clone().expect("admitted");
    app.redeem(&invitation.code, "wes-2n8").await.expect("wes joins");
    let pool = app.pool().await;
    let bound_before: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM invitations WHERE binding_digest IS NOT NULL), \
                (SELECT count(*) FROM waitlist_entries WHERE ip_hash IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!(bound_before, (1, 1), "bound to the applicant, its IP prefix digested");

    let erased = erase(&app, "wes-2n8").await.expect("erase");
    let (applicant, ip): (String, Option<Vec<u8>>) =
        sqlx::query_as("SELECT applicant_id, ip_hash FROM waitlist_entries").fetch_one(&pool).await.expect("entry");
    assert_eq!((applicant, ip), (erased.tombstone.clone(), None));
    let bound: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE binding_digest IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(bound, 0, "the applicant binding's digest is dropped");
    let dump = dump(&app);
    let naming = lines_naming(&dump, "wes-2n8");
    assert_eq!(naming.len(), 1, "{naming:#?}");
    assert!(naming[0].contains("'erased'"), "{}", naming[0]);
}

#[tokio::test]
async fn erasing_during_waves_that_pick_the_member_leaves_no_row_naming_it() {
    use crate::waves::{no_unspent, wave};

    let app = TestApp::spawn().await;
    let inv = app.mint_one("root").await;
    app.redeem(&inv.code, "walt-9m").await.expect("walt joins");
    let mut waves = Vec::new();
    for _ in 0..4 {
        let client = app.client.clone();
        waves.push(tokio::spawn(async move { client.clone().mint(wave(no_unspent(), 10)).await.map(|_| ()) }));
    }
    let erased = erase(&app, "walt-9m").await.expect("erase");
    for task in waves {
        // A wave that drew the member before the erasure and inserted after
        // draws again (the tombstone is a member like any other).
        task.await.expect("task").expect("every wave succeeds, before or after the erasure");
    }
    let dump = dump(&app);
    let naming = lines_naming(&dump, "walt-9m");
    assert_eq!(naming.len(), 1, "{naming:#?}");
    assert!(naming[0].contains("'erased'"), "{}", naming[0]);
    assert!(erased.changed);
}

fn join_request(applicant: &str) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        applicant_id: applicant.into(),
        reason: format!("{applicant} runs a chess club"),
        client_ip: "203.0.113.44".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn erasing_an_applicant_who_never_joined_forgets_its_entry_and_revokes_its_admission() {
    let app = TestApp::spawn().await;
    let (ann, bea) = ("ann-k2p8", "bea-w5m1");
    app.client.clone().join_waitlist(join_request(ann)).await.expect("ann joins the waitlist");
    let admitted = crate::waitlist::admit(&app, crate::waitlist::admit_request(1)).await;
    let code = admitted.entries[0].invitation.as_ref().expect("admitted with an invitation").code.clone();
    let beas = app.client.clone().join_waitlist(join_request(bea)).await.expect("bea joins").into_inner();
    let bea_entry = beas.entry.expect("entry").id;

    let first = erase(&app, ann).await.expect("erase ann");
    assert_eq!((first.changed, first.revoked_count), (true, 1), "the invitation she was admitted with");
    assert!(!app.check(&code).await.redeemable);
    let second = erase(&app, bea).await.expect("erase bea");
    assert_eq!((second.changed, second.revoked_count), (true, 0));
    let again = erase(&app, ann).await.expect("again");
    assert_eq!((again.tombstone.as_str(), again.changed), (first.tombstone.as_str(), false));

    // Bea is out of the line; her entry stays, under the tombstone.
    let by_id = pb::GetWaitlistEntryRequest { entry_id: bea_entry, ..Default::default() };
    let entry = app.client.clone().get_waitlist_entry(by_id).await.expect("entry").into_inner().entry.expect("entry");
    assert_eq!((entry.applicant_id.as_str(), entry.state), (second.tombstone.as_str(), 3), "rejected");
    let err = crate::waitlist::entry(&app, bea).await.expect_err("no entry under her id");
    assert_error(&err, Code::NotFound, "NOT_FOUND", None);

    let dump = dump(&app);
    for who in [ann, bea] {
        let naming = lines_naming(&dump, who);
        assert_eq!(naming.len(), 1, "{naming:#?}");
        assert!(naming[0].contains("'erased'") && naming[0].ends_with(", NULL);"), "pending: {}", naming[0]);
    }
    assert!(!dump.contains("chess club"), "their answers are deleted");
}

#[tokio::test]
async fn erasing_applicants_while_they_redeem_their_admission_leaves_no_row_naming_them() {
    let app = TestApp::spawn().await;
    let applicants: Vec<String> = (0..8).map(|i| format!("applicant-{i}-q9z")).collect();
    for a in &applicants {
        app.client.clone().join_waitlist(join_request(a)).await.expect("join");
    }
    let admitted = crate::waitlist::admit(&app, crate::waitlist::admit_request(8)).await;
    let mut tasks = Vec::new();
    for e in &admitted.entries {
        let code = e.invitation.as_ref().expect("invitation").code.clone();
        let (client, who) = (app.client.clone(), e.applicant_id.clone());
        let redeem = tokio::spawn(async move {
            let request = pb::RedeemRequest { code, invitee_id: who, ..Default::default() };
            client.clone().redeem(request).await.map(|_| ())
        });
        let (client, who) = (app.client.clone(), e.applicant_id.clone());
        let erasure = tokio::spawn(async move {
            let request = pb::EraseMemberRequest { user_id: who, reason: "asked".into(), ..Default::default() };
            client.clone().erase_member(request).await.map(tonic::Response::into_inner)
        });
        tasks.push((redeem, erasure));
    }
    let pool = app.pool().await;
    for (redeem, erasure) in tasks {
        let erased = erasure.await.expect("task").expect("the erasure succeeds either way");
        match redeem.await.expect("task") {
            // Joined first: erased as the member it became.
            Ok(()) => {
                let member: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE user_id = $1")
                    .bind(&erased.tombstone)
                    .fetch_one(&pool)
                    .await
                    .expect("count");
                assert_eq!(member, 1, "the member is the tombstone");
            }
            Err(status) => assert!(
                matches!(status.code(), Code::FailedPrecondition | Code::NotFound),
                "a redeem refused after the erasure: {status:?}"
            ),
        }
    }
    let dump = dump(&app);
    for a in &applicants {
        let naming = lines_naming(&dump, a);
        assert!(naming.iter().all(|l| l.contains("'erased'")), "{naming:#?}");
        assert_eq!(naming.len(), 1, "{a}: {naming:#?}");
    }
}
