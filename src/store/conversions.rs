//! SQL for conversions (migrations/0070_conversions.sql): RecordConversion
//! is one call of `inv_record_conversion`, which attributes, records,
//! rewards (through `inv_mint_grant`, the one-statement form of the one
//! mint path) and appends the events.

use sqlx::{FromRow, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::common_path::{PgQuery, PreparedGrant, bind_grant};
use crate::domain::events::EventHead;

/// A conversion as stored, decoded by name.
#[derive(Debug, Clone, FromRow)]
pub struct ConversionRow {
    pub id: Uuid,
    pub user_id: String,
    pub kind: String,
    pub occur_time: OffsetDateTime,
    pub record_time: OffsetDateTime,
    pub value: Option<i64>,
    pub invitation_id: Option<Uuid>,
    pub inviter_id: Option<String>,
    pub batch_id: Option<Uuid>,
    pub label: Option<String>,
    pub redeem_time: Option<OffsetDateTime>,
    pub reward_state: String,
    pub inviter_reward: i32,
    pub member_reward: i32,
    pub inviter_capped: bool,
    pub inviter_batch_id: Option<Uuid>,
    pub member_batch_id: Option<Uuid>,
    /// When the reward was granted.
    pub reward_time: Option<OffsetDateTime>,
    pub hold_until: Option<OffsetDateTime>,
    pub void_time: Option<OffsetDateTime>,
    pub void_reason: Option<String>,
    pub voided_by: Option<String>,
    pub redemption_flags: Vec<String>,
    pub review_time: Option<OffsetDateTime>,
    pub reviewed_by: Option<String>,
    pub review_reason: Option<String>,
}

/// The reward rule of the kind as the statement takes it (`inv_reward_rule`).
pub struct RuleRow {
    pub inviter: i32,
    pub member: i32,
    /// 0: no cap.
    pub cap: i32,
    pub cap_secs: f64,
    pub key_id: i32,
    /// 0: granted at once.
    pub hold_secs: f64,
    /// `grant`, `hold` or `deny`.
    pub flagged: &'static str,
}

/// One RecordConversion, with everything the statement may need made by
/// the service beforehand.
pub struct Record<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub occur_time: Option<OffsetDateTime>,
    pub value: Option<i64>,
    pub rule: RuleRow,
    pub inviter_grant: PreparedGrant,
    pub member_grant: PreparedGrant,
    pub event: EventHead,
    pub converted_fixed: Vec<u8>,
    pub reward_event: EventHead,
    pub reward_fixed: Vec<u8>,
}

/// How the statement ended.
pub enum Recorded {
    New(ConversionRow),
    /// The member had converted with this kind: that conversion.
    Existing(ConversionRow),
    UnknownMember,
}

/// `ROW($first, ...)::inv_grant` of the ten parameters from `first`
/// (`common_path::bind_grant` binds them, attributes last).
fn grant_row(first: usize) -> String {
    let types =
        ["uuid", "uuid", "timestamptz", "bytea", "uuid[]", "bytea[]", "bytea[]", "bytea[]", "bytea[]", "text[]"];
    let fields: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::{t}", first + i)).collect();
    format!("ROW({})::inv_grant", fields.join(", "))
}

/// RecordConversion in one statement (SQL `inv_record_conversion`).
pub async fn record(conn: &mut PgConnection, r: &Record<'_>) -> Result<Recorded, sqlx::Error> {
    // Built from constants: the grant rows' casts.
    let sql = format!(
        "SELECT r.status, (r.conv).* FROM inv_record_conversion($1, $2, $3, $4, $5, \
             ROW($6::int, $7::int, $8::int, $9::float8, $10::int, $11::float8, $12::text)::inv_reward_rule, \
             {}, {}, $33, $34, $35, $36, $37, $38, $39) r",
        grant_row(13),
        grant_row(23),
    );
    let query: PgQuery<'_> = sqlx::query(&sql)
        .bind(r.id)
        .bind(r.user_id)
        .bind(r.kind)
        .bind(r.occur_time)
        .bind(r.value)
        .bind(r.rule.inviter)
        .bind(r.rule.member)
        .bind(r.rule.cap)
        .bind(r.rule.cap_secs)
        .bind(r.rule.key_id)
        .bind(r.rule.hold_secs)
        .bind(r.rule.flagged);
    let query = bind_grant(bind_grant(query, &r.inviter_grant), &r.member_grant)
        .bind(r.event.id)
        .bind(r.event.time)
        .bind(&r.event.head)
        .bind(&r.converted_fixed)
        .bind(r.reward_event.id)
        .bind(&r.reward_event.head)
        .bind(&r.reward_fixed);
    let row = query.fetch_one(conn).await?;
    let status: String = row.try_get("status")?;
    Ok(match status.as_str() {
        "RECORDED" => Recorded::New(ConversionRow::from_row(&row)?),
        "EXISTING" => Recorded::Existing(ConversionRow::from_row(&row)?),
        _ => Recorded::UnknownMember,
    })
}

/// Up to `limit` pending rewards whose hold ended, locked; rewards another
/// granter (replica) or a VoidConversion holds are skipped, so each is
/// granted once.
pub async fn take_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<ConversionRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversionRow,
        "SELECT * FROM conversions WHERE reward_state = 'pending' AND hold_until <= now() \
         ORDER BY hold_until LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    .fetch_all(conn)
    .await
}

/// A pending reward granted: its batches (None: that side got nothing).
pub async fn mark_granted(
    conn: &mut PgConnection,
    id: Uuid,
    inviter_batch: Option<Uuid>,
    member_batch: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE conversions SET reward_state = 'granted', inviter_batch_id = $2, member_batch_id = $3, \
         reward_time = now() WHERE id = $1 AND reward_state IN ('pending', 'review')",
        id,
        inviter_batch,
        member_batch,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The conversion, locked for a void (waits for a granter holding it).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<ConversionRow>, sqlx::Error> {
    sqlx::query_as!(ConversionRow, "SELECT * FROM conversions WHERE id = $1 FOR UPDATE", id).fetch_optional(conn).await
}

pub async fn mark_voided(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
    voided_by: &str,
) -> Result<ConversionRow, sqlx::Error> {
    sqlx::query_as!(
        ConversionRow,
        "UPDATE conversions SET reward_state = 'voided', void_time = now(), void_reason = $2, voided_by = $3 \
         WHERE id = $1 RETURNING *",
        id,
        reason,
        voided_by,
    )
    .fetch_one(conn)
    .await
}

/// These conversions, locked (in id order, so concurrent reviews of
/// overlapping sets cannot deadlock).
pub async fn lock_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<ConversionRow>, sqlx::Error> {
    sqlx::query_as!(ConversionRow, "SELECT * FROM conversions WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)
        .fetch_all(conn)
        .await
}

/// A review's decision recorded (`denied`, or before the grant of an
/// approved one).
pub async fn mark_reviewed(
    conn: &mut PgConnection,
    id: Uuid,
    denied: bool,
    reason: &str,
    reviewed_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE conversions SET review_time = now(), review_reason = $3, reviewed_by = $4, \
         reward_state = CASE WHEN $2 THEN 'denied' ELSE reward_state END WHERE id = $1",
        id,
        denied,
        reason,
        reviewed_by,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Conversions by id.
pub async fn get_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<ConversionRow>, sqlx::Error> {
    sqlx::query_as!(ConversionRow, "SELECT * FROM conversions WHERE id = ANY($1)", ids).fetch_all(conn).await
}

/// The invitations of a reward's batches: each batch is one owner's (the
/// inviter's, the member's), so the owners' index finds them.
pub async fn reward_invitations(
    conn: &mut PgConnection,
    owners: &[String],
    batches: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM invitations WHERE inviter_id = ANY($1) AND batch_id = ANY($2) ORDER BY id",
        owners,
        batches,
    )
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn grant_rows_number_ten_parameters() {
        assert_eq!(
            super::grant_row(11),
            "ROW($11::uuid, $12::uuid, $13::timestamptz, $14::bytea, $15::uuid[], $16::bytea[], $17::bytea[], \
             $18::bytea[], $19::bytea[], $20::text[])::inv_grant"
        );
    }
}
