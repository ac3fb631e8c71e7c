//! SQL for the transactional outbox (docs/design.md, "Events").
//!
//! [`append`] is the one way events enter the outbox: call it with the
//! transaction that makes the change, after the change (so the invitation's
//! row lock is held, which makes write order = commit order per invitation).
//! It does not `NOTIFY`: a NOTIFY in the transaction serializes every commit
//! on Postgres's notify lock (measured: 32 clients fell from ~4,000 to ~600
//! commits/s). After the commit the service wakes its own relay in process
//! and [`notify`]s the others, at most a few times a second
//! (`outbox::Waker`).
//!
//! The relay side: [`claim_partitions`] locks up to N partitions that have
//! pending events (skipping those another relay holds), [`pending_in`] reads
//! their oldest events, [`mark_sent`] marks what JetStream acknowledged; all
//! in one transaction, so a relay that dies mid-round releases its partitions
//! and its events stay pending.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::events::Event;

/// The LISTEN/NOTIFY channel that wakes relays after a commit.
pub const CHANNEL: &str = "invitations_outbox";

/// Writes `events` in the caller's transaction. Wake the relays after the
/// commit (`outbox::Waker::committed`).
pub async fn append(conn: &mut PgConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.name()).collect();
    let partitions: Vec<i16> = events.iter().map(|e| e.partition).collect();
    let times: Vec<OffsetDateTime> = events.iter().map(|e| e.time).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    // Rows are written in the order given (WITH ORDINALITY), so events of
    // one change keep their order too.
    sqlx::query(
        "INSERT INTO outbox (id, event_type, partition, create_time, payload) \
         SELECT id, event_type, partition, create_time, payload \
         FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::timestamptz[], $5::bytea[]) \
           WITH ORDINALITY AS e(id, event_type, partition, create_time, payload, n) ORDER BY n",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&partitions)
    .bind(&times)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes every relay listening on [`CHANNEL`] (its own short transaction).
pub async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(conn).await?;
    Ok(())
}

/// Locks up to `limit` partitions with pending events that no other relay
/// holds, in random order (so relays spread over them). Call in a transaction;
/// the locks last until it ends.
pub async fn claim_partitions(conn: &mut PgConnection, limit: i64) -> Result<Vec<i16>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT partition FROM outbox_partitions p \
         WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.partition = p.partition AND o.sent_time IS NULL) \
         ORDER BY random() LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A pending event as the relay publishes it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingEvent {
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub partition: i16,
    pub create_time: OffsetDateTime,
    pub payload: Vec<u8>,
}

/// The oldest `limit` pending events of the given partitions, in write order.
/// Call after `claim_partitions` in the same transaction (a later statement
/// sees everything committed before the locks were taken).
pub async fn pending_in(
    conn: &mut PgConnection,
    partitions: &[i16],
    limit: i64,
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, id, event_type, partition, create_time, payload FROM outbox \
         WHERE partition = ANY($1) AND sent_time IS NULL ORDER BY seq LIMIT $2",
    )
    .bind(partitions)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn mark_sent(conn: &mut PgConnection, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET sent_time = now() WHERE seq = ANY($1)").bind(seqs).execute(conn).await?;
    Ok(())
}

/// Pending events: how many, and when the oldest was written.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct Backlog {
    pub pending: i64,
    /// Seconds since the oldest pending event was written (0 when none).
    pub oldest_age_seconds: f64,
}

pub async fn backlog(conn: &mut PgConnection) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS pending, \
           coalesce(extract(epoch FROM clock_timestamp() - min(create_time)), 0)::float8 AS oldest_age_seconds \
         FROM outbox WHERE sent_time IS NULL",
    )
    .fetch_one(conn)
    .await
}

/// Counts by event type: (type, pending, sent and not yet pruned).
pub async fn counts_by_type(conn: &mut PgConnection) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_type, count(*) FILTER (WHERE sent_time IS NULL), count(*) FILTER (WHERE sent_time IS NOT NULL) \
         FROM outbox GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(conn)
    .await
}

/// Deletes up to `limit` events sent before `cutoff`; returns how many.
/// Rows another replica is deleting are skipped, not waited for.
pub async fn prune_sent(conn: &mut PgConnection, cutoff: OffsetDateTime, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE seq IN ( \
           SELECT seq FROM outbox WHERE sent_time IS NOT NULL AND sent_time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks sent events written in [since, until) (of one type, if given) as
/// pending again and wakes the relays; returns how many. With `dry_run`,
/// only counts.
pub async fn requeue(
    conn: &mut PgConnection,
    since: OffsetDateTime,
    until: OffsetDateTime,
    event_type: Option<&str>,
    dry_run: bool,
) -> Result<u64, sqlx::Error> {
    const RANGE: &str = "sent_time IS NOT NULL AND create_time >= $1 AND create_time < $2 \
                         AND ($3::text IS NULL OR event_type = $3)";
    if dry_run {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM outbox WHERE {RANGE}"))
            .bind(since)
            .bind(until)
            .bind(event_type)
            .fetch_one(conn)
            .await?;
        return Ok(n as u64);
    }
    let n: i64 = sqlx::query_scalar(&format!(
        "WITH requeued AS (UPDATE outbox SET sent_time = NULL WHERE {RANGE} RETURNING 1) \
         SELECT count(*) FROM requeued, (SELECT pg_notify($4, '')) AS wake"
    ))
    .bind(since)
    .bind(until)
    .bind(event_type)
    .bind(CHANNEL)
    .fetch_one(conn)
    .await?;
    Ok(n as u64)
}
