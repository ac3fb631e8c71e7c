//! SQL for the quota policies: counting a member's unspent invitations,
//! serializing grants to one member, and the earn policy's schedule
//! (`members.earn_next_time`).

use sqlx::PgConnection;

use super::waves::OPEN;

/// Advisory lock keys for "grants to this member" are the member's id XOR
/// this tag (tree locks use another tag, so the two never collide).
const GRANT_LOCK_TAG: i64 = 0x6772_6e74_0000_0000; // "grnt"

/// The first tick of the earn schedule strictly after now (and at least one
/// interval after joining), for `join_time`; `$1` is the interval in seconds.
/// Ticks fall on join_time + k·interval.
const FIRST_TICK: &str = "join_time + make_interval(secs => $1) \
     * greatest(floor(extract(epoch FROM now() - join_time) / $1) + 1, 1)";

/// Serializes grants to one member until the transaction ends: two
/// concurrent redeems of the same inviter's invitations each top up after
/// seeing the other's grants, never both from the same count.
pub async fn lock_grants(conn: &mut PgConnection, member_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", member_id ^ GRANT_LOCK_TAG).fetch_one(conn).await?;
    Ok(())
}

/// Unspent invitations the user owns right now (from the open-invitation
/// index).
/// Runtime SQL, as every statement here that splices `OPEN` (shared with the
/// common path and the index) or `FIRST_TICK` (shared with `inv_redeem`'s
/// schedule).
pub async fn unspent_count(conn: &mut PgConnection, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM invitations i WHERE i.inviter_id = $1 AND {OPEN}"))
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Of these users, those whose invite privileges are enabled, sorted.
pub async fn enabled_among(conn: &mut PgConnection, user_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT user_id FROM members WHERE user_id = ANY($1) AND invite_enabled ORDER BY user_id",
        user_ids
    )
    .fetch_all(conn)
    .await
}

/// Starts the earn schedule of members who just joined.
pub async fn schedule(conn: &mut PgConnection, user_ids: &[String], interval_secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE members SET earn_next_time = {FIRST_TICK} WHERE user_id = ANY($2) AND join_time IS NOT NULL"
    ))
    .bind(interval_secs)
    .bind(user_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules up to `limit` members who joined while the earn policy was off
/// (their first tick after now: no grants for the past); returns how many.
pub async fn schedule_unscheduled(conn: &mut PgConnection, interval_secs: f64, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE members SET earn_next_time = {FIRST_TICK} \
         WHERE id IN (SELECT id FROM members WHERE earn_next_time IS NULL AND join_time IS NOT NULL \
                      ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)"
    ))
    .bind(interval_secs)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A member whose earn tick came.
#[derive(sqlx::FromRow)]
pub struct Due {
    pub user_id: String,
    pub invite_enabled: bool,
    /// Unspent invitations, counted after the member's row was locked.
    pub unspent: i64,
}

/// Takes up to `limit` members whose tick came (skipping rows other calls
/// hold, which a later pass finds), moves each one's schedule to its next
/// tick after now, and returns them with their unspent counts. Two
/// statements: the row locks first, so the count's snapshot comes after
/// every grant that held the row (a Redeem's refill holds it `FOR SHARE`).
pub async fn take_due(conn: &mut PgConnection, interval_secs: f64, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM members WHERE earn_next_time <= now() \
         ORDER BY earn_next_time LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(vec![]);
    }
    sqlx::query_as(&format!(
        "UPDATE members m SET earn_next_time = {FIRST_TICK} WHERE m.id = ANY($2) \
         RETURNING m.user_id, m.invite_enabled, \
             (SELECT count(*) FROM invitations i WHERE i.inviter_id = m.user_id AND {OPEN}) AS unspent"
    ))
    .bind(interval_secs)
    .bind(&ids)
    .fetch_all(conn)
    .await
}
