//! SQL for waves: which members a selector matches, drawn at random, kept in
//! a temporary table of the wave's transaction so that the member ids never
//! travel to the service and back (docs/design.md, "Waves").

use sqlx::PgConnection;

use crate::domain::selector::Selector;

/// The open-invitation test (not revoked, uses left, not expired) on `i`:
/// an invitation in state UNSPENT. `invitations_open_inviter_idx` holds
/// exactly the rows that pass its first two terms.
pub(crate) const OPEN: &str =
    "i.revoke_time IS NULL AND i.uses < i.max_uses AND (i.expire_time IS NULL OR i.expire_time > now())";

/// The members `selector` matches, as a condition on `members m`; `$1` is
/// the selector's age in seconds. Each test is answered from an index per
/// member (or one pass over an index), never a scan of invitations per
/// member (docs/performance.md has the plans).
fn matching(selector: Selector) -> String {
    let test = match selector {
        Selector::NoUnspentInvitation => {
            format!("NOT EXISTS (SELECT 1 FROM invitations i WHERE i.inviter_id = m.user_id AND {OPEN})")
        }
        Selector::NeverIssued { .. } => "m.join_time <= now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM invitations i WHERE i.inviter_id = m.user_id)"
            .to_owned(),
        Selector::LastRedeemed { .. } => "m.user_id IN (SELECT r.inviter_id FROM redemptions r \
             WHERE r.inviter_id IS NOT NULL GROUP BY r.inviter_id \
             HAVING max(r.redeem_time) <= now() - make_interval(secs => $1))"
            .to_owned(),
    };
    // `$1 IS NOT NULL` keeps the parameter typed for every selector.
    format!("m.invite_enabled AND $1::float8 IS NOT NULL AND {test}")
}

fn age_seconds(selector: Selector) -> f64 {
    match selector {
        Selector::NoUnspentInvitation => 0.0,
        Selector::NeverIssued { joined_at_least: age } | Selector::LastRedeemed { at_least: age } => {
            age.as_seconds_f64()
        }
    }
}

/// A member drawn for a wave and erased before its invitation was inserted
/// (EraseMember renames it under its row lock): the inviter's foreign key
/// fails, and a new draw finds the tombstone instead.
pub fn is_erased_recipient(e: &sqlx::Error) -> bool {
    super::is_constraint_violation(e, "invitations_inviter_id_fkey")
}

/// A dry run: how many members match, and up to `limit` of them drawn at
/// random.
pub async fn sample(
    conn: &mut PgConnection,
    selector: Selector,
    limit: i64,
) -> Result<(i64, Vec<String>), sqlx::Error> {
    // Runtime SQL: the criteria (`matching`) are the wave's own.
    let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT m.user_id, count(*) OVER () FROM members m WHERE {} ORDER BY random() LIMIT $2",
        matching(selector)
    ))
    .bind(age_seconds(selector))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    // `limit` is at least 1, so any match leaves a row carrying the count.
    let matched = rows.first().map_or(0, |(_, n)| *n);
    Ok((matched, rows.into_iter().map(|(user_id, _)| user_id).collect()))
}

/// Draws the wave's recipients into `pg_temp.wave_recipients (slot, user_id)`
/// (slots 1..=n, dropped at commit); returns how many members matched and
/// how many were drawn (at most `count`).
pub async fn draw(conn: &mut PgConnection, selector: Selector, count: i64) -> Result<(i64, i64), sqlx::Error> {
    // Runtime SQL: the macros check against the migrated schema, where this
    // temporary table does not exist (true of every wave_recipients statement).
    sqlx::query(
        "CREATE TEMP TABLE wave_recipients (slot bigint NOT NULL, user_id text NOT NULL, matched bigint) \
         ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO wave_recipients (slot, user_id, matched) \
         SELECT row_number() OVER (), s.user_id, s.matched \
         FROM (SELECT m.user_id, count(*) OVER () AS matched FROM members m WHERE {} \
               ORDER BY random() LIMIT $2) s",
        matching(selector)
    ))
    .bind(age_seconds(selector))
    .bind(count)
    .execute(&mut *conn)
    .await?;
    // Each chunk's insert joins on slot: an index, and statistics so the
    // planner uses it.
    sqlx::query("ALTER TABLE wave_recipients ADD PRIMARY KEY (slot)").execute(&mut *conn).await?;
    sqlx::query("ANALYZE wave_recipients").execute(&mut *conn).await?;
    sqlx::query_as("SELECT coalesce(max(matched), 0), count(*) FROM wave_recipients").fetch_one(conn).await
}

/// Up to `limit` of the drawn recipients (for the answer).
pub async fn recipients(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM wave_recipients ORDER BY slot LIMIT $1").bind(limit).fetch_all(conn).await
}
