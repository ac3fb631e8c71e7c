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
/// member). Bounded by `--request-id-retention` (`sweep_request_ids`).
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

/// A waitlist applicant that never became a member, with its entry and the
/// invitation it was admitted with (if any) locked, in Redeem's order
/// (the invitation first, then the entry).
pub struct Applicant {
    pub entry_id: Uuid,
    pub invitation_id: Option<Uuid>,
}

/// Locks the applicant's entry and its admitted invitation:
/// [`Locked::None`] when no entry has this applicant id, [`Locked::Moved`]
/// when the entry changed between the two reads (the caller starts again).
pub async fn lock_applicant(conn: &mut PgConnection, applicant_id: &str) -> Result<Locked, sqlx::Error> {
    let seen = sqlx::query_scalar!("SELECT invitation_id FROM waitlist_entries WHERE applicant_id = $1", applicant_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(seen) = seen else { return Ok(Locked::None) };
    if let Some(id) = seen {
        sqlx::query_scalar!("SELECT id FROM invitations WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let row =
        sqlx::query!("SELECT id, invitation_id FROM waitlist_entries WHERE applicant_id = $1 FOR UPDATE", applicant_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some(r) if r.invitation_id == seen => Locked::Applicant(Applicant { entry_id: r.id, invitation_id: seen }),
        _ => Locked::Moved,
    })
}

pub enum Locked {
    None,
    Applicant(Applicant),
    /// Admitted or erased between the reads: start again.
    Moved,
}

/// Whether `user_id` is a member (re-read under the applicant's locks: a
/// redeem that committed first made it one).
pub async fn is_member(conn: &mut PgConnection, user_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM members WHERE user_id = $1) AS "member!""#, user_id)
        .fetch_one(conn)
        .await
}

/// Takes an erased applicant's entry out of the line: nobody could redeem
/// an invitation admitted for a tombstone. The line's counters follow the
/// state (the 0062 trigger).
pub async fn withdraw_entry(conn: &mut PgConnection, entry_id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE waitlist_entries SET state = 'rejected', review_time = now(), review_reason = $2 \
         WHERE id = $1 AND state IN ('waiting', 'approved')",
        entry_id,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}
