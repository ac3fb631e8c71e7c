//! SQL for reservations: leases on one use of an invitation.
//!
//! The invariant `uses + live reservations <= max_uses` holds because every
//! statement that adds a use or a lease first takes the invitation's row lock
//! (`lock_invitation`) and then, in a later statement (a fresh snapshot,
//! a fresh `clock_timestamp()`), counts the live leases. "Live" is
//! `status = 'held' AND expire_time > clock_timestamp()`: a lease that ran out
//! stops counting by itself, whether or not `sweep_lapsed` has marked it.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::events::InvitationOwner;
use crate::domain::{Invitation, Reservation};

/// Live reservations of the invitation in the enclosing `FROM invitations`.
pub(crate) const LIVE_COUNT: &str = "(SELECT count(*) FROM reservations r \
     WHERE r.invitation_id = invitations.id AND r.status = 'held' AND r.expire_time > clock_timestamp())";

/// The `Reservation` in a `query!` record that selected its columns and more.
macro_rules! reservation_of {
    ($r:ident) => {
        Reservation {
            id: $r.id,
            invitation_id: $r.invitation_id,
            status: $r.status,
            create_time: $r.create_time,
            expire_time: $r.expire_time,
            end_time: $r.end_time,
            invitee_id: $r.invitee_id,
        }
    };
}

/// Takes the invitation's row lock until the transaction ends. Every path that
/// adds a use or a lease takes it first; see the module docs.
pub async fn lock_invitation(conn: &mut PgConnection, invitation_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT 1 AS locked FROM invitations WHERE id = $1 FOR NO KEY UPDATE", invitation_id)
        .fetch_optional(conn)
        .await?;
    Ok(())
}

/// Inserts a lease of `ttl_micros` (never past the invitation's own expiry)
/// if a use is free: not spent, not held by a live lease. Call after
/// `lock_invitation`; `None` when no use is free.
pub async fn insert_if_free(
    conn: &mut PgConnection,
    id: Uuid,
    invitation_id: Uuid,
    ttl_micros: i64,
) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query_as!(
        Reservation,
        r#"INSERT INTO reservations (id, invitation_id, expire_time)
           SELECT $1, id, least(clock_timestamp() + $3 * interval '1 microsecond', expire_time) FROM invitations
           WHERE id = $2 AND revoke_time IS NULL
             AND (expire_time IS NULL OR expire_time > clock_timestamp())
             AND uses + (SELECT count(*) FROM reservations r
                         WHERE r.invitation_id = invitations.id AND r.status = 'held'
                           AND r.expire_time > clock_timestamp()) < max_uses
           RETURNING id, invitation_id, status AS "status: crate::domain::ReservationStatus", create_time, expire_time, end_time, invitee_id"#,
        id,
        invitation_id,
        ttl_micros as f64
    )
    .fetch_optional(conn)
    .await
}

/// How many uses of the invitation live reservations hold right now.
pub async fn live_count(conn: &mut PgConnection, invitation_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "live!" FROM reservations r
           WHERE r.invitation_id = $1 AND r.status = 'held' AND r.expire_time > clock_timestamp()"#,
        invitation_id
    )
    .fetch_one(conn)
    .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query_as!(Reservation, r#"SELECT id, invitation_id, status AS "status: crate::domain::ReservationStatus", create_time, expire_time, end_time, invitee_id FROM reservations WHERE id = $1"#, id).fetch_optional(conn).await
}

/// Locks the reservation row and returns it with the database clock read
/// after the lock (to judge a lapse). Call after `lock_invitation`.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<(Reservation, OffsetDateTime)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, invitation_id, status AS "status: crate::domain::ReservationStatus", create_time, expire_time, end_time, invitee_id, clock_timestamp() AS "db_now!" FROM reservations WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (reservation_of!(r), r.db_now)))
}

/// Spends the use a live reservation holds (the caller checked it under
/// `lock`), so live leases are not counted against it.
pub async fn take_reserved_use(
    conn: &mut PgConnection,
    invitation_id: Uuid,
    invitee_id: &str,
) -> Result<Option<Invitation>, sqlx::Error> {
    super::invitations::invitations_query!(
        "UPDATE invitations SET uses = uses + 1, last_redeem_time = now(), last_invitee_id = $2 \
         WHERE id = $1 AND uses < max_uses AND revoke_time IS NULL \
           AND (expire_time IS NULL OR expire_time > clock_timestamp()) \
         RETURNING ",
        "",
        invitation_id,
        invitee_id
    )
    .fetch_optional(conn)
    .await
}

pub async fn mark_completed(conn: &mut PgConnection, id: Uuid, invitee_id: &str) -> Result<Reservation, sqlx::Error> {
    sqlx::query_as!(
        Reservation,
        r#"UPDATE reservations SET status = 'completed', end_time = clock_timestamp(), invitee_id = $2
           WHERE id = $1 RETURNING id, invitation_id, status AS "status: crate::domain::ReservationStatus", create_time, expire_time, end_time, invitee_id"#,
        id,
        invitee_id
    )
    .fetch_one(conn)
    .await
}

/// Releases a live lease; `None` if it is not live (ended or ran out).
pub async fn release(conn: &mut PgConnection, id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query_as!(
        Reservation,
        r#"UPDATE reservations SET status = 'released', end_time = clock_timestamp()
           WHERE id = $1 AND status = 'held' AND expire_time > clock_timestamp() RETURNING id, invitation_id, status AS "status: crate::domain::ReservationStatus", create_time, expire_time, end_time, invitee_id"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// A lapsed lease and who owns its invitation (for its event's ordering).
pub struct Lapsed {
    pub reservation: Reservation,
    pub owner: InvitationOwner,
}

/// Marks up to `limit` held leases that ran out as lapsed (tidying and
/// events: nothing depends on it). Skips leases another call is completing
/// or releasing and invitations another call holds; holding the invitation's
/// lock orders the lapse with the invitation's other changes.
pub async fn sweep_lapsed(conn: &mut PgConnection, limit: i64) -> Result<Vec<Lapsed>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH lapsed AS (
             UPDATE reservations SET status = 'lapsed', end_time = expire_time
             WHERE id IN (SELECT r.id FROM reservations r JOIN invitations i ON i.id = r.invitation_id
                          WHERE r.status = 'held' AND r.expire_time <= clock_timestamp()
                          ORDER BY r.expire_time LIMIT $1
                          FOR UPDATE OF r SKIP LOCKED FOR NO KEY UPDATE OF i SKIP LOCKED)
             RETURNING id, invitation_id, status, create_time, expire_time, end_time, invitee_id)
           SELECT l.id AS "id!", l.invitation_id AS "invitation_id!",
             l.status AS "status!: crate::domain::ReservationStatus", l.create_time AS "create_time!",
             l.expire_time AS "expire_time!", l.end_time, l.invitee_id, i.inviter_id, i.batch_id
           FROM lapsed l JOIN invitations i ON i.id = l.invitation_id
           ORDER BY l.expire_time"#,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Lapsed {
            reservation: reservation_of!(r),
            owner: InvitationOwner { inviter_id: r.inviter_id, batch_id: r.batch_id },
        })
        .collect())
}

/// Reservation outcomes over all time (for stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservationCounts {
    /// Every reservation ever made.
    pub reserved: i64,
    /// Live right now.
    pub held: i64,
    pub completed: i64,
    pub released: i64,
    /// Ran out, swept or not.
    pub lapsed: i64,
}

pub async fn reservation_counts(conn: &mut PgConnection) -> Result<ReservationCounts, sqlx::Error> {
    super::stats::reservation_counts(conn, &super::stats::Filter::all()).await
}
