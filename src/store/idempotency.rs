//! SQL for AIP-155 idempotency records: the first answer to a request id.

use sqlx::PgConnection;

/// A stored answer, sealed under `response_key_id` (None: plaintext, from
/// before answers were sealed; converted at start).
pub struct Record {
    pub request_hash: Vec<u8>,
    pub response: Vec<u8>,
    pub response_key_id: Option<i32>,
}

pub async fn find(conn: &mut PgConnection, method: &str, request_id: &str) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as!(
        Record,
        "SELECT request_hash, response, response_key_id FROM idempotency_keys WHERE method = $1 AND request_id = $2",
        method,
        request_id,
    )
    .fetch_optional(conn)
    .await
}

/// Stores the answer; false when a concurrent call with the same id stored
/// one first (this insert waits for that transaction, then does nothing).
pub async fn insert(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    request_hash: &[u8],
    response: &[u8],
    response_key_id: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO idempotency_keys (method, request_id, request_hash, response, response_key_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (method, request_id) DO NOTHING",
        method,
        request_id,
        request_hash,
        response,
        response_key_id,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes up to `batch` stored answers older than `before`, oldest first
/// (by `idempotency_keys_create_time_idx`); rows another sweeper holds are
/// skipped. Returns how many were deleted.
pub async fn delete_older_than(
    conn: &mut PgConnection,
    before: time::OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
           SELECT ctid FROM idempotency_keys WHERE create_time < $1 \
           ORDER BY create_time LIMIT $2 FOR UPDATE SKIP LOCKED))",
        before,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
