//! SQL for members: the users the service knows, when they joined, whether
//! they appear in the public invite tree, and their invite privileges. Every
//! insert into `members` goes through this module (and `graph` for invitees),
//! so columns the service maintains per member are always set.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// New members get a fresh numeric id and a path of just that id: a new
/// member is the root of its own tree until it redeems (docs/design.md,
/// "Graph storage"). `nextval` sits in a subquery that is evaluated once per
/// row, so `id` and `path` get the same value. Runtime SQL: one insert for
/// the three sources of new members, so no insert forgets a column.
fn insert_new_members(source: &str, columns: &str, values: &str) -> String {
    format!(
        "INSERT INTO members (id, path, user_id{columns}) \
         SELECT n.id, ARRAY[n.id], n.user_id{values} \
         FROM (SELECT nextval('members_id_seq') AS id, t.* FROM {source}) n \
         ON CONFLICT (user_id) DO NOTHING"
    )
}

/// Registers users the service has not seen yet, without a join time (the
/// owners of minted invitations). Idempotent.
pub async fn ensure(conn: &mut PgConnection, user_ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(&insert_new_members("unnest($1::text[]) AS t(user_id)", "", "")).bind(user_ids).execute(conn).await?;
    Ok(())
}

/// Registers the user if new (without a join time); returns its numeric id.
/// Takes no lock on an existing row; a new row stays invisible to others
/// until the transaction commits.
pub async fn ensure_one(conn: &mut PgConnection, user_id: &str) -> Result<i64, sqlx::Error> {
    let sql = insert_new_members("(SELECT $1::text AS user_id) t", "", "") + " RETURNING id";
    let inserted: Option<i64> = sqlx::query_scalar(&sql).bind(user_id).fetch_optional(&mut *conn).await?;
    match inserted {
        Some(id) => Ok(id),
        None => sqlx::query_scalar!("SELECT id FROM members WHERE user_id = $1", user_id).fetch_one(conn).await,
    }
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
    let sql = insert_new_members(
        "unnest($1::text[], $2::timestamptz[], $3::bool[]) AS t(user_id, join_time, hidden)",
        ", join_time, hidden",
        ", coalesce(n.join_time, now()), coalesce(n.hidden, false)",
    ) + " RETURNING user_id";
    sqlx::query_scalar(&sql).bind(&c.user_ids).bind(&c.join_times).bind(&c.hidden).fetch_all(conn).await
}

/// Applies the given join times and visibility to members that already
/// existed (not those in `created`); a member who joined through Redeem keeps
/// its redeem time. Returns the members that actually changed, each with
/// whether it joined just now (had no join time before).
pub async fn update_known(
    conn: &mut PgConnection,
    registrations: &[Registration],
    created: &[String],
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    let c = columns(registrations);
    let rows = sqlx::query!(
        r#"WITH t AS (
             SELECT user_id, join_time, hidden
             FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS t(user_id, join_time, hidden)
             WHERE NOT (user_id = ANY($4::text[]))),
         target AS (
             SELECT m.user_id,
                    CASE WHEN m.invitation_id IS NULL THEN coalesce(t.join_time, m.join_time)
                         ELSE m.join_time END AS join_time,
                    coalesce(t.hidden, m.hidden) AS hidden,
                    m.join_time IS NULL AS joining
             FROM members m JOIN t ON t.user_id = m.user_id)
         UPDATE members m SET join_time = target.join_time, hidden = target.hidden
         FROM target
         WHERE m.user_id = target.user_id
           AND (m.join_time IS DISTINCT FROM target.join_time OR m.hidden <> target.hidden)
         RETURNING m.user_id, target.joining AND m.join_time IS NOT NULL AS "joined!""#,
        &c.user_ids,
        &c.join_times as &[Option<OffsetDateTime>],
        &c.hidden as &[Option<bool>],
        created
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.joined)).collect())
}

/// The first of these users (by id) whose invite privileges are disabled.
pub async fn first_disabled(conn: &mut PgConnection, user_ids: &[String]) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT user_id FROM members WHERE user_id = ANY($1) AND NOT invite_enabled ORDER BY user_id LIMIT 1",
        user_ids,
    )
    .fetch_optional(conn)
    .await
}

/// Whether the user may hand out invitations (unknown users may: nothing
/// disabled them).
pub async fn invite_enabled(conn: &mut PgConnection, user_id: &str) -> Result<bool, sqlx::Error> {
    let enabled = sqlx::query_scalar!("SELECT invite_enabled FROM members WHERE user_id = $1", user_id)
        .fetch_optional(conn)
        .await?;
    Ok(enabled.unwrap_or(true))
}

/// Records a change of invite privileges (the caller checked it is one).
pub async fn set_privileges(
    conn: &mut PgConnection,
    id: i64,
    enabled: bool,
    reason: &str,
    updated_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE members SET invite_enabled = $2, invite_reason = $3, invite_update_time = now(), \
             invite_updated_by = $4 WHERE id = $1",
        id,
        enabled,
        reason,
        updated_by,
    )
    .execute(conn)
    .await?;
    Ok(())
}
