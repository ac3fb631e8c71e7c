//! One relay round (claim partitions, publish in order, mark sent) and the
//! JetStream side: the stream check and the CloudEvents headers.

use std::collections::BTreeMap;

use anyhow::Context;
use async_nats::jetstream;
use async_nats::{HeaderMap, header};
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;

use super::RelaySettings;
use crate::store::outbox::{self, PendingEvent};
use crate::telemetry::OutboxMetrics;

/// Partitions one round takes at most: a quarter, so other relays find work.
const PARTITIONS_PER_ROUND: i64 = 8;

pub(super) enum RoundError {
    /// The round failed. `unpublished`: how many of the events it had read
    /// it could not publish (they stay pending); `None` when it failed
    /// before reading any (the database, or the stream check).
    Failed { error: anyhow::Error, unpublished: Option<usize> },
    /// The `test-hooks` crash: published, not marked.
    #[cfg(feature = "test-hooks")]
    Crashed,
}

impl From<anyhow::Error> for RoundError {
    fn from(error: anyhow::Error) -> Self {
        RoundError::Failed { error, unpublished: None }
    }
}

impl From<sqlx::Error> for RoundError {
    fn from(e: sqlx::Error) -> Self {
        RoundError::Failed { error: e.into(), unpublished: None }
    }
}

pub(super) struct Relay {
    pub(super) pool: PgPool,
    pub(super) settings: RelaySettings,
    pub(super) js: jetstream::Context,
    pub(super) metrics: OutboxMetrics,
}

/// What publishing one partition's events achieved.
struct PartitionResult {
    acked: Vec<i64>,
    duplicates: u64,
    error: Option<anyhow::Error>,
}

impl Relay {
    /// Creates the stream if it is missing; checks that an existing one takes
    /// our subjects.
    pub(super) async fn ensure_stream(&self) -> anyhow::Result<()> {
        let wanted = format!("{}.>", self.settings.subject_prefix);
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![wanted.clone()],
            duplicate_window: self.settings.duplicate_window,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(config)
            .await
            .with_context(|| format!("creating or looking up stream {}", self.settings.stream))?;
        let info = stream.info().await.context("reading the stream's configuration")?;
        let subjects = &info.config.subjects;
        if !subjects.iter().any(|s| covers(s, &wanted)) {
            anyhow::bail!(
                "stream {} takes subjects {subjects:?}, not {wanted}: fix --nats-subject-prefix or the stream",
                self.settings.stream
            );
        }
        if info.config.duplicate_window < self.settings.duplicate_window {
            tracing::warn!(
                stream = %self.settings.stream,
                window_s = info.config.duplicate_window.as_secs(),
                "outbox relay: the stream's duplicate window is shorter than configured; re-publishes after it are \
                 not de-duplicated"
            );
        }
        Ok(())
    }

    /// One claim-publish-mark round; returns how many events were sent.
    pub(super) async fn round(&self) -> Result<usize, RoundError> {
        let mut tx = self.pool.begin().await?;
        let partitions = outbox::claim_partitions(&mut tx, PARTITIONS_PER_ROUND).await?;
        if partitions.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let pending = outbox::pending_in(&mut tx, &partitions, i64::from(self.settings.batch_size)).await?;
        let read = pending.len();
        let mut by_partition: BTreeMap<i16, Vec<PendingEvent>> = BTreeMap::new();
        for event in pending {
            by_partition.entry(event.partition).or_default().push(event);
        }
        let mut publishing = JoinSet::new();
        for events in by_partition.into_values() {
            publishing.spawn(publish_in_order(self.js.clone(), self.settings.clone(), events));
        }
        let mut acked = vec![];
        let mut first_error = None;
        while let Some(joined) = publishing.join_next().await {
            let result = joined.map_err(|e| anyhow::anyhow!("publishing task failed: {e}"))?;
            acked.extend(result.acked);
            self.metrics.published(result.duplicates);
            if first_error.is_none() {
                first_error = result.error;
            }
        }
        #[cfg(feature = "test-hooks")]
        if self.settings.crash_after_publish {
            drop(tx);
            return Err(RoundError::Crashed);
        }
        outbox::mark_sent(&mut tx, &acked).await?;
        tx.commit().await?;
        self.metrics.sent(acked.len() as u64);
        match first_error {
            Some(error) => Err(RoundError::Failed { error, unpublished: Some(read - acked.len()) }),
            None => Ok(acked.len()),
        }
    }
}

/// Whether the stream subject `pattern` takes every subject `wanted` (which
/// may end in `>`) matches, token by token (`*` one token, `>` the rest).
fn covers(pattern: &str, wanted: &str) -> bool {
    let mut p = pattern.split('.');
    let mut w = wanted.split('.');
    loop {
        match (p.next(), w.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Publishes one partition's events in order, each after the previous one's
/// ack; stops at the first failure so nothing overtakes it.
async fn publish_in_order(
    js: jetstream::Context,
    settings: RelaySettings,
    events: Vec<PendingEvent>,
) -> PartitionResult {
    let mut result = PartitionResult { acked: vec![], duplicates: 0, error: None };
    for event in events {
        match publish(&js, &settings, &event).await {
            Ok(ack) => {
                if ack.duplicate {
                    result.duplicates += 1;
                }
                result.acked.push(event.seq);
            }
            Err(e) => {
                result.error = Some(e.context(format!("publishing {} event {}", event.event_type, event.id)));
                break;
            }
        }
    }
    result
}

async fn publish(
    js: &jetstream::Context,
    settings: &RelaySettings,
    event: &PendingEvent,
) -> anyhow::Result<jetstream::publish::PublishAck> {
    let headers = cloud_event_headers(settings, event)?;
    let ack = js
        .publish_with_headers(settings.subject(&event.event_type), headers, event.payload.clone().into())
        .await?
        .await?;
    Ok(ack)
}

/// CloudEvents binary mode over NATS: attributes as `ce-` headers, plus the
/// event id as `Nats-Msg-Id` for JetStream's de-duplication.
fn cloud_event_headers(settings: &RelaySettings, event: &PendingEvent) -> anyhow::Result<HeaderMap> {
    let id = event.id.to_string();
    let time = event.create_time.format(&Rfc3339)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_MESSAGE_ID, id.as_str());
    headers.insert("ce-specversion", "1.0");
    headers.insert("ce-id", id.as_str());
    headers.insert("ce-type", format!("invitations.v1.{}", event.event_type).as_str());
    headers.insert("ce-source", settings.source.as_str());
    headers.insert("ce-time", time.as_str());
    headers.insert("content-type", CONTENT_TYPE);
    headers.insert("ce-dataschema", DATA_SCHEMA);
    Ok(headers)
}

/// The payload's media type.
pub const CONTENT_TYPE: &str = "application/protobuf";
/// Names the payload's message type (the descriptor is in the server's
/// reflection service and in proto/invitations/v1/events.proto).
pub const DATA_SCHEMA: &str = "proto:invitations.v1.InvitationEvent";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_cover_the_prefix() {
        assert!(covers("invitations.v1.>", "invitations.v1.>"));
        assert!(covers(">", "invitations.v1.>"));
        assert!(covers("invitations.>", "invitations.v1.>"));
        assert!(covers("*.v1.>", "invitations.v1.>"));
        assert!(!covers("invitations.v1.*", "invitations.v1.>"), "misses reservation.lapsed");
        assert!(!covers("invitations.v2.>", "invitations.v1.>"));
        assert!(!covers("invitations.v1", "invitations.v1.>"));
    }

    #[test]
    fn headers_are_cloud_events_with_the_dedup_id() {
        let id = uuid::Uuid::now_v7();
        let event = PendingEvent {
            seq: 1,
            id,
            event_type: "reservation.lapsed".into(),
            partition: 3,
            create_time: time::OffsetDateTime::from_unix_timestamp_nanos(1_795_789_512_500_000_000).expect("a time"),
            payload: vec![],
        };
        let settings = RelaySettings {
            nats_url: String::new(),
            stream: "S".into(),
            subject_prefix: "invitations.v1".into(),
            duplicate_window: std::time::Duration::from_secs(600),
            publish_timeout: std::time::Duration::from_secs(5),
            source: "urn:acme:invitations".into(),
            batch_size: 1,
            poll_interval: std::time::Duration::from_secs(5),
            max_backoff: std::time::Duration::from_secs(5),
            #[cfg(feature = "test-hooks")]
            crash_after_publish: false,
        };
        let headers = cloud_event_headers(&settings, &event).expect("headers");
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let id = id.to_string();
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some(id.as_str()));
        assert_eq!(get("ce-id").as_deref(), Some(id.as_str()));
        assert_eq!(get("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(get("ce-type").as_deref(), Some("invitations.v1.reservation.lapsed"));
        assert_eq!(get("ce-source").as_deref(), Some("urn:acme:invitations"));
        assert_eq!(get("ce-time").as_deref(), Some("2026-11-27T14:25:12.5Z"));
        assert_eq!(get("content-type").as_deref(), Some("application/protobuf"));
    }
}
