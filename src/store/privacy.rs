//! SQL for EraseMember (docs/design.md, "Erasure"): the erasure records,
//! the rewrite of every row that names the member (`inv_erase_member`,
//! migrations/0090_erasure.sql), and the pending events and stored answers
//! that the service re-encodes or drops.

use sqlx::PgConnection;
use uuid::Uuid;

/// The tombstone of an erased user id, found by its keyed digests (one per
/// configured secret).
pub async fn tombstone(conn: &mut PgConnection, digests: &[Vec<u8>]) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT tombstone FROM erasures WHERE digest = ANY($1) LIMIT 1", digests)
        .fetch_optional(conn)
        .await
}

pub async fn record(conn: &mut PgConnection, digest: &[u8], tombstone: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("INSERT INTO erasures (digest, tombstone) VALUES ($1, $2)", digest, tombstone).execute(conn).await?;
    Ok(())
}

/// What `inv_erase_member` left to the caller.
pub struct Rewritten {
    /// The member's unspent invitations, to revoke.
    pub unspent: Vec<Uuid>,
    /// Outbox rows (by seq) still pending that name the member.
    pub pending: Vec<i64>,
}

/// Rewrites every row that names `old` to `tomb` (the caller holds the
/// member's tree and row locks).
pub async fn rewrite(conn: &mut PgConnection, old: &str, tomb: &str) -> Result<Rewritten, sqlx::Error> {
    let row =
        sqlx::query!(r#"SELECT unspent AS "unspent!", pending AS "pending!" FROM inv_erase_member($1, $2)"#, old, tomb)
            .fetch_one(conn)
            .await?;
    Ok(Rewritten { unspent: row.unspent, pending: row.pending })
}

/// A pending outbox row's payload, locked.
pub async fn pending_payloads(conn: &mut PgConnection, seqs: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT seq, payload FROM outbox WHERE seq = ANY($1) AND sent_time IS NULL ORDER BY seq FOR UPDATE",
        seqs
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq, r.payload)).collect())
}

pub async fn replace_payload(conn: &mut PgConnection, seq: i64, payload: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE outbox SET payload = $2 WHERE seq = $1", seq, payload).execute(conn).await?;
    Ok(())
}

/// A stored idempotent answer.
pub struct StoredAnswer {
    pub method: String,
    pub request_id: String,
    pub response: Vec<u8>,
    pub response_key_id: Option<i32>,
}

/// Every stored answer (sealed: only the service can tell which name the
/// member). Bounded by the idempotency retention.
pub async fn stored_answers(conn: &mut PgConnection) -> Result<Vec<StoredAnswer>, sqlx::Error> {
    sqlx::query_as!(StoredAnswer, "SELECT method, request_id, response, response_key_id FROM idempotency_keys")
        .fetch_all(conn)
        .await
}

pub async fn delete_answer(conn: &mut PgConnection, method: &str, request_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM idempotency_keys WHERE method = $1 AND request_id = $2", method, request_id)
        .execute(conn)
        .await?;
    Ok(())
}
