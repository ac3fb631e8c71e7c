//! SQL for the abuse controls: hashed IP prefixes of recent redemptions,
//! failed-attempt counters, the flags recorded on redemptions, and the
//! tidying that deletes what has outlived its window.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// What the IP checks found among redemptions since `since`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpSeen {
    /// Some redemption came from this prefix.
    pub reused: bool,
    /// The inviter's own redemption came from this prefix.
    pub inviter: bool,
}

/// Looks for the prefix (one hash per configured secret) among redemptions
/// newer than `since`: anyone's, and the inviter's.
pub async fn ip_seen(
    conn: &mut PgConnection,
    ip_hashes: &[Vec<u8>],
    inviter_id: Option<&str>,
    since: OffsetDateTime,
) -> Result<IpSeen, sqlx::Error> {
    sqlx::query_as!(
        IpSeen,
        r#"SELECT EXISTS (SELECT 1 FROM redemption_ips WHERE ip_hash = ANY($1) AND redeem_time > $3) AS "reused!",
                  EXISTS (SELECT 1 FROM redemption_ips WHERE invitee_id = $2 AND ip_hash = ANY($1)
                          AND redeem_time > $3) AS "inviter!""#,
        ip_hashes,
        inviter_id,
        since,
    )
    .fetch_one(conn)
    .await
}

/// Records the hashed IP prefix of the invitee's redemption (an invitee has
/// at most one).
pub async fn insert_redemption_ip(
    conn: &mut PgConnection,
    invitee_id: &str,
    ip_hash: &[u8],
    key_id: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO redemption_ips (redemption_id, invitee_id, ip_hash, key_id) \
         SELECT id, invitee_id, $2, $3 FROM redemptions WHERE invitee_id = $1",
        invitee_id,
        ip_hash,
        key_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records flags on the invitee's redemption and adds them to its invitation's.
pub async fn record_flags(conn: &mut PgConnection, invitee_id: &str, flags: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH r AS (UPDATE redemptions SET abuse_flags = $2 WHERE invitee_id = $1 RETURNING invitation_id) \
         UPDATE invitations i SET abuse_flags = ARRAY(SELECT DISTINCT unnest(i.abuse_flags || $2::text[]) ORDER BY 1) \
         FROM r WHERE i.id = r.invitation_id",
        invitee_id,
        flags as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The most failures any of `keys` has in the window starting at `window_start`.
pub async fn most_failures(
    conn: &mut PgConnection,
    keys: &[Vec<u8>],
    window_start: OffsetDateTime,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(max(failures), 0) AS "failures!" FROM attempt_counters
           WHERE key_hash = ANY($1) AND window_start = $2"#,
        keys,
        window_start,
    )
    .fetch_one(conn)
    .await
}

/// Counts one failure for each key in the window (one statement, autocommit:
/// it must stick although the call itself fails).
pub async fn add_failure(
    conn: &mut PgConnection,
    keys: &[Vec<u8>],
    window_start: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO attempt_counters (key_hash, window_start, failures) SELECT k, $2, 1 FROM unnest($1::bytea[]) k \
         ON CONFLICT (key_hash, window_start) DO UPDATE SET failures = attempt_counters.failures + 1",
        keys,
        window_start,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes IP hashes older than `ips_before` and counters whose window
/// started before `counters_before`; how many rows of each went.
pub async fn sweep(
    conn: &mut PgConnection,
    ips_before: OffsetDateTime,
    counters_before: OffsetDateTime,
) -> Result<(u64, u64), sqlx::Error> {
    let ips =
        sqlx::query!("DELETE FROM redemption_ips WHERE redeem_time <= $1", ips_before).execute(&mut *conn).await?;
    let counters =
        sqlx::query!("DELETE FROM attempt_counters WHERE window_start < $1", counters_before).execute(conn).await?;
    Ok((ips.rows_affected(), counters.rows_affected()))
}

/// How often each flag was raised, over all redemptions (for stats).
pub async fn flag_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    super::stats::flag_counts(conn, &super::stats::Filter::all()).await
}

pub async fn redemption_flags(conn: &mut PgConnection, invitee_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let flags = sqlx::query_scalar!("SELECT abuse_flags FROM redemptions WHERE invitee_id = $1", invitee_id)
        .fetch_optional(conn)
        .await?;
    Ok(flags.unwrap_or_default())
}
