//! The history table (migrations/0092_history.sql): appending a change in
//! the caller's transaction, reading pages of it merged with the tables
//! that record their own changes, erasure's rewrite, and the monthly
//! partitions retention drops.

use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::history::{Cursor, Entry, Filter, Operation};

/// Appends one change; the caller's transaction commits it with the change.
pub async fn append(conn: &mut PgConnection, e: &Entry) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO history (caller, operation, invitation_ids, batch_id, user_ids, reason, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, ($8::text)::jsonb)",
        e.caller,
        e.operation.as_str(),
        &e.invitation_ids,
        e.batch_id,
        &e.user_ids,
        e.reason,
        e.request_id,
        e.details_json(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One row of a ListHistory page, from whichever table holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub occur_time: OffsetDateTime,
    pub source: i16,
    pub key: String,
    pub caller: String,
    pub operation: String,
    pub invitation_ids: Vec<Uuid>,
    pub batch_id: Option<Uuid>,
    pub user_ids: Vec<String>,
    pub reason: String,
    pub request_id: String,
    pub details: String,
}

impl HistoryRow {
    pub fn cursor(&self) -> Cursor {
        Cursor { time: self.occur_time, source: self.source, key: self.key.clone() }
    }
}

/// A table ListHistory reads: the history itself, or one that records its
/// own changes (joined in, not copied).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    History,
    Redemptions,
    Reservations,
    Grants,
    Conversions,
}

impl Source {
    const ALL: [Source; 5] =
        [Source::History, Source::Redemptions, Source::Reservations, Source::Grants, Source::Conversions];

    /// The SELECT list and FROM of its rows, in HistoryRow's shape. Keys
    /// sort as "C" text: ids zero-padded, UUIDs as text.
    fn select(self) -> &'static str {
        match self {
            Source::History => {
                "SELECT h.occur_time, 0::smallint AS source, lpad(h.id::text, 20, '0') COLLATE \"C\" AS key, \
                 h.caller, h.operation, h.invitation_ids, h.batch_id, h.user_ids, h.reason, h.request_id, \
                 h.details::text AS details FROM history h WHERE true"
            }
            Source::Redemptions => {
                "SELECT r.redeem_time AS occur_time, 1::smallint AS source, lpad(r.id::text, 20, '0') COLLATE \"C\" AS key, \
                 ''::text AS caller, 'redeem'::text AS operation, ARRAY[r.invitation_id] AS invitation_ids, \
                 r.batch_id, array_remove(ARRAY[r.invitee_id, r.inviter_id], NULL) AS user_ids, ''::text AS reason, \
                 ''::text AS request_id, '{}'::text AS details FROM redemptions r WHERE true"
            }
            Source::Reservations => {
                "SELECT v.create_time AS occur_time, 2::smallint AS source, v.id::text COLLATE \"C\" AS key, \
                 ''::text AS caller, 'reserve'::text AS operation, ARRAY[v.invitation_id] AS invitation_ids, \
                 NULL::uuid AS batch_id, array_remove(ARRAY[v.invitee_id], NULL) AS user_ids, ''::text AS reason, \
                 ''::text AS request_id, json_build_object('status', v.status::text)::text AS details \
                 FROM reservations v WHERE true"
            }
            // Batches the quota policies (policy:*) and the reward granter
            // (reward:*) minted; API mints have their own history row.
            Source::Grants => {
                "SELECT b.create_time AS occur_time, 3::smallint AS source, b.id::text COLLATE \"C\" AS key, \
                 b.minted_by AS caller, 'grant'::text AS operation, '{}'::uuid[] AS invitation_ids, b.id AS batch_id, \
                 coalesce((SELECT array_agg(DISTINCT i.inviter_id) FROM invitations i \
                           WHERE i.batch_id = b.id AND i.inviter_id IS NOT NULL), '{}') AS user_ids, \
                 ''::text AS reason, ''::text AS request_id, \
                 json_build_object('label', b.label, 'count', b.invitation_count::text)::text AS details \
                 FROM batches b WHERE (b.minted_by LIKE 'policy:%' OR b.minted_by LIKE 'reward:%')"
            }
            Source::Conversions => {
                "SELECT c.record_time AS occur_time, 4::smallint AS source, c.id::text COLLATE \"C\" AS key, \
                 ''::text AS caller, 'conversion'::text AS operation, \
                 array_remove(ARRAY[c.invitation_id], NULL) AS invitation_ids, c.batch_id, ARRAY[c.user_id] AS user_ids, \
                 ''::text AS reason, ''::text AS request_id, json_build_object('kind', c.kind)::text AS details \
                 FROM conversions c WHERE true"
            }
        }
    }

    fn time(self) -> &'static str {
        match self {
            Source::History => "h.occur_time",
            Source::Redemptions => "r.redeem_time",
            Source::Reservations => "v.create_time",
            Source::Grants => "b.create_time",
            Source::Conversions => "c.record_time",
        }
    }

    fn id(self) -> i16 {
        self as i16
    }

    fn key(self) -> &'static str {
        match self {
            Source::History => "lpad(h.id::text, 20, '0') COLLATE \"C\"",
            Source::Redemptions => "lpad(r.id::text, 20, '0') COLLATE \"C\"",
            Source::Reservations => "v.id::text COLLATE \"C\"",
            Source::Grants => "b.id::text COLLATE \"C\"",
            Source::Conversions => "c.id::text COLLATE \"C\"",
        }
    }

    /// Whether rows of this table can match the operation filter.
    fn holds(self, op: Operation) -> bool {
        match self {
            Source::History => !op.is_joined(),
            Source::Redemptions => op == Operation::Redeem,
            Source::Reservations => op == Operation::Reserve,
            Source::Grants => op == Operation::Grant,
            Source::Conversions => op == Operation::Conversion,
        }
    }

    /// Whether the table records who made the change (the others never
    /// match a caller filter).
    fn records_caller(self) -> bool {
        matches!(self, Source::History | Source::Grants)
    }
}

/// Up to `limit` rows of the filtered history after `after`, newest first.
///
/// Built dynamically: every filter is optional and each combination needs
/// its own plan to use its index (a `$1 IS NULL OR` form would scan).
pub async fn page(
    conn: &mut PgConnection,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    let sources: Vec<Source> = Source::ALL
        .into_iter()
        .filter(|s| filter.operation.is_none_or(|op| s.holds(op)))
        .filter(|s| filter.caller.is_none() || s.records_caller())
        .collect();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM (");
    for (i, source) in sources.iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push("(").push(source.select());
        push_conditions(&mut q, *source, filter, after);
        q.push(" ORDER BY ").push(source.time()).push(" DESC, ").push(source.key()).push(" DESC LIMIT ");
        q.push_bind(limit).push(")");
    }
    q.push(") page ORDER BY occur_time DESC, source DESC, key DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

fn push_conditions(q: &mut QueryBuilder<'_, Postgres>, s: Source, f: &Filter, after: Option<&Cursor>) {
    let time = s.time();
    if let Some(start) = f.start_time {
        q.push(" AND ").push(time).push(" >= ").push_bind(start);
    }
    if let Some(end) = f.end_time {
        q.push(" AND ").push(time).push(" < ").push_bind(end);
    }
    if let Some(c) = after {
        // The plain bound lets the time index narrow; the row comparison
        // is the exact keyset.
        q.push(" AND ").push(time).push(" <= ").push_bind(c.time);
        q.push(" AND (").push(time).push(", ").push(s.id().to_string()).push("::smallint, ").push(s.key());
        q.push(") < (").push_bind(c.time).push(", ").push_bind(c.source).push(", ").push_bind(c.key.clone());
        q.push(" COLLATE \"C\")");
    }
    if let Some(op) = f.operation
        && s == Source::History
    {
        q.push(" AND h.operation = ").push_bind(op.as_str());
    }
    if let Some(caller) = &f.caller {
        match s {
            Source::History => q.push(" AND h.caller = ").push_bind(caller.clone()),
            Source::Grants => q.push(" AND b.minted_by = ").push_bind(caller.clone()),
            _ => q.push(" AND false"),
        };
    }
    if let Some(id) = f.invitation_id {
        match s {
            Source::History => q
                .push(" AND (h.invitation_ids @> ARRAY[")
                .push_bind(id)
                .push("]::uuid[] OR h.batch_id = (SELECT batch_id FROM invitations WHERE id = ")
                .push_bind(id)
                .push("))"),
            Source::Redemptions => q.push(" AND r.invitation_id = ").push_bind(id),
            Source::Reservations => q.push(" AND v.invitation_id = ").push_bind(id),
            Source::Grants => {
                q.push(" AND b.id = (SELECT batch_id FROM invitations WHERE id = ").push_bind(id).push(")")
            }
            Source::Conversions => q.push(" AND c.invitation_id = ").push_bind(id),
        };
    }
    if let Some(user) = &f.user_id {
        let u = user.clone();
        match s {
            Source::History => q
                .push(" AND (h.user_ids @> ARRAY[")
                .push_bind(u.clone())
                .push("]::text[] OR h.caller = ")
                .push_bind(u)
                .push(")"),
            Source::Redemptions => {
                q.push(" AND (r.invitee_id = ").push_bind(u.clone()).push(" OR r.inviter_id = ").push_bind(u).push(")")
            }
            Source::Reservations => q.push(" AND v.invitee_id = ").push_bind(u),
            Source::Grants => {
                q.push(" AND b.id IN (SELECT batch_id FROM invitations WHERE inviter_id = ").push_bind(u).push(")")
            }
            Source::Conversions => {
                q.push(" AND (c.user_id = ").push_bind(u.clone()).push(" OR c.inviter_id = ").push_bind(u).push(")")
            }
        };
    }
}

/// Erasure: the member's user id becomes its tombstone in every row that
/// names it (as a target or as the caller, also "X for <id>"), and the
/// reasons written about it are blanked. A scan of the history (erasure is
/// rare; the caller forms have no index).
pub async fn erase(conn: &mut PgConnection, old: &str, tomb: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE history SET \
             user_ids = array_replace(user_ids, $1, $2), \
             reason = CASE WHEN $1 = ANY(user_ids) THEN '' ELSE reason END, \
             caller = CASE WHEN caller = $1 THEN $2 \
                           WHEN right(caller, length($1) + 5) = ' for ' || $1 THEN left(caller, -length($1)) || $2 \
                           ELSE caller END \
         WHERE $1 = ANY(user_ids) OR caller = $1 OR right(caller, length($1) + 5) = ' for ' || $1",
        old,
        tomb,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
