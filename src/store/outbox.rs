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
    sqlx::query!(
        "INSERT INTO outbox (id, event_type, partition, create_time, payload) \
         SELECT id, event_type, partition, create_time, payload \
         FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::timestamptz[], $5::bytea[]) \
           WITH ORDINALITY AS e(id, event_type, partition, create_time, payload, n) ORDER BY n",
        &ids,
        &types as &[&str],
        &partitions,
        &times,
        &payloads as &[&[u8]],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Wakes every relay listening on [`CHANNEL`] (its own short transaction).
pub async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL).fetch_one(conn).await?;
    Ok(())
}

/// Locks up to `limit` partitions with pending events that no other relay
/// holds, in random order (so relays spread over them). Call in a transaction;
/// the locks last until it ends.
pub async fn claim_partitions(conn: &mut PgConnection, limit: i64) -> Result<Vec<i16>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT partition FROM outbox_partitions p \
         WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.partition = p.partition AND o.sent_time IS NULL) \
         ORDER BY random() LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit
    )
    .fetch_all(conn)
    .await
}

/// A pending event as the relay publishes it.
#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        PendingEvent,
        "SELECT seq, id, event_type, partition, create_time, payload FROM outbox \
         WHERE partition = ANY($1) AND sent_time IS NULL ORDER BY seq LIMIT $2",
        partitions,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn mark_sent(conn: &mut PgConnection, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    // An `erased` event carries an erased member's old id: once delivered
    // it is dropped, not kept for replay (docs/design.md, "Erasure").
    sqlx::query!(
        "WITH dropped AS (DELETE FROM outbox WHERE seq = ANY($1) AND event_type = 'erased') \
         UPDATE outbox SET sent_time = now() WHERE seq = ANY($1) AND event_type <> 'erased'",
        seqs
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Pending events: how many, and when the oldest was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub pending: i64,
    /// Seconds since the oldest pending event was written (0 when none).
    pub oldest_age_seconds: f64,
}

pub async fn backlog(conn: &mut PgConnection) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as!(
        Backlog,
        r#"SELECT count(*) AS "pending!",
           coalesce(extract(epoch FROM clock_timestamp() - min(create_time)), 0)::float8 AS "oldest_age_seconds!"
         FROM outbox WHERE sent_time IS NULL"#,
    )
    .fetch_one(conn)
    .await
}

/// Counts by event type: (type, pending, sent and not yet pruned).
pub async fn counts_by_type(conn: &mut PgConnection) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT event_type, count(*) FILTER (WHERE sent_time IS NULL) AS "pending!",
             count(*) FILTER (WHERE sent_time IS NOT NULL) AS "sent!"
         FROM outbox GROUP BY event_type ORDER BY event_type"#,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.event_type, r.pending, r.sent)).collect())
}

/// UTC days after today that always have an outbox partition.
pub const PARTITION_DAYS_AHEAD: i32 = 3;

/// Creates the outbox partitions of today and the next
/// [`PARTITION_DAYS_AHEAD`] UTC days that are missing; returns how many.
pub async fn ensure_partitions(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT inv_outbox_ensure_partitions((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + $1::int) AS "created!""#,
        PARTITION_DAYS_AHEAD
    )
    .fetch_one(conn)
    .await
}

/// A day's partition of the outbox that may be dropped: its whole day lies
/// before the retention cutoff. `attached`: still a partition (else a
/// detach finished and the drop did not: a replica stopped in between).
#[derive(Debug, Clone)]
pub struct DayPartition {
    pub name: String,
    pub attached: bool,
    /// A `DETACH ... CONCURRENTLY` began and did not finish.
    pub detach_pending: bool,
    /// The day's bounds as SQL literals (for a re-attach).
    pub from: String,
    pub to: String,
}

/// Day partitions (and detached day tables) whose day ended before `cutoff`,
/// oldest first.
pub async fn expired_partitions(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
) -> Result<Vec<DayPartition>, sqlx::Error> {
    sqlx::query_as!(
        DayPartition,
        r#"SELECT c.relname::text AS "name!", i.inhrelid IS NOT NULL AS "attached!",
                coalesce(i.inhdetachpending, false) AS "detach_pending!",
                (d.day::timestamp AT TIME ZONE 'UTC')::text AS "from!",
                ((d.day + 1)::timestamp AT TIME ZONE 'UTC')::text AS "to!"
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
         LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'outbox'::regclass
         CROSS JOIN LATERAL (SELECT to_date(substr(c.relname, 9), 'YYYYMMDD') AS day) d
         WHERE c.relkind = 'r' AND c.relname ~ '^outbox_p[0-9]{8}$'
           AND (d.day + 1)::timestamp AT TIME ZONE 'UTC' <= $1
         ORDER BY c.relname"#,
        cutoff
    )
    .fetch_all(conn)
    .await
}

/// Whether a day's table still holds an event that is pending or was sent
/// at or after `cutoff`.
async fn holds_recent(conn: &mut PgConnection, name: &str, cutoff: OffsetDateTime) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {name} WHERE sent_time IS NULL OR sent_time >= $1)"))
        .bind(cutoff)
        .fetch_one(conn)
        .await
}

/// Drops a day's partition once every event in it was sent before `cutoff`;
/// returns whether it did. The partition is first detached with `DETACH
/// PARTITION CONCURRENTLY` (writers are not blocked; it cannot run in a
/// transaction, so `conn` must not be in one), checked again now that
/// nothing can write into it, and re-attached if an event slipped in.
/// Dynamic SQL: DDL names the partition (checked against the pattern).
pub async fn drop_partition(
    conn: &mut PgConnection,
    part: &DayPartition,
    cutoff: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let name = part.name.as_str();
    let day_table = name.len() == 16 && name.starts_with("outbox_p") && name[8..].bytes().all(|b| b.is_ascii_digit());
    if !day_table || holds_recent(conn, name, cutoff).await? {
        return Ok(false);
    }
    if part.attached {
        let how = if part.detach_pending { "FINALIZE" } else { "CONCURRENTLY" };
        sqlx::query(&format!("ALTER TABLE outbox DETACH PARTITION {name} {how}")).execute(&mut *conn).await?;
    }
    if holds_recent(conn, name, cutoff).await? {
        sqlx::query(&format!(
            "ALTER TABLE outbox ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
            part.from, part.to
        ))
        .execute(&mut *conn)
        .await?;
        return Ok(false);
    }
    sqlx::query(&format!("DROP TABLE {name}")).execute(conn).await?;
    Ok(true)
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
    if dry_run {
        let n = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM outbox
               WHERE sent_time IS NOT NULL AND create_time >= $1 AND create_time < $2
                 AND ($3::text IS NULL OR event_type = $3)"#,
            since,
            until,
            event_type
        )
        .fetch_one(conn)
        .await?;
        return Ok(n as u64);
    }
    let n = sqlx::query_scalar!(
        r#"WITH requeued AS (
             UPDATE outbox SET sent_time = NULL
             WHERE sent_time IS NOT NULL AND create_time >= $1 AND create_time < $2
               AND ($3::text IS NULL OR event_type = $3)
             RETURNING 1)
           SELECT count(*) AS "n!" FROM requeued, (SELECT pg_notify($4, '')) AS wake"#,
        since,
        until,
        event_type,
        CHANNEL
    )
    .fetch_one(conn)
    .await?;
    Ok(n as u64)
}
