//! SQL for GetStats' conversions section (docs/design.md, "Conversions and
//! rewards"): for the invitations minted in the window (the stats' cohort),
//! how many of their redeemed invitees converted, per kind, grouped by
//! label, batch and day of minting; the inviters by conversions; and the
//! rewards' states. Ranges over the cohort's batches (`batches_create_time_idx`),
//! their redemptions (`redemptions_batch_id_idx`) and conversions
//! (`conversions_batch_idx`), never a scan of every invitation.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::stats::Filter;

/// One group (a label, a batch or a UTC day of minting) and one kind; the
/// kind is None for a group none of whose invitees converted.
#[derive(Debug, Clone, FromRow)]
pub struct ConversionGroupRow {
    pub label: Option<String>,
    pub batch_id: Option<Uuid>,
    pub day: Option<OffsetDateTime>,
    pub kind: Option<String>,
    /// Invitees of the group who redeemed.
    pub redeemed: i64,
    /// ...and of those, converted with `kind` (within the limit, if any).
    pub converted: i64,
    /// Median seconds from redeem to conversion.
    pub median_seconds: Option<f64>,
    pub value: Option<i64>,
}

/// Converted redemptions of the cohort per group and kind. `within_secs`:
/// only conversions that came that long after the redeem at most.
pub async fn groups(
    conn: &mut PgConnection,
    f: &Filter,
    within_secs: Option<f64>,
) -> Result<Vec<ConversionGroupRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversionGroupRow,
        r#"WITH cohort AS (
             SELECT b.id, b.label, date_trunc('day', b.create_time, 'UTC') AS day FROM batches b
             WHERE b.create_time >= $1 AND b.create_time < $2 AND ($3::text IS NULL OR b.label = $3)),
           redeemed AS (
             SELECT k.label, k.id AS batch_id, k.day, count(*) AS redeemed
             FROM cohort k JOIN redemptions r ON r.batch_id = k.id
             GROUP BY GROUPING SETS ((k.label), (k.id), (k.day))),
           converted AS (
             SELECT k.label, k.id AS batch_id, k.day, c.kind, count(*) AS converted,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.occur_time - c.redeem_time))
                        AS median_seconds,
                    sum(c.value)::bigint AS value
             FROM cohort k JOIN conversions c ON c.batch_id = k.id
             WHERE c.reward_state <> 'voided'
               AND ($4::float8 IS NULL OR c.occur_time <= c.redeem_time + make_interval(secs => $4))
             GROUP BY GROUPING SETS ((k.label, c.kind), (k.id, c.kind), (k.day, c.kind)))
           SELECT r.label AS "label?", r.batch_id AS "batch_id?", r.day AS "day?", c.kind AS "kind?",
                  r.redeemed AS "redeemed!", coalesce(c.converted, 0) AS "converted!",
                  c.median_seconds AS "median_seconds?", c.value AS "value?"
           FROM redeemed r LEFT JOIN converted c ON c.label IS NOT DISTINCT FROM r.label
             AND c.batch_id IS NOT DISTINCT FROM r.batch_id AND c.day IS NOT DISTINCT FROM r.day
           ORDER BY r.label NULLS LAST, r.day NULLS LAST, r.batch_id DESC, c.kind"#,
        f.start,
        f.end,
        f.label.as_deref() as _,
        within_secs,
    )
    .fetch_all(conn)
    .await
}

/// Inviters by conversions of their invitees (of `kind`, or any) that
/// happened in the window, most first; ties by user id.
pub async fn top_converters(
    conn: &mut PgConnection,
    f: &Filter,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT inviter_id AS "inviter_id!", count(*) AS "n!" FROM conversions
           WHERE inviter_id IS NOT NULL AND reward_state <> 'voided' AND occur_time >= $1 AND occur_time < $2
             AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR label = $4)
           GROUP BY inviter_id ORDER BY 2 DESC, inviter_id LIMIT $5"#,
        f.start,
        f.end,
        kind as _,
        f.label.as_deref() as _,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.inviter_id, r.n)).collect())
}

/// Conversions recorded in the window by the state of their reward, with
/// the reward invitations granted, and those attributed to nobody.
#[derive(Debug, Clone, Default, FromRow)]
pub struct RewardCounts {
    pub recorded: i64,
    pub unattributed: i64,
    pub pending: i64,
    pub review: i64,
    pub granted: i64,
    pub voided: i64,
    pub denied: i64,
    pub invitations_granted: i64,
}

pub async fn reward_counts(conn: &mut PgConnection, f: &Filter) -> Result<RewardCounts, sqlx::Error> {
    sqlx::query_as!(
        RewardCounts,
        r#"SELECT count(*) AS "recorded!", count(*) FILTER (WHERE inviter_id IS NULL) AS "unattributed!",
             count(*) FILTER (WHERE reward_state = 'pending') AS "pending!",
             count(*) FILTER (WHERE reward_state = 'review') AS "review!",
             count(*) FILTER (WHERE reward_state = 'granted') AS "granted!",
             count(*) FILTER (WHERE reward_state = 'voided') AS "voided!",
             count(*) FILTER (WHERE reward_state = 'denied') AS "denied!",
             coalesce(sum(inviter_reward + member_reward) FILTER (WHERE reward_state = 'granted'), 0)::bigint
                 AS "invitations_granted!"
           FROM conversions WHERE record_time >= $1 AND record_time < $2 AND ($3::text IS NULL OR label = $3)"#,
        f.start,
        f.end,
        f.label.as_deref() as _,
    )
    .fetch_one(conn)
    .await
}
