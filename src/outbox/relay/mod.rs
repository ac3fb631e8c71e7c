//! The outbox relay: publishes pending outbox events to NATS JetStream and
//! marks them sent. One runs in every replica that has `NATS_URL`; they share
//! the work by partition (docs/design.md, "Events").
//!
//! A round, in one database transaction: lock up to [`PARTITIONS_PER_ROUND`]
//! partitions with pending events (`FOR UPDATE SKIP LOCKED`: partitions
//! another relay holds are skipped), read their oldest events, publish each
//! partition's events in order (one at a time, awaiting JetStream's ack, so
//! a failed publish can never be overtaken by a later one; partitions go in
//! parallel), mark the acknowledged ones sent, commit. A relay that dies
//! mid-round rolls back: its events stay pending and are published again,
//! with the same `Nats-Msg-Id`, which JetStream's duplicate window drops.
//!
//! Wake-ups: this replica's commits (in process, `outbox::Waker`), other
//! replicas' commits (a debounced Postgres `NOTIFY`; the relay `LISTEN`s),
//! the NATS client reconnecting, and a slow poll as a safety net. While the broker fails, rounds are retried with exponential
//! backoff (100 ms doubling up to `--outbox-max-backoff`); calls are not
//! affected. Health: the `outbox-relay` service name is SERVING while rounds
//! succeed, NOT_SERVING while they fail.

mod round;

pub use round::{CONTENT_TYPE, DATA_SCHEMA};

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use round::{Relay, RoundError};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::outbox;
use crate::telemetry::OutboxMetrics;

/// The health service name that reports the relay.
pub const HEALTH_NAME: &str = "outbox-relay";

pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window: Duration,
    pub publish_timeout: Duration,
    pub source: String,
    pub batch_size: u32,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
    /// Test hook (feature `test-hooks`): stop after the first publish,
    /// before marking.
    #[cfg(feature = "test-hooks")]
    pub crash_after_publish: bool,
}

impl RelaySettings {
    pub(crate) fn subject(&self, event_type: &str) -> String {
        format!("{}.{}", self.subject_prefix, event_type)
    }
}

/// Runs the relay until the task is dropped. `wake` is notified after this
/// replica's commits (`outbox::Waker::local`); the relay also notifies it
/// for other replicas' commits (LISTEN).
pub async fn run(
    pool: PgPool,
    settings: RelaySettings,
    health: HealthReporter,
    metrics: OutboxMetrics,
    wake: Arc<Notify>,
) {
    health.set_service_status(HEALTH_NAME, ServingStatus::NotServing).await;
    // One task: dropping it (shutdown) stops the listener and the client too.
    tokio::select! {
        () = listen(pool.clone(), wake.clone()) => {}
        () = relay(pool, settings, health, metrics, wake) => {}
    }
}

async fn relay(
    pool: PgPool,
    settings: RelaySettings,
    health: HealthReporter,
    metrics: OutboxMetrics,
    wake: Arc<Notify>,
) {
    let reconnected = Arc::new(Notify::new());
    let on_event = reconnected.clone();
    let options = async_nats::ConnectOptions::new()
        .name("invitations-outbox-relay")
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("outbox relay: connected to NATS");
                        on_event.notify_one();
                    }
                    async_nats::Event::Disconnected => tracing::warn!("outbox relay: disconnected from NATS"),
                    other => tracing::info!(event = %other, "outbox relay: NATS event"),
                }
            }
        });
    // With retry_on_initial_connect this fails only on a malformed URL.
    let client = match options.connect(settings.nats_url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "outbox relay: bad NATS_URL; events stay in the outbox");
            return;
        }
    };
    let js = jetstream::ContextBuilder::new().timeout(settings.publish_timeout).build(client);
    let relay = Relay { pool, settings, js, metrics };

    let mut backoff = MIN_BACKOFF;
    let mut stream_ready = false;
    let mut healthy = None;
    loop {
        let outcome = if stream_ready {
            relay.round().await
        } else {
            relay.ensure_stream().await.map_err(RoundError::from).map(|()| {
                stream_ready = true;
                1 // look for work at once
            })
        };
        match outcome {
            Ok(published) => {
                backoff = MIN_BACKOFF;
                if healthy != Some(true) {
                    tracing::info!(stream = %relay.settings.stream, "outbox relay: publishing");
                    health.set_service_status(HEALTH_NAME, ServingStatus::Serving).await;
                    healthy = Some(true);
                }
                if published == 0 {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = reconnected.notified() => {}
                        () = tokio::time::sleep(relay.settings.poll_interval) => {}
                    }
                }
            }
            #[cfg(feature = "test-hooks")]
            Err(RoundError::Crashed) => {
                tracing::warn!("outbox relay: test hook: stopped after publishing, before marking sent");
                health.set_service_status(HEALTH_NAME, ServingStatus::NotServing).await;
                return;
            }
            Err(RoundError::Failed { error, unpublished }) => {
                if healthy != Some(false) {
                    health.set_service_status(HEALTH_NAME, ServingStatus::NotServing).await;
                    healthy = Some(false);
                }
                // Only what this round knows: the backlog gauges are up to
                // --outbox-stats-interval old and read 0 before the first
                // measurement (the "outbox backlog" line and the
                // invitations_outbox_* gauges report the backlog itself).
                tracing::warn!(
                    error = %crate::telemetry::error_chain(&error),
                    retry_in_ms = backoff.as_millis() as u64,
                    unpublished,
                    "outbox relay: round failed; events wait in the outbox"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = reconnected.notified() => {}
                }
                backoff = (backoff * 2).min(relay.settings.max_backoff);
            }
        }
    }
}

/// Forwards the outbox channel's notifications to `wake`. PgListener
/// reconnects by itself; while it cannot, the relay still polls.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay: cannot LISTEN; polling only for now");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(outbox::CHANNEL).await {
            tracing::warn!(error = %e, "outbox relay: LISTEN failed; polling only for now");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        // Commits before LISTEN took effect sent no notification we saw.
        wake.notify_one();
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: LISTEN connection lost");
                    // A notification may have been missed: look once.
                    wake.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
