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
}

/// The reward rule of the kind as the statement takes it (`inv_reward_rule`).
pub struct RuleRow {
    pub inviter: i32,
    pub member: i32,
    /// 0: no cap.
    pub cap: i32,
    pub cap_secs: f64,
    pub key_id: i32,
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

/// `ROW($first, ...)::inv_grant` of the nine parameters from `first`.
fn grant_row(first: usize) -> String {
    let types = ["uuid", "uuid", "timestamptz", "bytea", "uuid[]", "bytea[]", "bytea[]", "bytea[]", "bytea[]"];
    let fields: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::{t}", first + i)).collect();
    format!("ROW({})::inv_grant", fields.join(", "))
}

/// RecordConversion in one statement (SQL `inv_record_conversion`).
pub async fn record(conn: &mut PgConnection, r: &Record<'_>) -> Result<Recorded, sqlx::Error> {
    // Built from constants: the grant rows' casts.
    let sql = format!(
        "SELECT r.status, (r.conv).* FROM inv_record_conversion($1, $2, $3, $4, $5, \
             ROW($6::int, $7::int, $8::int, $9::float8, $10::int)::inv_reward_rule, {}, {}, \
             $29, $30, $31, $32, $33, $34, $35) r",
        grant_row(11),
        grant_row(20),
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
        .bind(r.rule.key_id);
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

#[cfg(test)]
mod tests {
    #[test]
    fn grant_rows_number_nine_parameters() {
        assert_eq!(
            super::grant_row(11),
            "ROW($11::uuid, $12::uuid, $13::timestamptz, $14::bytea, $15::uuid[], $16::bytea[], $17::bytea[], \
             $18::bytea[], $19::bytea[])::inv_grant"
        );
    }
}
