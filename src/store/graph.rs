//! SQL that reads the invite graph: member nodes, ancestors, pages of the
//! depth-first order, counts, and the redemption edges. The structure is the
//! materialized path `members.path` (docs/design.md, "Graph storage"): the
//! ids from the root down to the member, so ancestors are one lookup by id
//! and a subtree is one range of the path index. What changes the structure
//! (locks, moves, counts) is in `tree`.

use sqlx::PgConnection;
use uuid::Uuid;

use super::rows::MemberRow;
use crate::domain::{Invitation, Member};

/// `query_as!` of a member node (with whether its inviter is hidden, for
/// the public view) followed by `$tail`: the macros take only literals, so
/// the shared select list is spliced here, at compile time.
macro_rules! member_node {
    // `with $head`: a CTE before the select, which the tail joins.
    (with $head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            MemberRow,
            $head + r#" SELECT m.id, m.user_id, m.inviter_id, m.join_time, m.invitation_id, m.path, m.hidden,
                 coalesce(p.hidden, false) AS "parent_hidden!",
                 m.invite_enabled, m.invite_reason, m.invite_update_time, m.invite_updated_by
               FROM members m LEFT JOIN members p ON p.id = m.path[cardinality(m.path) - 1] "# + $tail
            $(, $arg)*
        )
    };
    ($tail:tt $(, $arg:expr)* $(,)?) => {
        member_node!(with "", $tail $(, $arg)*)
    };
}

pub async fn member(conn: &mut PgConnection, user_id: &str) -> Result<Option<Member>, sqlx::Error> {
    let row = member_node!("WHERE m.user_id = $1", user_id).fetch_optional(conn).await?;
    Ok(row.map(Member::from))
}

/// Locks the member's row (`FOR UPDATE`) until the transaction ends.
pub async fn lock_member(conn: &mut PgConnection, user_id: &str) -> Result<Option<Member>, sqlx::Error> {
    let row = member_node!("WHERE m.user_id = $1 FOR UPDATE OF m", user_id).fetch_optional(conn).await?;
    Ok(row.map(Member::from))
}

/// Reads the member under a `FOR SHARE` lock: its path and privileges cannot
/// change until the transaction ends.
pub async fn share_member(conn: &mut PgConnection, user_id: &str) -> Result<Option<Member>, sqlx::Error> {
    let row = member_node!("WHERE m.user_id = $1 FOR SHARE OF m", user_id).fetch_optional(conn).await?;
    Ok(row.map(Member::from))
}

/// The member and its ancestors, root first (the member itself last), in
/// one statement; empty for an unknown user. Each one's inviter is the one
/// before it, so `parent_hidden` is filled from the chain, not by a join.
pub async fn lineage(conn: &mut PgConnection, user_id: &str) -> Result<Vec<Member>, sqlx::Error> {
    let rows = sqlx::query_as!(
        MemberRow,
        r#"SELECT m.id, m.user_id, m.inviter_id, m.join_time, m.invitation_id, m.path, m.hidden,
             false AS "parent_hidden!", m.invite_enabled, m.invite_reason, m.invite_update_time, m.invite_updated_by
           FROM members m WHERE m.id = ANY((SELECT path FROM members WHERE user_id = $1)::bigint[])
           ORDER BY cardinality(m.path)"#,
        user_id
    )
    .fetch_all(conn)
    .await?;
    let mut chain: Vec<Member> = rows.into_iter().map(Member::from).collect();
    for i in 1..chain.len() {
        chain[i].parent_hidden = chain[i - 1].hidden;
    }
    Ok(chain)
}

/// The root of a member's tree (its path's first id), read without a lock.
pub async fn root_of(conn: &mut PgConnection, user_id: &str) -> Result<Option<i64>, sqlx::Error> {
    let root = sqlx::query_scalar!("SELECT path[1] AS root FROM members WHERE user_id = $1", user_id);
    root.fetch_optional(conn).await.map(Option::flatten)
}

pub async fn path_of(conn: &mut PgConnection, id: i64) -> Result<Option<Vec<i64>>, sqlx::Error> {
    sqlx::query_scalar!("SELECT path FROM members WHERE id = $1", id).fetch_optional(conn).await
}

/// Up to `limit` direct invitees of a user whose paths sort after `after`,
/// in sibling order (as in `page`), from the `(inviter_id, path)` index.
/// They share one parent, so its visibility comes from the caller instead
/// of a join per row.
pub async fn invitees_page(
    conn: &mut PgConnection,
    inviter: &Member,
    after: &[i64],
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    let rows = sqlx::query_as!(
        MemberRow,
        r#"SELECT m.id, m.user_id, m.inviter_id, m.join_time, m.invitation_id, m.path, m.hidden,
             $2::bool AS "parent_hidden!", m.invite_enabled, m.invite_reason, m.invite_update_time, m.invite_updated_by
           FROM members m WHERE m.inviter_id = $1 AND m.path > $3 ORDER BY m.path LIMIT $4"#,
        inviter.user_id,
        inviter.hidden,
        after,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Member::from).collect())
}

/// Up to `limit` members in depth-first order (siblings by id) with paths in
/// `[from, to)`, leaving out every member whose path is longer than
/// `max_len` without scanning their subtrees: a member at `max_len` makes the
/// next probe jump past its subtree (one index probe per row returned).
/// `from` must not point into the subtree of a member at `max_len` (the
/// bounds from `tree::after` never do).
pub async fn page(
    conn: &mut PgConnection,
    from: &[i64],
    to: &[i64],
    max_len: Option<i32>,
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    let Some(max_len) = max_len else {
        let rows = member_node!("WHERE m.path >= $1 AND m.path < $2 ORDER BY m.path LIMIT $3", from, to, limit)
            .fetch_all(conn)
            .await?;
        return Ok(rows.into_iter().map(Member::from).collect());
    };
    let rows = member_node!(
        with r#"WITH RECURSIVE walk (n, id, path) AS (
             (SELECT 1, id, path FROM members WHERE path >= $1 AND path < $2 ORDER BY path LIMIT 1)
             UNION ALL
             SELECT w.n + 1, next.id, next.path FROM walk w CROSS JOIN LATERAL (
                 SELECT id, path FROM members
                 WHERE path >= CASE WHEN cardinality(w.path) >= $3
                                    THEN w.path[1:cardinality(w.path) - 1] || (w.path[cardinality(w.path)] + 1)
                                    ELSE w.path || 0::bigint END
                   AND path < $2
                 ORDER BY path LIMIT 1) next
             WHERE w.n < $4::bigint)"#,
        "JOIN walk ON walk.id = m.id ORDER BY walk.n",
        from,
        to,
        max_len,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Member::from).collect())
}

/// Members below a member (all depths) and its direct invitees: the folded
/// counter plus the deltas not folded yet, in one snapshot.
pub async fn counts(conn: &mut PgConnection, id: i64) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT coalesce(c.descendants, 0) + coalesce(d.descendants, 0) AS "descendants!",
             coalesce(c.invitees, 0) + coalesce(d.invitees, 0) AS "invitees!"
           FROM (SELECT $1::bigint AS id) k
           LEFT JOIN member_counts c ON c.member_id = k.id
           LEFT JOIN (SELECT sum(descendants)::bigint AS descendants, sum(invitees)::bigint AS invitees
                      FROM member_count_deltas WHERE member_id = $1) d ON true"#,
        id
    )
    .fetch_one(conn)
    .await?;
    Ok((row.descendants, row.invitees))
}

/// The invitation a user redeemed to join, and when, if any.
pub async fn joined_through(
    conn: &mut PgConnection,
    invitee_id: &str,
) -> Result<Option<(Uuid, time::OffsetDateTime)>, sqlx::Error> {
    let row = sqlx::query!("SELECT invitation_id, redeem_time FROM redemptions WHERE invitee_id = $1", invitee_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| (r.invitation_id, r.redeem_time)))
}

/// Deadlocks between redeems joining trees, and the invitee's unique key when
/// two of its redeems raced (run again, the redeem sees the winner).
pub fn is_redeem_race(e: &sqlx::Error) -> bool {
    super::is_retryable(e) || super::is_constraint_violation(e, "redemptions_invitee_id_key")
}

/// Records the edge (with the invitation's batch, for stats), counts the use
/// for stats (`stats::count_use`), and who invited the invitee. The
/// invitee's join time becomes the redeem time unless it was registered
/// with one before. Its place in the tree (`path`) is moved by `tree::graft`.
pub async fn insert_redemption(
    conn: &mut PgConnection,
    spent: &Invitation,
    invitee_id: &str,
) -> Result<time::OffsetDateTime, sqlx::Error> {
    let redeem_time = sqlx::query_scalar!(
        "INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id) VALUES ($1, $2, $3, $4) \
         RETURNING redeem_time",
        spent.id,
        spent.inviter_id,
        invitee_id,
        spent.batch_id
    )
    .fetch_one(&mut *conn)
    .await?;
    super::stats::count_use(&mut *conn, spent).await?;
    sqlx::query!(
        "UPDATE members SET inviter_id = $2, invitation_id = $3, join_time = coalesce(join_time, $4) \
         WHERE user_id = $1",
        invitee_id,
        spent.inviter_id,
        spent.id,
        redeem_time
    )
    .execute(conn)
    .await?;
    Ok(redeem_time)
}
