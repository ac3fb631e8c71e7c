//! SQL for GetStats and the per-batch counters it reads (docs/design.md,
//! "Stats"). Redeems and revokes append count deltas here in their own
//! transaction; `store::fold` with `BATCH_COUNTS` folds them. Every read is
//! a range of an index bounded by the window: batches minted in it (and
//! their redemptions), redemptions, joins and reservations in it. Nothing
//! here scans the invitations table.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Invitation;

/// What became of each batch's invitations: first uses, fully spent ones,
/// revocations with uses left, and uses.
pub const BATCH_COUNTS: super::Counters = super::Counters {
    counts: "batch_counts",
    deltas: "batch_count_deltas",
    key: "batch_id",
    columns: &["used", "spent", "revoked", "uses"],
};

/// Records one spent use of an invitation (call after the use was taken, in
/// the same transaction): its first use, and whether it is now spent.
pub async fn count_use(conn: &mut PgConnection, invitation: &Invitation) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses) VALUES ($1, $2, $3, 0, 1)",
        invitation.batch_id,
        i64::from(invitation.uses == 1),
        i64::from(invitation.uses >= invitation.max_uses),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records revocations (every one of `revoked` had uses left), one delta
/// row per batch.
pub async fn count_revoked(conn: &mut PgConnection, revoked: &[Invitation]) -> Result<(), sqlx::Error> {
    if revoked.is_empty() {
        return Ok(());
    }
    let batches: Vec<Uuid> = revoked.iter().map(|i| i.batch_id).collect();
    sqlx::query!(
        "INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses) \
         SELECT b, 0, 0, count(*), 0 FROM unnest($1::uuid[]) AS b GROUP BY b",
        &batches,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes `tx` read one consistent, read-only snapshot (call first): every
/// section of GetStats then agrees with the others.
pub async fn snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(conn).await?;
    Ok(())
}

/// `[start, end)`, and an optional label.
#[derive(Debug, Clone)]
pub struct Filter {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub label: Option<String>,
}

impl Filter {
    /// All of time, every label.
    pub fn all() -> Self {
        Self {
            start: OffsetDateTime::UNIX_EPOCH,
            end: OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT),
            label: None,
        }
    }
}

/// One group of invitations: its key and what became of them.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct CohortRow {
    pub label: Option<String>,
    pub period: Option<OffsetDateTime>,
    pub batch_id: Option<Uuid>,
    pub minted: i64,
    pub used: i64,
    pub spent: i64,
    pub revoked: i64,
    /// Not spent, not revoked, in a batch past its expiry.
    pub expired: i64,
    pub uses: i64,
    /// Seconds, over the group's redemptions.
    pub median_seconds: Option<f64>,
    pub within: i64,
}

/// Batches minted in the window (of the label), with their counters plus
/// pending deltas (one index probe per batch). `{limit}` is replaced.
const COHORT: &str = "cohort AS ( \
     SELECT b.id, b.label, b.create_time, date_trunc($4, b.create_time, 'UTC') AS period, \
         b.invitation_count::bigint AS minted, coalesce(b.expire_time <= now(), false) AS past_expiry, \
         coalesce(c.used, 0) + coalesce(d.used, 0) AS used, coalesce(c.spent, 0) + coalesce(d.spent, 0) AS spent, \
         coalesce(c.revoked, 0) + coalesce(d.revoked, 0) AS revoked, coalesce(c.uses, 0) + coalesce(d.uses, 0) AS uses \
     FROM batches b \
     LEFT JOIN batch_counts c ON c.batch_id = b.id \
     LEFT JOIN LATERAL (SELECT sum(used)::bigint AS used, sum(spent)::bigint AS spent, \
             sum(revoked)::bigint AS revoked, sum(uses)::bigint AS uses \
         FROM batch_count_deltas WHERE batch_id = b.id) d ON true \
     WHERE b.create_time >= $1 AND b.create_time < $2 AND ($3::text IS NULL OR b.label = $3) \
     {limit})";

/// Sums of the cohort's counters per group, `{sets}` replaced.
const ROLLUP: &str = "rollup AS ( \
     SELECT {sets_key}, coalesce(sum(minted), 0)::bigint AS minted, coalesce(sum(used), 0)::bigint AS used, \
         coalesce(sum(spent), 0)::bigint AS spent, coalesce(sum(revoked), 0)::bigint AS revoked, \
         coalesce(sum(CASE WHEN past_expiry THEN minted - spent - revoked ELSE 0 END), 0)::bigint AS expired, \
         coalesce(sum(uses), 0)::bigint AS uses \
     FROM cohort k GROUP BY {sets})";

/// Time to redeem per group, over the cohort's redemptions: one range of
/// `redemptions_batch_id_idx` per batch.
const DELAYS: &str = "delays AS ( \
     SELECT {sets_key}, \
         extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY r.redeem_time - k.create_time))::float8 \
             AS median_seconds, \
         count(*) FILTER (WHERE r.redeem_time - k.create_time <= $5) AS within \
     FROM cohort k JOIN redemptions r ON r.batch_id = k.id GROUP BY {sets})";

// Built from parts: the two cohort reads (grouping sets, newest batches)
// share the cohort, rollup and delay CTEs and differ only in their keys.
fn cohort_sql(limit: &str, sets_key: &str, sets: &str, join: &str) -> String {
    format!(
        "WITH {}, {}, {} \
         SELECT r.*, d.median_seconds, coalesce(d.within, 0) AS within \
         FROM rollup r LEFT JOIN delays d ON {join}",
        COHORT.replace("{limit}", limit),
        ROLLUP.replace("{sets_key}", sets_key).replace("{sets}", sets),
        DELAYS.replace("{sets_key}", sets_key).replace("{sets}", sets),
    )
}

fn period_unit(week: bool) -> &'static str {
    if week { "week" } else { "day" }
}

/// The cohort overall (label, period and batch all NULL), per label and per
/// period, in one statement (grouping sets).
pub async fn cohort_groups(
    conn: &mut PgConnection,
    f: &Filter,
    week: bool,
    within: Option<time::Duration>,
) -> Result<Vec<CohortRow>, sqlx::Error> {
    let sql = cohort_sql(
        "",
        "GROUPING(k.label, k.period) AS g, k.label, k.period, NULL::uuid AS batch_id",
        "GROUPING SETS ((), (k.label), (k.period))",
        "d.g = r.g AND d.label IS NOT DISTINCT FROM r.label AND d.period IS NOT DISTINCT FROM r.period",
    ) + " ORDER BY r.g, r.label, r.period";
    // Runtime SQL: one cohort statement (`cohort_sql`) grouped two ways.
    sqlx::query_as(&sql)
        .bind(f.start)
        .bind(f.end)
        .bind(&f.label)
        .bind(period_unit(week))
        .bind(within)
        .fetch_all(conn)
        .await
}

/// The newest `limit` batches of the cohort, each as its own group, newest
/// first.
pub async fn cohort_batches(
    conn: &mut PgConnection,
    f: &Filter,
    within: Option<time::Duration>,
    limit: i64,
) -> Result<Vec<CohortRow>, sqlx::Error> {
    let sql = cohort_sql(
        "ORDER BY b.create_time DESC, b.id LIMIT $6",
        "k.id AS batch_id, k.label, max(k.create_time) AS period",
        "k.id, k.label",
        "d.batch_id = r.batch_id",
    ) + " ORDER BY r.period DESC, r.batch_id";
    // Runtime SQL: one cohort statement (`cohort_sql`) grouped two ways.
    sqlx::query_as(&sql)
        .bind(f.start)
        .bind(f.end)
        .bind(&f.label)
        .bind("day")
        .bind(within)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Members who joined per UTC day of the window, and how many of them by
/// an invitation; only days with joins.
pub async fn joins_per_day(
    conn: &mut PgConnection,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<Vec<(OffsetDateTime, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT date_trunc('day', join_time, 'UTC') AS "day!", count(*) AS "joined!",
             count(invitation_id) AS "invited!" FROM members
           WHERE join_time >= $1 AND join_time < $2 GROUP BY 1 ORDER BY 1"#,
        start,
        end,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.day, r.joined, r.invited)).collect())
}

/// The `limit` inviters with the most redemptions in the window.
pub async fn top_inviters(conn: &mut PgConnection, f: &Filter, limit: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT r.inviter_id AS "inviter_id!", count(*) AS "n!" FROM redemptions r
           WHERE r.redeem_time >= $1 AND r.redeem_time < $2 AND r.inviter_id IS NOT NULL
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM batches b WHERE b.id = r.batch_id AND b.label = $3))
           GROUP BY r.inviter_id ORDER BY 2 DESC, r.inviter_id LIMIT $4"#,
        f.start,
        f.end,
        f.label.as_deref() as _,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.inviter_id, r.n)).collect())
}

/// Abuse flags raised on redemptions in the window, by flag (only flagged
/// redemptions are in the index it reads).
pub async fn flag_counts(conn: &mut PgConnection, f: &Filter) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT flag AS "flag!", count(*) AS "n!" FROM redemptions r, unnest(r.abuse_flags) AS flag
           WHERE r.abuse_flags <> '{}' AND r.redeem_time >= $1 AND r.redeem_time < $2
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM batches b WHERE b.id = r.batch_id AND b.label = $3))
           GROUP BY flag ORDER BY flag"#,
        f.start,
        f.end,
        f.label.as_deref() as _,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.flag, r.n)).collect())
}

/// Outcomes of reservations taken in the window. A held lease past its
/// expiry counts as lapsed whether or not the sweeper has marked it.
pub async fn reservation_counts(
    conn: &mut PgConnection,
    f: &Filter,
) -> Result<super::reservations::ReservationCounts, sqlx::Error> {
    sqlx::query_as!(
        super::reservations::ReservationCounts,
        r#"SELECT count(*) AS "reserved!",
             count(*) FILTER (WHERE status = 'held' AND expire_time > clock_timestamp()) AS "held!",
             count(*) FILTER (WHERE status = 'completed') AS "completed!",
             count(*) FILTER (WHERE status = 'released') AS "released!",
             count(*) FILTER (WHERE status = 'lapsed' OR (status = 'held' AND expire_time <= clock_timestamp()))
               AS "lapsed!"
           FROM reservations rs
           WHERE rs.create_time >= $1 AND rs.create_time < $2
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM invitations i WHERE i.id = rs.invitation_id AND i.label = $3))"#,
        f.start,
        f.end,
        f.label.as_deref() as _,
    )
    .fetch_one(conn)
    .await
}
