//! SQL for the invite graph: members and redemption edges.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Member;

/// Deepest chain the ancestor walk follows; a guard, not a product limit.
const MAX_CHAIN: i32 = 100_000;

/// Registers the invitee if new and locks its row until the transaction ends.
/// Concurrent redeems by one invitee serialize here, and the lock also holds
/// off anyone adding an invitee *under* this user (their foreign key check
/// takes a KEY SHARE lock on it), which the cycle check relies on.
pub async fn lock_member(conn: &mut PgConnection, user_id: &str) -> Result<Member, sqlx::Error> {
    sqlx::query("INSERT INTO members (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as("SELECT user_id, inviter_id, join_time, invitation_id FROM members WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

pub async fn member(conn: &mut PgConnection, user_id: &str) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, inviter_id, join_time, invitation_id FROM members WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The invitation a user redeemed to join, and when, if any.
pub async fn joined_through(
    conn: &mut PgConnection,
    invitee_id: &str,
) -> Result<Option<(Uuid, time::OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as("SELECT invitation_id, redeem_time FROM redemptions WHERE invitee_id = $1")
        .bind(invitee_id)
        .fetch_optional(conn)
        .await
}

pub async fn has_invitees(conn: &mut PgConnection, user_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM redemptions WHERE inviter_id = $1)")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Serializes the rare redeems that join two existing trees (the invitee
/// already has invitees of its own), so two of them cannot close a cycle
/// between each other unseen. Ordinary sign-ups never take it.
pub async fn lock_tree_merges(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Arbitrary constant key: "invitations/tree-merge".
    sqlx::query("SELECT pg_advisory_xact_lock(7208163470019245107)").execute(conn).await?;
    Ok(())
}

/// Whether `candidate` is `user_id` or one of its ancestors.
pub async fn is_self_or_ancestor(conn: &mut PgConnection, candidate: &str, user_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE chain (user_id, inviter_id, depth) AS ( \
             SELECT user_id, inviter_id, 1 FROM members WHERE user_id = $2 \
             UNION ALL \
             SELECT m.user_id, m.inviter_id, c.depth + 1 FROM members m \
             JOIN chain c ON m.user_id = c.inviter_id WHERE c.depth < $3) \
         SELECT EXISTS (SELECT 1 FROM chain WHERE user_id = $1)",
    )
    .bind(candidate)
    .bind(user_id)
    .bind(MAX_CHAIN)
    .fetch_one(conn)
    .await
}

/// Records the edge and the member's place in the graph. The invitee's join
/// time becomes the redeem time unless it was registered with one before.
pub async fn insert_redemption(
    conn: &mut PgConnection,
    invitation_id: Uuid,
    inviter_id: Option<&str>,
    invitee_id: &str,
) -> Result<time::OffsetDateTime, sqlx::Error> {
    let redeem_time = sqlx::query_scalar(
        "INSERT INTO redemptions (invitation_id, inviter_id, invitee_id) VALUES ($1, $2, $3) RETURNING redeem_time",
    )
    .bind(invitation_id)
    .bind(inviter_id)
    .bind(invitee_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE members SET inviter_id = $2, invitation_id = $3, join_time = coalesce(join_time, $4) \
         WHERE user_id = $1",
    )
    .bind(invitee_id)
    .bind(inviter_id)
    .bind(invitation_id)
    .bind(redeem_time)
    .execute(conn)
    .await?;
    Ok(redeem_time)
}

/// The chain from the root down to the user's inviter.
pub async fn ancestors(conn: &mut PgConnection, user_id: &str) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE chain (user_id, inviter_id, join_time, invitation_id, depth) AS ( \
             SELECT p.user_id, p.inviter_id, p.join_time, p.invitation_id, 1 FROM members p \
             JOIN members m ON p.user_id = m.inviter_id WHERE m.user_id = $1 \
             UNION ALL \
             SELECT p.user_id, p.inviter_id, p.join_time, p.invitation_id, c.depth + 1 FROM members p \
             JOIN chain c ON p.user_id = c.inviter_id WHERE c.depth < $2) \
         SELECT user_id, inviter_id, join_time, invitation_id FROM chain ORDER BY depth DESC",
    )
    .bind(user_id)
    .bind(MAX_CHAIN)
    .fetch_all(conn)
    .await
}

/// One page of a user's direct invitees, oldest first, keyed by redemption id.
pub async fn invitees_page(
    conn: &mut PgConnection,
    user_id: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Member)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        edge_id: i64,
        #[sqlx(flatten)]
        member: Member,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.id AS edge_id, m.user_id, m.inviter_id, m.join_time, m.invitation_id \
         FROM redemptions r JOIN members m ON m.user_id = r.invitee_id \
         WHERE r.inviter_id = $1 AND ($2::bigint IS NULL OR r.id > $2) ORDER BY r.id LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.edge_id, r.member)).collect())
}

/// The inviter of a user, if the user came in through an owned invitation.
pub async fn inviter_of(conn: &mut PgConnection, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    let inviter: Option<Option<String>> = sqlx::query_scalar("SELECT inviter_id FROM members WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(inviter.flatten())
}
