//! SQL for invitations and batches.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::email::BindingKind;
use crate::domain::{Invitation, State};

/// Every statement that returns invitations returns these, in this order:
/// `domain::Invitation` is decoded by position (`store::rows`), each
/// position's name checked against `COLUMN_NAMES`.
pub(crate) const COLUMNS: &str = "id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time, \
     last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by, \
     binding, binding_digest, abuse_flags, attributes";
/// How many columns `COLUMNS` names (statements that add columns after them
/// read those from this index on).
pub(crate) const COLUMN_COUNT: usize = COLUMN_NAMES.len();
/// The names of `COLUMNS`, in order (a unit test keeps the two the same).
pub(crate) const COLUMN_NAMES: [&str; 21] = [
    "id",
    "code_ciphertext",
    "code_key_id",
    "inviter_id",
    "last_invitee_id",
    "uses",
    "max_uses",
    "create_time",
    "expire_time",
    "last_redeem_time",
    "batch_id",
    "label",
    "note",
    "minted_by",
    "revoke_time",
    "revoke_reason",
    "revoked_by",
    "binding",
    "binding_digest",
    "abuse_flags",
    "attributes",
];

/// Calls `$callback!(..., columns)` with `COLUMNS` as the compile-checked
/// statements spell them: the `query!` macros take only string literals, so
/// the list is handed to them as a token; `binding` and `attributes` name
/// their Rust types, and an empty `code` completes `Invitation`. A unit test
/// keeps it equal to `COLUMNS` (and the `code`).
macro_rules! with_columns {
    ([$($callback:tt)*] ($($head:tt)*)) => {
        $($callback)*!($($head)* r#"id, code_ciphertext, code_key_id, inviter_id, last_invitee_id, uses, max_uses, create_time, expire_time,
     last_redeem_time, batch_id, label, note, minted_by, revoke_time, revoke_reason, revoked_by,
     binding AS "binding: crate::domain::email::BindingKind", binding_digest, abuse_flags,
     attributes AS "attributes: crate::domain::attributes::Attributes", '' AS "code!""#)
    };
}
pub(crate) use with_columns;

/// `query_as!` of a statement returning invitations: `$head`, then
/// `COLUMNS`, then `$tail`, checked at compile time like any `query!`,
/// into `domain::Invitation` (its `code` is filled in later, so an empty
/// one is selected).
macro_rules! invitations_query {
    (@emit $head:tt, $tail:tt, [$($arg:expr),*], $columns:tt) => {
        sqlx::query_as!($crate::domain::Invitation, $head + $columns + $tail $(, $arg)*)
    };
    ($head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        $crate::store::invitations::with_columns!(
            [$crate::store::invitations::invitations_query] (@emit $head, $tail, [$($arg),*],)
        )
    };
}
pub(crate) use invitations_query;

/// A new invitation, before it is stored: its code only as the lookup hash
/// and the sealed form (see `vault`), both under `BatchAttributes::key_id`.
pub struct NewInvitation {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
    pub code_ciphertext: Vec<u8>,
    pub owner: Owner,
}

/// Who an invitation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This inviter, or nobody (unowned).
    Named(Option<String>),
    /// The member at this slot of the transaction's `wave_recipients` table
    /// (`store::waves::draw`).
    WaveSlot(i64),
}

/// What every invitation of one batch shares.
pub struct BatchAttributes<'a> {
    pub id: Uuid,
    pub label: &'a str,
    pub note: &'a str,
    pub minted_by: &'a str,
    pub max_uses: i32,
    pub expire_time: Option<OffsetDateTime>,
    /// The secret the codes' hashes and ciphertexts were made with.
    pub key_id: i32,
    /// Bound invitations: the kind and the salted digest (see `email`).
    pub binding: Option<(BindingKind, Vec<u8>)>,
    /// Carried by every invitation of the batch.
    pub attributes: &'a Attributes,
}

pub async fn insert_batch(conn: &mut PgConnection, batch: &BatchAttributes<'_>, count: i32) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO batches (id, label, note, minted_by, invitation_count, expire_time, max_uses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        batch.id,
        batch.label,
        batch.note,
        batch.minted_by,
        count,
        batch.expire_time,
        batch.max_uses
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts invitations in one statement (all `Named` or all `WaveSlot`);
/// returns the rows inserted. A row whose code collided with an existing
/// one is not inserted (absent from the answer), so the caller can draw a
/// new code for it.
pub async fn insert_invitations(
    conn: &mut PgConnection,
    batch: &BatchAttributes<'_>,
    rows: &[NewInvitation],
) -> Result<Vec<Invitation>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.code_hash.as_slice()).collect();
    let sealed: Vec<&[u8]> = rows.iter().map(|r| r.code_ciphertext.as_slice()).collect();
    let mut inviters: Vec<Option<&str>> = Vec::with_capacity(rows.len());
    let mut slots: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    for row in rows {
        match &row.owner {
            Owner::Named(inviter) => {
                inviters.push(inviter.as_deref());
                slots.push(None);
            }
            Owner::WaveSlot(slot) => {
                inviters.push(None);
                slots.push(Some(*slot));
            }
        }
    }
    // Wave members are joined in from the temporary table, so their ids
    // never leave the database (the table exists only in a wave's
    // transaction, hence the two forms, and runtime SQL).
    let (inviter, wave_join) = if slots.iter().any(Option::is_some) {
        ("w.user_id", "JOIN wave_recipients w ON w.slot = t.slot")
    } else {
        ("t.inviter_id", "")
    };
    sqlx::query_as(&format!(
        "INSERT INTO invitations (id, code_hash, code_ciphertext, inviter_id, batch_id, label, note, minted_by, \
             max_uses, expire_time, binding, binding_digest, code_key_id, attributes) \
         SELECT t.id, t.code_hash, t.code_ciphertext, {inviter}, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
         FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::text[], $5::bigint[]) \
             AS t(id, code_hash, code_ciphertext, inviter_id, slot) {wave_join} \
         ON CONFLICT (code_hash) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(&ids)
    .bind(&hashes)
    .bind(&sealed)
    .bind(&inviters)
    .bind(&slots)
    .bind(batch.id)
    .bind(batch.label)
    .bind(batch.note)
    .bind(batch.minted_by)
    .bind(batch.max_uses)
    .bind(batch.expire_time)
    .bind(batch.binding.as_ref().map(|(kind, _)| *kind))
    .bind(batch.binding.as_ref().map(|(_, digest)| digest.as_slice()))
    .bind(batch.key_id)
    .bind(batch.attributes.to_stored())
    .fetch_all(conn)
    .await
}

/// Gives each invitation its own binding digest (a batch of bindings of one
/// kind to different values: waitlist admissions). One statement.
pub async fn set_binding_digests(
    conn: &mut PgConnection,
    ids: &[Uuid],
    digests: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invitations i SET binding_digest = t.digest \
         FROM unnest($1::uuid[], $2::bytea[]) AS t(id, digest) WHERE i.id = t.id",
        ids,
        digests
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The invitation whose code has one of these lookup hashes (one per
/// configured secret): one probe of the unique `code_hash` index.
pub async fn by_code_hash(conn: &mut PgConnection, hashes: &[Vec<u8>]) -> Result<Option<Invitation>, sqlx::Error> {
    invitations_query!("SELECT ", " FROM invitations WHERE code_hash = ANY($1) LIMIT 1", hashes)
        .fetch_optional(conn)
        .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<Invitation>, sqlx::Error> {
    invitations_query!("SELECT ", " FROM invitations WHERE id = $1", id).fetch_optional(conn).await
}

pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Invitation>, sqlx::Error> {
    invitations_query!("SELECT ", " FROM invitations WHERE id = ANY($1) ORDER BY id", ids).fetch_all(conn).await
}

/// An invitation's state by name, as `Invitation::state` decides it.
pub(crate) const STATE: &str = "CASE WHEN uses >= max_uses THEN 'redeemed' \
     WHEN revoke_time IS NOT NULL THEN 'revoked' \
     WHEN expire_time <= now() THEN 'expired' \
     ELSE 'unspent' END";

pub(crate) fn state_name(state: State) -> &'static str {
    match state {
        State::Unspent => "unspent",
        State::Redeemed => "redeemed",
        State::Revoked => "revoked",
        State::Expired => "expired",
    }
}

/// Spends one use if the invitation is still redeemable and the use is not
/// held by a live reservation. Two statements: the row lock first, so the
/// conditional update's snapshot (and clock) come after every earlier lock
/// holder committed; of many concurrent callers on the last use exactly one
/// gets a row back (docs/design.md, "Reservations").
pub async fn take_use(conn: &mut PgConnection, id: Uuid, invitee_id: &str) -> Result<Option<Invitation>, sqlx::Error> {
    super::reservations::lock_invitation(&mut *conn, id).await?;
    invitations_query!(
        "UPDATE invitations SET uses = uses + 1, last_redeem_time = now(), last_invitee_id = $2 \
         WHERE id = $1 AND revoke_time IS NULL \
           AND (expire_time IS NULL OR expire_time > clock_timestamp()) \
           AND uses + (SELECT count(*) FROM reservations r WHERE r.invitation_id = invitations.id \
                       AND r.status = 'held' AND r.expire_time > clock_timestamp()) < max_uses \
         RETURNING ",
        "",
        id,
        invitee_id
    )
    .fetch_optional(conn)
    .await
}

/// Revokes the named invitations that still have uses left and are not
/// revoked yet; returns the ones it changed. Every revoke here also counts
/// what it changed for stats (`stats::count_revoked`).
pub async fn revoke_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
    reason: &str,
    revoked_by: &str,
) -> Result<Vec<Invitation>, sqlx::Error> {
    let revoked = invitations_query!(
        "UPDATE invitations SET revoke_time = now(), revoke_reason = $2, revoked_by = $3 \
         WHERE id = ANY($1) AND revoke_time IS NULL AND uses < max_uses \
         RETURNING ",
        "",
        ids,
        reason,
        revoked_by
    )
    .fetch_all(&mut *conn)
    .await?;
    super::stats::count_revoked(conn, &revoked).await?;
    Ok(revoked)
}

/// Marks up to `limit` invitations whose expiry passed and that were not
/// swept yet, and returns them (whatever their state: the caller announces
/// only those that expired with uses left). Skips rows a call holds: they
/// are found on the next sweep, so each invitation is swept exactly once.
pub async fn sweep_expired(conn: &mut PgConnection, limit: i64) -> Result<Vec<Invitation>, sqlx::Error> {
    invitations_query!(
        "UPDATE invitations SET expire_swept_time = now() \
         WHERE id IN (SELECT id FROM invitations \
                      WHERE expire_time IS NOT NULL AND expire_swept_time IS NULL \
                        AND expire_time <= clock_timestamp() \
                      ORDER BY expire_time LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING ",
        "",
        limit
    )
    .fetch_all(conn)
    .await
}

/// Revokes every invitation of these owners that could still be redeemed;
/// returns the ones it changed.
pub async fn revoke_unspent_of_all(
    conn: &mut PgConnection,
    owners: &[String],
    reason: &str,
    revoked_by: &str,
) -> Result<Vec<Invitation>, sqlx::Error> {
    let revoked = invitations_query!(
        "UPDATE invitations SET revoke_time = now(), revoke_reason = $2, revoked_by = $3 \
         WHERE inviter_id = ANY($1) AND revoke_time IS NULL AND uses < max_uses \
           AND (expire_time IS NULL OR expire_time > now()) \
         RETURNING ",
        "",
        owners,
        reason,
        revoked_by
    )
    .fetch_all(&mut *conn)
    .await?;
    super::stats::count_revoked(conn, &revoked).await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_list_names_the_decoded_columns_in_order() {
        assert_eq!(COLUMNS, COLUMN_NAMES.join(", "));
    }

    macro_rules! the_literal {
        ($columns:literal) => {
            $columns
        };
    }

    /// The compile-checked statements return the same columns as the
    /// runtime ones, in the same order.
    #[test]
    fn the_checked_column_list_is_the_column_list() {
        let checked: &str = with_columns!([the_literal]());
        let names: Vec<&str> = checked.split(',').map(|c| c.split_whitespace().next().unwrap_or_default()).collect();
        assert_eq!(names[..COLUMN_COUNT], COLUMN_NAMES);
        assert_eq!(names[COLUMN_COUNT..], ["''"]);
        assert!(checked.contains(r#"binding AS "binding: crate::domain::email::BindingKind""#));
    }
}
