//! SQL of an invitation's edits and restores (UpdateInvitation,
//! RestoreInvitation): admin calls, each an ordinary transaction that takes
//! the invitation's row lock first, so it is ordered with every Redeem and
//! Reserve of that invitation (they take the same lock before they spend or
//! hold a use; `reservations::lock_invitation`). The statements are built
//! at run time because they return `invitations::COLUMNS` (decoded by
//! position) and read `reservations::LIVE_COUNT`, shared with those paths.

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::invitations::{COLUMN_COUNT, COLUMNS};
use crate::domain::Invitation;
use crate::domain::attributes::Attributes;

/// An invitation under its row lock, with what the checks need.
pub struct Locked {
    pub invitation: Invitation,
    /// Uses held by live reservations.
    pub held: i64,
    /// The database clock (expiry is judged by it, as everywhere).
    pub now: OffsetDateTime,
    /// The owner's invite privileges (true for unowned invitations).
    pub owner_enabled: bool,
}

/// Locks the invitation (`FOR UPDATE`: it conflicts with the `FOR NO KEY
/// UPDATE` the spending paths take) and reads it with its live
/// reservations, after every earlier lock holder committed. Runtime SQL:
/// its columns after `COLUMNS` are read by position (`Invitation`'s row).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Locked>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, {live} AS held, clock_timestamp() AS now, \
             coalesce((SELECT invite_enabled FROM members m WHERE m.user_id = invitations.inviter_id), true) \
         FROM invitations WHERE id = $1 FOR UPDATE",
        live = super::reservations::LIVE_COUNT
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Locked {
        invitation: sqlx::FromRow::from_row(&row)?,
        held: row.try_get(COLUMN_COUNT)?,
        now: row.try_get(COLUMN_COUNT + 1)?,
        owner_enabled: row.try_get(COLUMN_COUNT + 2)?,
    }))
}

/// The editable fields, all of them (the service fills in the unchanged).
pub struct Edit<'a> {
    pub expire_time: Option<OffsetDateTime>,
    pub max_uses: i32,
    pub label: &'a str,
    pub note: &'a str,
    pub attributes: &'a Attributes,
    /// A new expiry is swept again when it passes (its `expired` event).
    pub expiry_changed: bool,
}

/// Writes an edit of a locked invitation, and counts it in the stats when
/// the new max_uses makes it fully spent.
pub async fn apply(conn: &mut PgConnection, id: Uuid, edit: &Edit<'_>) -> Result<Invitation, sqlx::Error> {
    let updated: Invitation = super::invitations::invitations_query!(
        "UPDATE invitations SET expire_time = $2, max_uses = $3, label = $4, note = $5, attributes = $6, \
             expire_swept_time = CASE WHEN $7 THEN NULL ELSE expire_swept_time END \
         WHERE id = $1 RETURNING ",
        "",
        id,
        edit.expire_time,
        edit.max_uses,
        edit.label,
        edit.note,
        &edit.attributes.to_stored(),
        edit.expiry_changed
    )
    .fetch_one(&mut *conn)
    .await?;
    if updated.uses >= updated.max_uses {
        sqlx::query!(
            "INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses) VALUES ($1, 0, 1, 0, 0)",
            updated.batch_id
        )
        .execute(conn)
        .await?;
    }
    Ok(updated)
}

/// Un-revokes a locked, revoked invitation, and takes it out of its
/// batch's revoked count.
pub async fn restore(conn: &mut PgConnection, id: Uuid) -> Result<Invitation, sqlx::Error> {
    let restored: Invitation = super::invitations::invitations_query!(
        "UPDATE invitations SET revoke_time = NULL, revoke_reason = NULL, revoked_by = NULL \
         WHERE id = $1 RETURNING ",
        "",
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses) VALUES ($1, 0, 0, -1, 0)",
        restored.batch_id
    )
    .execute(conn)
    .await?;
    Ok(restored)
}
