//! The relay under failure and sharing: a crash between publish and mark,
//! two replicas on one database, the expiry sweeper on two replicas, and no
//! broker at all (events wait; `invitations outbox` shows and replays them).

use std::collections::{HashMap, HashSet};
use std::process::Command;

use futures::StreamExt;
use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;
use invitations::pb::invitation_service_client::InvitationServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::events::{WAIT, assert_unique, outbox_rows, relay_args, relay_status, spawn, wait_relay};
use crate::helpers::{TestApp, connect, wait_until};
use crate::metrics::Scrape;
use crate::nats::{NatsServer, Received};
use crate::process::Process;

async fn duplicates(app: &TestApp) -> f64 {
    Scrape::fetch(app.admin_addr).await.value("invitations_outbox_duplicates_total", &[])
}

#[tokio::test]
async fn a_relay_killed_after_publishing_and_before_marking_is_deduplicated() {
    let nats = NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.push("--outbox-test-crash-after-publish".into());
    let first = spawn(args, None).await;
    let consumer = nats.consumer().await;
    wait_relay(&first, ServingStatus::Serving).await;
    let minted = first
        .mint(pb::MintRequest {
            user_ids: (0..10).map(|i| format!("u{i}")).collect(),
            per_user: 2,
            ..Default::default()
        })
        .await
        .expect("mint")
        .invitations;
    // The relay publishes the minted events, then "crashes" before marking them.
    wait_relay(&first, ServingStatus::NotServing).await;
    let published_before_crash = consumer.stored().await;
    assert!(published_before_crash > 0, "the crashed relay did publish");
    for (n, inv) in minted.iter().take(5).enumerate() {
        first.redeem(&inv.code, &format!("friend-{n}")).await.expect("redeem");
    }
    let (rows, pending) = outbox_rows(&first).await;
    assert_eq!(pending, rows, "nothing was marked sent");

    // Another replica takes over and publishes everything again.
    let second = spawn(relay_args(&nats), Some(first.db.url.clone())).await;
    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&first).await.1 == 0 }).await;
    let events = consumer.read_all().await;
    assert_eq!(events.len() as i64, rows, "each event once on the stream");
    assert_unique(&events);
    assert_eq!(
        duplicates(&second).await,
        published_before_crash as f64,
        "the re-published events were dropped by JetStream's duplicate window"
    );
}

#[tokio::test]
async fn two_relays_on_one_database_lose_nothing_and_publish_nothing_twice() {
    let nats = NatsServer::start().await;
    let a = spawn(relay_args(&nats), None).await;
    let b = spawn(relay_args(&nats), Some(a.db.url.clone())).await;
    wait_relay(&a, ServingStatus::Serving).await;
    wait_relay(&b, ServingStatus::Serving).await;
    let consumer = nats.consumer().await;

    let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    let invitations = a
        .mint(pb::MintRequest { user_ids: users, per_user: 5, ..Default::default() })
        .await
        .expect("mint 200")
        .invitations;
    let redeems: Vec<_> = futures::stream::iter(invitations.iter().enumerate())
        .map(|(n, inv)| {
            let app = if n % 2 == 0 { &a } else { &b };
            async move { app.redeem(&inv.code, &format!("friend-{n}")).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(redeems.iter().all(Result::is_ok));

    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&a).await.1 == 0 }).await;
    let (rows, _) = outbox_rows(&a).await;
    let events = consumer.wait_for(rows as u64, WAIT).await;
    assert_eq!(events.len() as i64, rows, "every event, once");
    assert_unique(&events);
    let redeemed: HashSet<&str> = events
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::Redeemed(r) => Some(r.invitation_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(redeemed.len(), 200);
    assert_eq!(duplicates(&a).await + duplicates(&b).await, 0.0, "no event was published twice");
}

fn expired_counts(events: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in events {
        if let Payload::Expired(x) = e.payload() {
            for inv in &x.invitations {
                *counts.entry(inv.invitation_id.clone()).or_default() += 1;
            }
        }
    }
    counts
}

#[tokio::test]
async fn expiry_is_announced_exactly_once_across_replicas() {
    let nats = NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.extend(["--expiry-sweep-interval", "50ms", "--reservation-sweep-interval", "50ms"].map(String::from));
    let a = spawn(args.clone(), None).await;
    let b = spawn(args, Some(a.db.url.clone())).await;
    let consumer = nats.consumer().await;
    let ttl = Some(prost_types::Duration { seconds: 2, nanos: 0 });
    let wave = |users: Vec<&str>, per_user| pb::MintRequest {
        user_ids: users.into_iter().map(String::from).collect(),
        per_user,
        ttl,
        ..Default::default()
    };
    let first = a.mint(wave(vec!["ayo", "bo", "cy", "dee"], 5)).await.expect("mint").invitations;
    b.redeem(&first[0].code, "friend").await.expect("redeem before expiry");
    b.revoke(pb::RevokeRequest { invitation_ids: vec![first[1].id.clone()], ..Default::default() })
        .await
        .expect("revoke");
    let lease = pb::ReserveRequest {
        code: first[3].code.clone(),
        ttl: Some(prost_types::Duration { seconds: 0, nanos: 200_000_000 }),
        ..Default::default()
    };
    b.client.clone().reserve(lease).await.expect("reserve for 200 ms");
    let announced: HashSet<String> = first[2..].iter().map(|i| i.id.clone()).collect();
    wait_until(WAIT, "the first wave's expiry events", || async {
        let counts = expired_counts(&consumer.read_all().await);
        announced.iter().all(|id| counts.contains_key(id))
    })
    .await;

    // Both sweepers have swept many times over the first wave by the time a
    // second wave expires: a double announcement would be on the stream.
    let second = a.mint(wave(vec!["eve"], 3)).await.expect("mint").invitations;
    wait_until(WAIT, "the second wave's expiry events", || async {
        let counts = expired_counts(&consumer.read_all().await);
        second.iter().all(|i| counts.contains_key(&i.id))
    })
    .await;
    wait_until(WAIT, "the outbox to drain", || async { outbox_rows(&a).await.1 == 0 }).await;

    let events = consumer.read_all().await;
    assert_unique(&events);
    let counts = expired_counts(&events);
    let expected: HashSet<String> = announced.iter().cloned().chain(second.iter().map(|i| i.id.clone())).collect();
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected, "spent and revoked ones are not announced");
    assert!(counts.values().all(|&n| n == 1), "each expiry announced once: {counts:?}");
    let reservation_events: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::Reservation(r) => Some((e.kind(), r.invitation_id.as_str())),
            _ => None,
        })
        .collect();
    let leased = first[3].id.as_str();
    assert_eq!(reservation_events, [("reservation.reserved", leased), ("reservation.lapsed", leased)], "lapsed once");
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invitations"));
    command.args(["outbox", "--database-url", &app.db.url]).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("INVITATIONS_") || key == "NATS_URL" {
            command.env_remove(key);
        }
    }
    command.output().expect("run invitations outbox")
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn has_row(text: &str, row: &[&str]) -> bool {
    text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == row)
}

#[tokio::test]
async fn without_a_broker_events_wait_and_the_cli_shows_and_replays_them() {
    let app = TestApp::spawn_with(&["--outbox-stats-interval", "100ms"]).await;
    let inv = app.mint_for("ayo", 2).await;
    app.redeem(&inv[0].code, "bo").await.expect("the service runs without a broker");
    assert_eq!(relay_status(&app).await, None, "no relay without NATS_URL");
    assert_eq!(outbox_rows(&app).await, (2, 2));
    wait_until(WAIT, "the backlog gauge", || async {
        let m = Scrape::fetch(app.admin_addr).await;
        m.value("invitations_outbox_backlog", &[]) == 2.0 && m.value("invitations_outbox_oldest_age_seconds", &[]) > 0.0
    })
    .await;

    let status = stdout(&cli(&app, &[]));
    assert!(status.starts_with("pending: 2\noldest pending: "), "{status}");
    assert!(has_row(&status, &["minted", "1", "0"]) && has_row(&status, &["redeemed", "1", "0"]), "{status}");

    // As if a relay had published them; then replay the redeemed one.
    let pool = app.pool().await;
    sqlx::query("UPDATE outbox SET sent_time = now()").execute(&pool).await.expect("mark sent");
    let since = "2000-01-01T00:00:00Z";
    let dry = stdout(&cli(&app, &["replay", "--since", since, "--type", "redeemed", "--dry-run"]));
    assert!(dry.starts_with("would replay 1 "), "{dry}");
    assert_eq!(outbox_rows(&app).await.1, 0, "a dry run changes nothing");
    let replayed = stdout(&cli(&app, &["replay", "--since", since, "--type", "redeemed"]));
    assert!(replayed.starts_with("replaying 1 events"), "{replayed}");
    let pending: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox WHERE sent_time IS NULL")
        .fetch_all(&pool)
        .await
        .expect("pending rows");
    assert_eq!(pending, ["redeemed"]);
    let status = stdout(&cli(&app, &["status"]));
    assert!(has_row(&status, &["redeemed", "1", "0"]) && has_row(&status, &["minted", "0", "1"]), "{status}");

    let bad = cli(&app, &["replay", "--since", since, "--type", "bogus"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown event type"));
    pool.close().await;
}

/// The warning a failed round logs says only what the round knows: how many
/// of the events it read stayed unpublished. It used to add the backlog
/// gauges' last reading, which is up to --outbox-stats-interval old and said
/// `pending=0` while a thousand events waited.
#[tokio::test]
async fn a_failed_round_logs_what_it_left_unpublished_not_a_stale_backlog() {
    let mut nats = NatsServer::start().await;
    let url = nats.url();
    let args = ["--nats-url", &url, "--nats-publish-timeout", "300ms", "--outbox-max-backoff", "200ms"];
    let process = Process::spawn(&args, &[]).await;
    let channel = connect(process.addr).await;
    let health = HealthClient::new(channel.clone());
    let relay_serving = || async {
        let request = HealthCheckRequest { service: "outbox-relay".into() };
        health.clone().check(request).await.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    };
    wait_until(WAIT, "the relay to publish", relay_serving).await;
    // The backlog gauges have measured an empty outbox by now.
    wait_until(WAIT, "the first backlog measurement", || async {
        Scrape::fetch(process.admin_addr).await.value("invitations_outbox_backlog", &[]) == 0.0
    })
    .await;

    nats.stop();
    let users: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let mint = pb::MintRequest { user_ids: users, per_user: 10, ..Default::default() };
    let minted = InvitationServiceClient::new(channel).mint(mint).await.expect("mint without a broker");
    assert_eq!(minted.into_inner().invitations.len(), 1_000);
    let pool = process.db.pool().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_time IS NULL")
        .fetch_one(&pool)
        .await
        .expect("pending events");
    assert!(pending > 0);

    const FAILED: &str = "outbox relay: round failed; events wait in the outbox";
    wait_until(WAIT, "a failed round", || async { process.log_line(FAILED).is_some() }).await;
    let line = process.log_line(FAILED).expect("logged");
    let fields = &line["fields"];
    assert!(fields.get("pending").is_none() && fields.get("oldest_age_s").is_none(), "a stale backlog: {line}");
    let unpublished = fields["unpublished"].as_u64().unwrap_or_else(|| panic!("no unpublished count: {line}"));
    assert!((1..=pending as u64).contains(&unpublished), "{unpublished} of {pending} pending: {line}");
    assert!(fields["error"].as_str().is_some_and(|e| !e.is_empty()), "{line}");
    pool.close().await;
}
