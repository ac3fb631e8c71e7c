//! Notifications end to end: the real server writes events through its
//! outbox, its relay publishes them to a real `nats-server -js`, and a real
//! JetStream consumer reads them back.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Options, TestApp, wait_until};
use crate::metrics::Scrape;
use crate::nats::{NatsServer, Received};

pub const WAIT: Duration = Duration::from_secs(30);

/// Relay settings that keep tests quick: short retries and timeouts.
pub fn relay_args(nats: &NatsServer) -> Vec<String> {
    [
        "--nats-url",
        &nats.url(),
        "--outbox-max-backoff",
        "200ms",
        "--nats-publish-timeout",
        "1s",
        "--outbox-stats-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub async fn spawn(args: Vec<String>, database_url: Option<String>) -> TestApp {
    TestApp::spawn_opts(Options { extra_args: args, database_url }).await
}

pub async fn relay_status(app: &TestApp) -> Option<ServingStatus> {
    app.health_status("outbox-relay").await.ok()
}

pub async fn wait_relay(app: &TestApp, want: ServingStatus) {
    wait_until(WAIT, &format!("the relay to report {want:?}"), || async { relay_status(app).await == Some(want) })
        .await;
}

/// Rows in the outbox, and how many are pending.
pub async fn outbox_rows(app: &TestApp) -> (i64, i64) {
    let pool = app.pool().await;
    let counts = sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE sent_time IS NULL) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count outbox rows");
    pool.close().await;
    counts
}

/// Each event id at most once on the stream, and the ce-id header agrees.
pub fn assert_unique(events: &[Received]) {
    let mut seen = HashSet::new();
    for e in events {
        assert_eq!(e.header("ce-id"), e.event.id);
        assert!(seen.insert(e.event.id.clone()), "event {} delivered twice", e.event.id);
    }
}

/// (invitation id, inviter) of every grant of every minted event.
fn minted_ids(events: &[Received]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for e in events {
        if let Payload::Minted(m) = e.payload() {
            for g in &m.grants {
                for id in &g.invitation_ids {
                    assert!(out.insert(id.clone(), g.inviter_id.clone()).is_none(), "{id} minted twice");
                }
            }
        }
    }
    out
}

fn position(events: &[Received], pred: impl Fn(&Received) -> bool) -> usize {
    events.iter().position(pred).expect("the event is there")
}

#[tokio::test]
async fn consumer_receives_exactly_the_committed_changes_with_headers_and_payloads() {
    let nats = NatsServer::start().await;
    // No polling to speak of: only the commits' NOTIFY can wake the relay.
    let mut args = relay_args(&nats);
    args.extend(["--outbox-poll-interval", "1h"].map(String::from));
    let app = spawn(args, None).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let consumer = nats.consumer().await;

    let owned = app.mint_for("ayo", 2).await;
    let unowned = app
        .mint(pb::MintRequest { unowned_count: 1, max_uses: 2, label: "launch".into(), ..Default::default() })
        .await
        .expect("mint unowned")
        .invitations
        .remove(0);
    app.redeem(&owned[0].code, "bo").await.expect("redeem");
    app.redeem(&owned[0].code, "bo").await.expect("a retry changes nothing");
    app.redeem(&owned[0].code, "cy").await.expect_err("spent: refused, changes nothing");
    app.revoke(pb::RevokeRequest {
        invitation_ids: vec![owned[1].id.clone()],
        reason: "leak".into(),
        ..Default::default()
    })
    .await
    .expect("revoke");
    app.revoke(pb::RevokeRequest { invitation_ids: vec![owned[1].id.clone()], ..Default::default() })
        .await
        .expect("revoking again changes nothing");
    let mut client = app.client.clone();
    let reserve = |request_id: &str| pb::ReserveRequest {
        code: unowned.code.clone(),
        request_id: request_id.into(),
        ..Default::default()
    };
    let first = client.reserve(reserve("r1")).await.expect("reserve").into_inner().reservation.expect("reservation");
    client.release(pb::ReleaseRequest { reservation_id: first.id.clone() }).await.expect("release");
    let second = client.reserve(reserve("r2")).await.expect("reserve").into_inner().reservation.expect("reservation");
    app.redeem_req(pb::RedeemRequest {
        reservation_id: second.id.clone(),
        invitee_id: "dee".into(),
        ..Default::default()
    })
    .await
    .expect("complete the reservation");

    // minted ×1-2 (ayo's and the unowned batch may share a partition), then
    // redeemed, revoked, reserved, released, reserved, redeemed, completed.
    let (rows, _) = outbox_rows(&app).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&app).await.1 == 0 }).await;
    assert_eq!(consumer.stored().await, rows as u64, "nothing more than the outbox holds");
    assert_unique(&events);
    assert!(events.windows(2).all(|w| w[0].stream_seq < w[1].stream_seq), "read in stream order");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).filter(|k| *k != "minted").collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "redeemed",
            "redeemed",
            "reservation.completed",
            "reservation.released",
            "reservation.reserved",
            "reservation.reserved",
            "revoked"
        ],
        "{kinds:?}"
    );

    let minted = minted_ids(&events);
    let expected: HashMap<String, String> = [
        (owned[0].id.clone(), "ayo".to_owned()),
        (owned[1].id.clone(), "ayo".to_owned()),
        (unowned.id.clone(), String::new()),
    ]
    .into();
    assert_eq!(minted, expected);

    let mut seen_codes = vec![];
    for e in &events {
        assert_eq!(e.subject, format!("invitations.v1.{}", e.kind()));
        assert_eq!(e.header("ce-specversion"), "1.0");
        assert_eq!(e.header("Nats-Msg-Id"), e.event.id);
        assert_eq!(e.header("ce-source"), "invitations");
        assert_eq!(e.header("content-type"), "application/protobuf");
        let ce_time = OffsetDateTime::parse(e.header("ce-time"), &Rfc3339).expect("ce-time is RFC 3339");
        let payload_time = e.event.time.expect("time");
        assert_eq!(ce_time.unix_timestamp(), payload_time.seconds, "ce-time is the event's time");
        for code in [&owned[0].code, &owned[1].code, &unowned.code] {
            let bytes = String::from_utf8_lossy(&e.payload);
            if bytes.contains(code.as_str()) || bytes.contains(&code.replace('-', "")) {
                seen_codes.push(code.clone());
            }
        }
        match e.payload() {
            Payload::Minted(m) => {
                assert!(m.grants.iter().all(|g| g.codes.is_empty() && g.links.is_empty()));
            }
            Payload::Redeemed(r) if r.invitation_id == owned[0].id => {
                assert_eq!((r.inviter_id.as_str(), r.invitee_id.as_str()), ("ayo", "bo"));
                assert_eq!((r.uses, r.max_uses, r.via_reservation), (1, 1, false));
            }
            Payload::Redeemed(r) => {
                assert_eq!((r.invitation_id.as_str(), r.inviter_id.as_str()), (unowned.id.as_str(), ""));
                assert_eq!((r.invitee_id.as_str(), r.uses, r.max_uses, r.via_reservation), ("dee", 1, 2, true));
            }
            Payload::Revoked(r) => {
                assert_eq!(r.invitations.len(), 1);
                assert_eq!(r.invitations[0].invitation_id, owned[1].id);
                assert_eq!((r.invitations[0].inviter_id.as_str(), r.reason.as_str()), ("ayo", "leak"));
            }
            Payload::Reservation(r) => {
                assert_eq!(r.invitation_id, unowned.id);
                assert!(!r.reservation_ref.is_empty());
                for id in [&first.id, &second.id] {
                    assert!(!String::from_utf8_lossy(&e.payload).contains(id.as_str()), "a reservation id leaked");
                }
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(seen_codes.is_empty(), "codes in events without --events-include-codes");

    // Per invitation, events leave in commit order.
    let of_unowned = |kind: &'static str, n: usize| {
        let id = unowned.id.clone();
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.kind() == kind
                    && match e.payload() {
                        Payload::Minted(m) => m.grants.iter().any(|g| g.invitation_ids.contains(&id)),
                        Payload::Reservation(r) => r.invitation_id == id,
                        Payload::Redeemed(r) => r.invitation_id == id,
                        _ => false,
                    }
            })
            .nth(n)
            .map(|(i, _)| i)
            .expect("event present")
    };
    let order = [
        of_unowned("minted", 0),
        of_unowned("reservation.reserved", 0),
        of_unowned("reservation.released", 0),
        of_unowned("reservation.reserved", 1),
        of_unowned("redeemed", 0),
        of_unowned("reservation.completed", 0),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order: {order:?}");
    let first_ref = |n| match events[of_unowned("reservation.reserved", n)].payload() {
        Payload::Reservation(r) => r.reservation_ref.clone(),
        _ => unreachable!(),
    };
    assert_ne!(first_ref(0), first_ref(1), "two reservations, two refs");
    let minted_ayo = position(&events, |e| minted_ids(std::slice::from_ref(e)).contains_key(&owned[0].id));
    let redeemed_ayo =
        position(&events, |e| matches!(e.payload(), Payload::Redeemed(r) if r.invitation_id == owned[0].id));
    let revoked_ayo = position(&events, |e| e.kind() == "revoked");
    assert!(minted_ayo < redeemed_ayo && minted_ayo < revoked_ayo);

    let m = Scrape::fetch(app.admin_addr).await;
    assert_eq!(m.value("invitations_outbox_sent_total", &[]), rows as f64);
    assert_eq!(m.value("invitations_outbox_duplicates_total", &[]), 0.0);
}

#[tokio::test]
async fn a_rolled_back_change_emits_nothing() {
    let nats = NatsServer::start().await;
    // Two replicas on one database: `relay` publishes (and polls only hourly),
    // `app` takes the calls without a broker, so its commits reach the relay
    // only through the outbox's NOTIFY.
    let mut args = relay_args(&nats);
    args.extend(["--outbox-poll-interval", "1h"].map(String::from));
    let relay = spawn(args, None).await;
    wait_relay(&relay, ServingStatus::Serving).await;
    let app = spawn(vec![], Some(relay.db.url.clone())).await;
    let consumer = nats.consumer().await;
    let pool = relay.pool().await;
    // Make the commit itself fail for one invitee: the redeem's every
    // statement (the outbox insert included) succeeds, then COMMIT aborts.
    sqlx::raw_sql(
        "CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'doomed at commit'; END $$; \
         CREATE CONSTRAINT TRIGGER doom AFTER UPDATE ON invitations DEFERRABLE INITIALLY DEFERRED \
           FOR EACH ROW WHEN (NEW.last_invitee_id = 'doomed') EXECUTE FUNCTION doom();",
    )
    .execute(&pool)
    .await
    .expect("install the trigger");

    let inv = app.mint_one("ayo").await;
    app.redeem(&inv.code, "doomed").await.expect_err("the commit fails");
    assert!(app.check(&inv.code).await.redeemable, "the redeem was rolled back");
    app.redeem(&inv.code, "bo").await.expect("a committed redeem");

    let events = consumer.wait_for(2, WAIT).await;
    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&relay).await.1 == 0 }).await;
    let events_now = consumer.read_all().await;
    assert_eq!(events_now.len(), 2, "{:?}", events.iter().map(Received::kind).collect::<Vec<_>>());
    assert_eq!(events_now[0].kind(), "minted");
    match events_now[1].payload() {
        Payload::Redeemed(r) => assert_eq!(r.invitee_id, "bo"),
        other => panic!("expected the committed redeem, got {other:?}"),
    }
    assert_eq!(outbox_rows(&relay).await.0, 2, "no row of the rolled-back change");
    pool.close().await;
}

#[tokio::test]
async fn codes_and_links_are_in_minted_events_only_when_turned_on() {
    let nats = NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.extend(["--events-include-codes", "true", "--code-prefix", "INV"].map(String::from));
    let app = spawn(args, None).await;
    let minted = app.mint_for("ayo", 3).await;
    let events = nats.consumer().await.wait_for(1, WAIT).await;
    let Payload::Minted(m) = events[0].payload() else { panic!("a minted event") };
    assert_eq!(m.grants.len(), 1);
    let by_id: HashMap<&str, &pb::Invitation> = minted.iter().map(|i| (i.id.as_str(), i)).collect();
    assert_eq!(m.grants[0].invitation_ids.len(), 3);
    for (n, id) in m.grants[0].invitation_ids.iter().enumerate() {
        let inv = by_id[id.as_str()];
        assert_eq!(m.grants[0].codes[n], inv.code);
        assert!(inv.code.starts_with("INV-"));
        assert_eq!(m.grants[0].links[n], inv.link);
    }
}

#[tokio::test]
async fn broker_down_during_1000_redeems_every_event_arrives_after_restart() {
    let mut nats = NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    let consumer = nats.consumer().await;
    let minted = app.mint(pb::MintRequest {
        user_ids: (0..50).map(|i| format!("inviter-{i}")).collect(),
        per_user: 20,
        ..Default::default()
    });
    let invitations = minted.await.expect("mint 1,000").invitations;
    let (minted_rows, _) = outbox_rows(&app).await;
    consumer.wait_for(minted_rows as u64, WAIT).await;
    wait_until(WAIT, "the minted events to be marked sent", || async { outbox_rows(&app).await.1 == 0 }).await;
    wait_relay(&app, ServingStatus::Serving).await;

    nats.stop();
    let results: Vec<_> = futures::stream::iter(invitations.iter().enumerate())
        .map(|(n, inv)| {
            let app = &app;
            async move { app.redeem(&inv.code, &format!("friend-{n}")).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "calls keep succeeding while the broker is down");
    wait_relay(&app, ServingStatus::NotServing).await;
    let (_, pending) = outbox_rows(&app).await;
    assert_eq!(pending, 1000, "every redeem's event waits in the outbox");
    wait_until(WAIT, "the backlog gauge", || async {
        Scrape::fetch(app.admin_addr).await.value("invitations_outbox_backlog", &[]) >= 1000.0
    })
    .await;

    nats.restart().await;
    let consumer = nats.consumer().await;
    let events = consumer.wait_for(minted_rows as u64 + 1000, WAIT).await;
    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&app).await.1 == 0 }).await;
    wait_relay(&app, ServingStatus::Serving).await;
    let events_now = consumer.read_all().await;
    assert_eq!(events_now.len(), events.len(), "nothing more arrived after the drain");
    assert_unique(&events_now);
    let redeemed: HashSet<&str> = events_now
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::Redeemed(r) => Some(r.invitation_id.as_str()),
            _ => None,
        })
        .collect();
    let expected: HashSet<&str> = invitations.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(redeemed.len(), 1000);
    assert_eq!(redeemed, expected, "every redeem's event, none missing");
    wait_until(WAIT, "the backlog gauge to fall", || async {
        Scrape::fetch(app.admin_addr).await.value("invitations_outbox_backlog", &[]) == 0.0
    })
    .await;
}
