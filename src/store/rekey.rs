//! SQL for moving what is kept at rest onto the current secret: rows that
//! still hold a plaintext code (from before codes were sealed), and codes and
//! stored answers sealed under a previous secret. Every batch locks its rows
//! with `SKIP LOCKED`, so replicas converting at the same time (and calls
//! redeeming meanwhile) never wait on each other or convert a row twice.

use sqlx::PgConnection;
use uuid::Uuid;

/// A code to rewrite: plaintext (legacy) or sealed under `key_id`.
pub struct StoredCode {
    pub id: Uuid,
    pub plaintext: Option<String>,
    pub key_id: Option<i32>,
    pub ciphertext: Option<Vec<u8>>,
}

/// Up to `limit` codes that are plaintext or sealed under one of `old_key_ids`.
pub async fn codes_to_rekey(
    conn: &mut PgConnection,
    old_key_ids: &[i32],
    limit: i64,
) -> Result<Vec<StoredCode>, sqlx::Error> {
    sqlx::query_as!(
        StoredCode,
        "SELECT id, code AS plaintext, code_key_id AS key_id, code_ciphertext AS ciphertext FROM invitations \
         WHERE code IS NOT NULL OR code_key_id = ANY($1) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        old_key_ids,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Stores codes sealed under `key_id` and clears any plaintext.
pub async fn set_sealed_codes(
    conn: &mut PgConnection,
    key_id: i32,
    ids: &[Uuid],
    hashes: &[Vec<u8>],
    ciphertexts: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invitations i SET code = NULL, code_hash = t.h, code_ciphertext = t.c, code_key_id = $4 \
         FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS t(id, h, c) WHERE i.id = t.id",
        ids,
        hashes,
        ciphertexts,
        key_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored idempotent answer to rewrite (plaintext when `key_id` is None).
pub struct StoredAnswer {
    pub method: String,
    pub request_id: String,
    pub key_id: Option<i32>,
    pub response: Vec<u8>,
}

pub async fn answers_to_rekey(
    conn: &mut PgConnection,
    old_key_ids: &[i32],
    limit: i64,
) -> Result<Vec<StoredAnswer>, sqlx::Error> {
    sqlx::query_as!(
        StoredAnswer,
        "SELECT method, request_id, response_key_id AS key_id, response FROM idempotency_keys \
         WHERE response_key_id IS NULL OR response_key_id = ANY($1) \
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        old_key_ids,
        limit,
    )
    .fetch_all(conn)
    .await
}

pub async fn set_sealed_answer(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    key_id: i32,
    response: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET response = $3, response_key_id = $4 WHERE method = $1 AND request_id = $2",
        method,
        request_id,
        response,
        key_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What is still not under the current secret: codes and answers sealed
/// under a secret that is not configured (unreadable until it is), and the
/// ones under configured previous secrets or in plaintext (rekey's work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub codes: i64,
    pub answers: i64,
    pub unknown_key_codes: i64,
    pub unknown_key_answers: i64,
}

pub async fn remaining(conn: &mut PgConnection, current: i32, known: &[i32]) -> Result<Remaining, sqlx::Error> {
    sqlx::query_as!(
        Remaining,
        r#"SELECT
             (SELECT count(*) FROM invitations WHERE code IS NOT NULL OR code_key_id <> $1) AS "codes!",
             (SELECT count(*) FROM idempotency_keys WHERE response_key_id IS DISTINCT FROM $1) AS "answers!",
             (SELECT count(*) FROM invitations WHERE code_key_id <> ALL($2)) AS "unknown_key_codes!",
             (SELECT count(*) FROM idempotency_keys WHERE response_key_id <> ALL($2)) AS "unknown_key_answers!""#,
        current,
        known,
    )
    .fetch_one(conn)
    .await
}
