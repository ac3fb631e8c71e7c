//! SQL of CreateMemberInvitation: the member's limits read under a
//! per-member lock, so concurrent creates for one member (from any number
//! of replicas on one database) are counted one after the other.

use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

/// `minted_by` of every invitation a member created this way (the rate
/// counts these).
pub const MINTED_BY: &str = "member";

/// What the limits are checked against, read after the lock.
pub struct MemberState {
    pub join_time: Option<OffsetDateTime>,
    pub enabled: bool,
    /// Invitations the member owns that can still be redeemed (any origin).
    pub unspent: i64,
    /// Created by the member within the rate period, and the oldest of those.
    pub recent: i64,
    pub oldest_recent: Option<OffsetDateTime>,
    pub now: OffsetDateTime,
}

/// Takes the member's transaction-scoped advisory lock (a lock of its own,
/// so it never waits on a Redeem holding the member's row) and reads its
/// state; None for an unknown member.
pub async fn lock_and_read(
    conn: &mut PgConnection,
    user_id: &str,
    period_secs: f64,
) -> Result<Option<MemberState>, sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('member-mint:' || $1, 0))", user_id)
        .fetch_one(&mut *conn)
        .await?;
    // Built at run time: the unspent test is the waves' shared `OPEN`.
    let row = sqlx::query(&format!(
        "SELECT m.join_time, m.invite_enabled, \
             (SELECT count(*) FROM invitations i WHERE i.inviter_id = m.user_id AND {open}) AS unspent, \
             (SELECT count(*) FROM invitations i WHERE i.inviter_id = m.user_id AND i.minted_by = $2 \
                  AND i.create_time > clock_timestamp() - make_interval(secs => $3)) AS recent, \
             (SELECT min(create_time) FROM invitations i WHERE i.inviter_id = m.user_id AND i.minted_by = $2 \
                  AND i.create_time > clock_timestamp() - make_interval(secs => $3)) AS oldest_recent, \
             clock_timestamp() AS now \
         FROM members m WHERE m.user_id = $1",
        open = super::waves::OPEN
    ))
    .bind(user_id)
    .bind(MINTED_BY)
    .bind(period_secs)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(MemberState {
        join_time: row.try_get("join_time")?,
        enabled: row.try_get("invite_enabled")?,
        unspent: row.try_get("unspent")?,
        recent: row.try_get("recent")?,
        oldest_recent: row.try_get("oldest_recent")?,
        now: row.try_get("now")?,
    }))
}
