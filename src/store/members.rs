//! SQL for members: the users the service knows, when they joined, whether
//! they appear in the public invite tree, and their invite privileges. Every
//! insert into `members` goes through this module (and `graph` for invitees),
//! so columns the service maintains per member are always set.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// Registers users the service has not seen yet, without a join time (the
/// owners of minted invitations). Idempotent.
pub async fn ensure(conn: &mut PgConnection, user_ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO members (user_id) SELECT unnest($1::text[]) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// One member as RegisterMembers names it; `None` fields leave a known
/// member's value as it is.
pub struct Registration {
    pub user_id: String,
    pub join_time: Option<OffsetDateTime>,
    pub hidden: Option<bool>,
}

struct Columns {
    user_ids: Vec<String>,
    join_times: Vec<Option<OffsetDateTime>>,
    hidden: Vec<Option<bool>>,
}

fn columns(registrations: &[Registration]) -> Columns {
    Columns {
        user_ids: registrations.iter().map(|r| r.user_id.clone()).collect(),
        join_times: registrations.iter().map(|r| r.join_time).collect(),
        hidden: registrations.iter().map(|r| r.hidden).collect(),
    }
}

/// Inserts the members not known yet (join time: as given, else now);
/// returns their user ids. Waits for concurrent inserts of the same users,
/// so after it every named user exists and is visible to the next statement.
pub async fn insert_new(conn: &mut PgConnection, registrations: &[Registration]) -> Result<Vec<String>, sqlx::Error> {
    let c = columns(registrations);
    sqlx::query_scalar(
        "INSERT INTO members (user_id, join_time, hidden) \
         SELECT t.user_id, coalesce(t.join_time, now()), coalesce(t.hidden, false) \
         FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS t(user_id, join_time, hidden) \
         ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
    )
    .bind(&c.user_ids)
    .bind(&c.join_times)
    .bind(&c.hidden)
    .fetch_all(conn)
    .await
}

/// Applies the given join times and visibility to members that already
/// existed (not those in `created`); a member who joined through Redeem keeps
/// its redeem time. Returns how many rows actually changed.
pub async fn update_known(
    conn: &mut PgConnection,
    registrations: &[Registration],
    created: &[String],
) -> Result<u64, sqlx::Error> {
    let c = columns(registrations);
    let done = sqlx::query(
        "WITH t AS ( \
             SELECT user_id, join_time, hidden \
             FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS t(user_id, join_time, hidden) \
             WHERE NOT (user_id = ANY($4::text[]))), \
         target AS ( \
             SELECT m.user_id, \
                    CASE WHEN m.invitation_id IS NULL THEN coalesce(t.join_time, m.join_time) \
                         ELSE m.join_time END AS join_time, \
                    coalesce(t.hidden, m.hidden) AS hidden \
             FROM members m JOIN t ON t.user_id = m.user_id) \
         UPDATE members m SET join_time = target.join_time, hidden = target.hidden \
         FROM target \
         WHERE m.user_id = target.user_id \
           AND (m.join_time IS DISTINCT FROM target.join_time OR m.hidden <> target.hidden)",
    )
    .bind(&c.user_ids)
    .bind(&c.join_times)
    .bind(&c.hidden)
    .bind(created)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
