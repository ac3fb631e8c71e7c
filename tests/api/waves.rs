//! Waves (Mint by selector): each selector picks exactly the members it
//! describes (times fixed explicitly, in the database where the API has no
//! way to set them), dry runs mint nothing, a wave is one idempotent batch,
//! and a wave bigger than the insert chunk answers with counts, not a list.

use std::collections::{BTreeSet, HashMap};

use invitations::pb;
use invitations::pb::selector::Criterion;
use prost::Message;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::helpers::{TestApp, member};

const DAY: i64 = 86_400;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn days(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: n * DAY, nanos: 0 })
}

pub fn no_unspent() -> Criterion {
    Criterion::NoUnspentInvitation(pb::NoUnspentInvitation {})
}

fn never_issued(joined_days: i64) -> Criterion {
    Criterion::NeverIssued(pb::NeverIssued { joined_at_least: days(joined_days) })
}

fn last_redeemed(ago_days: i64) -> Criterion {
    Criterion::LastRedeemed(pb::LastRedeemed { at_least: days(ago_days) })
}

pub fn wave(criterion: Criterion, count: u32) -> pb::MintRequest {
    pb::MintRequest { selector: Some(pb::Selector { criterion: Some(criterion) }), count, ..Default::default() }
}

fn dry(criterion: Criterion, count: u32) -> pb::MintRequest {
    pb::MintRequest { dry_run: true, ..wave(criterion, count) }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The owners of a batch's invitations, each with how many it got.
async fn batch_owners(pool: &PgPool, batch_id: &str) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT inviter_id, count(*) FROM invitations WHERE batch_id = $1::uuid GROUP BY inviter_id")
            .bind(batch_id)
            .fetch_all(pool)
            .await
            .expect("batch owners");
    rows.into_iter().collect()
}

async fn sql(pool: &PgPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn disable(app: &TestApp, user: &str) {
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: user.into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
}

/// Members that match each selector and members that narrowly do not.
async fn universe(app: &TestApp, pool: &PgPool) {
    let t = now();
    let old = Some(t - 40 * DAY);
    app.register(vec![
        member("a", old, None),                       // never issued, joined 40 days ago
        member("b", Some(t - 30 * DAY + 3600), None), // never issued, joined an hour short of 30 days
        member("c", old, None),                       // its only invitation revoked
        member("d", old, None),                       // holds an unspent invitation
        member("e", old, None),                       // its invitation redeemed 31 days ago
        member("f", old, None),                       // redeemed 31 and 29 days ago
        member("g", old, None),                       // never issued, but disabled
        member("h", old, None),                       // redeemed 31 days ago, but disabled
        member("i", old, None),                       // its invitation expired
        member("j", old, None),                       // a two-use invitation used once, 31 days ago
    ])
    .await
    .expect("register");
    let c = app.mint_one("c").await;
    app.revoke(pb::RevokeRequest { invitation_ids: vec![c.id], ..Default::default() }).await.expect("revoke");
    app.mint_one("d").await;
    let e = app.mint_one("e").await;
    app.redeem(&e.code, "e_inv").await.expect("redeem");
    let f = app.mint_for("f", 2).await;
    app.redeem(&f[0].code, "f_inv1").await.expect("redeem");
    app.redeem(&f[1].code, "f_inv2").await.expect("redeem");
    let h = app.mint_one("h").await;
    app.redeem(&h.code, "h_inv").await.expect("redeem");
    let i = app
        .mint(pb::MintRequest {
            user_ids: vec!["i".into()],
            ttl: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            ..Default::default()
        })
        .await
        .expect("mint");
    sql(
        pool,
        &format!(
            "UPDATE invitations SET expire_time = now() - interval '1 second' WHERE id = '{}'",
            i.invitations[0].id
        ),
    )
    .await;
    let j = app
        .mint(pb::MintRequest { user_ids: vec!["j".into()], max_uses: 2, ..Default::default() })
        .await
        .expect("mint");
    app.redeem(&j.invitations[0].code, "j_inv").await.expect("redeem");
    for (invitee, ago) in [("e_inv", "31 days"), ("f_inv1", "31 days"), ("f_inv2", "29 days"), ("h_inv", "31 days")] {
        sql(
            pool,
            &format!("UPDATE redemptions SET redeem_time = now() - interval '{ago}' WHERE invitee_id = '{invitee}'"),
        )
        .await;
    }
    sql(pool, "UPDATE redemptions SET redeem_time = now() - interval '31 days' WHERE invitee_id = 'j_inv'").await;
    disable(app, "g").await;
    disable(app, "h").await;
}

#[tokio::test]
async fn each_selector_picks_exactly_the_matching_members() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    universe(&app, &pool).await;
    // Invitees joined now and were never issued one; e_inv .. j_inv have none unspent.
    let want_no_unspent = set(&["a", "b", "c", "e", "f", "i", "e_inv", "f_inv1", "f_inv2", "h_inv", "j_inv"]);
    let want_never_issued = set(&["a"]);
    let want_last_redeemed = set(&["e", "j"]);

    let invitations_before = app.count("invitations").await;
    let batches_before = app.count("batches").await;
    for (criterion, expected) in [
        (no_unspent(), &want_no_unspent),
        (never_issued(30), &want_never_issued),
        (last_redeemed(30), &want_last_redeemed),
    ] {
        let answer = app.mint(dry(criterion, 1000)).await.expect("dry run");
        assert!(answer.dry_run);
        assert_eq!(answer.matched_count as usize, expected.len(), "{criterion:?}");
        assert_eq!(answer.minted_count as usize, expected.len(), "{criterion:?}");
        let recipients: BTreeSet<String> = answer.recipient_ids.iter().cloned().collect();
        assert_eq!(&recipients, expected, "{criterion:?}");
        assert_eq!(recipients.len(), answer.recipient_ids.len(), "each member once");
        assert!(answer.batch_id.is_empty() && answer.invitations.is_empty());
    }
    // Zero ages: every invitee of a redemption, every member with a join time.
    let answer = app.mint(dry(last_redeemed(0), 1000)).await.expect("dry run");
    assert_eq!(answer.matched_count, 3, "e, f and j (h is disabled)");
    let answer = app.mint(dry(never_issued(0), 1000)).await.expect("dry run");
    assert_eq!(answer.matched_count, 7, "a, b and the five invitees");
    assert_eq!(app.count("invitations").await, invitations_before, "dry runs mint nothing");
    assert_eq!(app.count("batches").await, batches_before);

    // The real waves go to exactly those members, one invitation each.
    let first = app
        .mint(pb::MintRequest { label: "w1".into(), ..wave(never_issued(30), 1000) })
        .await
        .expect("never-issued wave");
    assert_eq!((first.matched_count, first.minted_count, first.invitations_truncated), (1, 1, false));
    assert_eq!(batch_owners(&pool, &first.batch_id).await, HashMap::from([("a".to_string(), 1)]));
    assert_eq!(first.invitations.len(), 1);
    assert_eq!(first.invitations[0].inviter_id, "a");
    assert_eq!(first.invitations[0].label, "w1");
    assert_eq!(first.recipient_ids, vec!["a"]);
    let second = app.mint(wave(last_redeemed(30), 1000)).await.expect("last-redeemed wave");
    let owners = batch_owners(&pool, &second.batch_id).await;
    assert_eq!(owners.keys().cloned().collect::<BTreeSet<_>>(), want_last_redeemed);
    assert!(owners.values().all(|&n| n == 1));
    // a and e now hold an unspent invitation (j already did).
    let third = app.mint(wave(no_unspent(), 1000)).await.expect("no-unspent wave");
    let mut expected = want_no_unspent.clone();
    expected.remove("a");
    expected.remove("e");
    let owners = batch_owners(&pool, &third.batch_id).await;
    assert_eq!(owners.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(third.matched_count as usize, expected.len());
    assert_eq!(third.invitations.len(), expected.len());
    // Nobody left without one: a wave that matches nobody mints nothing.
    let empty = app.mint(wave(no_unspent(), 10)).await.expect("empty wave");
    assert_eq!((empty.matched_count, empty.minted_count), (0, 0));
    assert!(empty.batch_id.is_empty());
    let invited: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE inviter_id IN ('g', 'h')")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(invited, 1, "disabled members got nothing (h kept only its old one)");
    pool.close().await;
}

#[tokio::test]
async fn a_wave_smaller_than_its_matches_draws_members_at_random_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    let members: Vec<_> = (0..20).map(|i| member(&format!("m{i:02}"), Some(now() - DAY), None)).collect();
    app.register(members).await.expect("register");

    // Dry runs draw afresh each time (20^-11 odds that twelve draws agree).
    let mut drawn = BTreeSet::new();
    for _ in 0..12 {
        let answer = app.mint(dry(no_unspent(), 1)).await.expect("dry run");
        assert_eq!((answer.matched_count, answer.minted_count, answer.recipient_ids.len()), (20, 1, 1));
        drawn.insert(answer.recipient_ids[0].clone());
    }
    assert!(drawn.len() > 1, "the draw is random: {drawn:?}");

    let request = pb::MintRequest { request_id: "wave-1".into(), label: "spring".into(), ..wave(no_unspent(), 5) };
    let first = app.mint(request.clone()).await.expect("wave");
    assert_eq!((first.matched_count, first.minted_count, first.invitations.len()), (20, 5, 5));
    let owners = batch_owners(&pool, &first.batch_id).await;
    assert_eq!(owners.len(), 5);
    assert!(owners.values().all(|&n| n == 1), "one each: {owners:?}");
    let recipients: BTreeSet<String> = first.recipient_ids.iter().cloned().collect();
    assert_eq!(recipients, owners.keys().cloned().collect());
    let label: String = sqlx::query_scalar("SELECT label FROM batches WHERE id = $1::uuid")
        .bind(&first.batch_id)
        .fetch_one(&pool)
        .await
        .expect("batch");
    assert_eq!(label, "spring");

    let replay = app.mint(request.clone()).await.expect("replay");
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec(), "the same request id replays the first answer");
    assert_eq!(app.count("invitations").await, 5);
    let reused = app.mint(pb::MintRequest { count: 6, ..request }).await.expect_err("another request, same id");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);

    // More asked than match: every remaining member gets one.
    let rest = app.mint(wave(no_unspent(), 100)).await.expect("wave");
    assert_eq!((rest.matched_count, rest.minted_count), (15, 15));
    let all: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT inviter_id) FROM invitations").fetch_one(&pool).await.expect("count");
    assert_eq!(all, 20);
    assert_eq!(app.count("invitations").await, 20);
    pool.close().await;
}

#[tokio::test]
async fn a_wave_larger_than_a_chunk_answers_with_counts_and_announces_every_invitation() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    const MEMBERS: usize = 25_000;
    for part in 0..(MEMBERS / 10_000 + 1) {
        let members: Vec<_> = (part * 10_000..((part + 1) * 10_000).min(MEMBERS))
            .map(|i| member(&format!("user-{i:05}"), Some(now() - DAY), None))
            .collect();
        app.register(members).await.expect("register");
    }
    let outbox_before = app.count("outbox").await;
    let answer = app.mint(wave(no_unspent(), 30_000)).await.expect("wave");
    assert_eq!(answer.matched_count as usize, MEMBERS);
    assert_eq!(answer.minted_count as usize, MEMBERS);
    assert!(answer.invitations_truncated);
    assert_eq!(answer.invitations.len(), 1_000, "only the first 1,000 are listed");
    assert_eq!(answer.recipient_ids.len(), 1_000);
    assert!(answer.invitations.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    assert!(answer.invitations.iter().all(|i| !i.code.is_empty() && i.batch_id == answer.batch_id));
    let (count, owners): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT inviter_id) FROM invitations WHERE batch_id = $1::uuid")
            .bind(&answer.batch_id)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!((count as usize, owners as usize), (MEMBERS, MEMBERS));
    let recorded: i32 = sqlx::query_scalar("SELECT invitation_count FROM batches WHERE id = $1::uuid")
        .bind(&answer.batch_id)
        .fetch_one(&pool)
        .await
        .expect("batch");
    assert_eq!(recorded as usize, MEMBERS);

    // Every invitation is announced once, with its owner, in minted events.
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY seq OFFSET $1")
        .bind(outbox_before)
        .fetch_all(&pool)
        .await
        .expect("outbox");
    let mut announced: HashMap<String, String> = HashMap::new();
    for bytes in payloads {
        let event = pb::InvitationEvent::decode(bytes.as_slice()).expect("an event");
        let Some(pb::invitation_event::Event::Minted(m)) = event.event else { panic!("only minted events") };
        assert_eq!(m.batch_id, answer.batch_id);
        for grant in m.grants {
            for id in grant.invitation_ids {
                assert!(announced.insert(id, grant.inviter_id.clone()).is_none(), "announced twice");
            }
        }
    }
    assert_eq!(announced.len(), MEMBERS);
    for inv in &answer.invitations {
        assert_eq!(announced.get(&inv.id), Some(&inv.inviter_id));
    }
    // A member's wave invitation is listed like any other.
    let listed = app
        .list(pb::ListForUserRequest { user_id: answer.recipient_ids[0].clone(), ..Default::default() })
        .await
        .expect("list");
    assert_eq!(listed.invitations.len(), 1);
    assert_eq!(listed.invitations[0].batch_id, answer.batch_id);
    pool.close().await;
}

#[tokio::test]
async fn a_wave_is_announced_in_minted_events_through_nats() {
    use crate::events::{WAIT, assert_unique, outbox_rows, relay_args, spawn, wait_relay};
    use tonic_health::pb::health_check_response::ServingStatus;

    let nats = crate::nats::NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let consumer = nats.consumer().await;
    let members: Vec<_> = (0..40).map(|i| member(&format!("n{i:02}"), Some(now() - DAY), None)).collect();
    app.register(members).await.expect("register");
    let answer = app.mint(pb::MintRequest { label: "nats-wave".into(), ..wave(no_unspent(), 30) }).await.expect("wave");
    assert_eq!(answer.minted_count, 30);

    let (rows, _) = outbox_rows(&app).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    assert_unique(&events);
    let mut announced: HashMap<String, String> = HashMap::new();
    for e in &events {
        let pb::invitation_event::Event::Minted(m) = e.payload() else { panic!("only minted events: {}", e.kind()) };
        assert_eq!((m.batch_id.as_str(), m.label.as_str()), (answer.batch_id.as_str(), "nats-wave"));
        for grant in &m.grants {
            for id in &grant.invitation_ids {
                assert!(announced.insert(id.clone(), grant.inviter_id.clone()).is_none(), "{id} twice");
            }
        }
    }
    let minted: HashMap<String, String> =
        answer.invitations.iter().map(|i| (i.id.clone(), i.inviter_id.clone())).collect();
    assert_eq!(announced, minted, "every invitation of the wave once, with its member");
}
