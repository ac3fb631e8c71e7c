//! Tables partitioned by time (`inv_ensure_partitions`,
//! migrations/0120_abuse_partitioned.sql): making the coming periods'
//! partitions and dropping the periods that ended before a cutoff, a whole
//! partition at a time instead of a DELETE. The outbox keeps its own (it
//! drops a day only once every event in it was sent).

use sqlx::PgConnection;
use time::OffsetDateTime;

/// A partition's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Month,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Day => "day",
            Unit::Month => "month",
        }
    }

    /// Digits of the partition's name suffix (`_pYYYYMMDD`, `_pYYYYMM`).
    fn digits(self) -> usize {
        match self {
            Unit::Day => 8,
            Unit::Month => 6,
        }
    }
}

/// A table partitioned by range of one timestamptz column.
#[derive(Debug, Clone, Copy)]
pub struct Partitioned {
    pub parent: &'static str,
    pub unit: Unit,
    /// Periods after the current one that always have a partition.
    pub ahead: i32,
}

/// The IP hashes of redemptions, by day of `redeem_time`.
pub const REDEMPTION_IPS: Partitioned = Partitioned { parent: "redemption_ips", unit: Unit::Day, ahead: 7 };
/// The failed-attempt counters, by day of `window_start`.
pub const ATTEMPT_COUNTERS: Partitioned = Partitioned { parent: "attempt_counters", unit: Unit::Day, ahead: 7 };
/// The history of changes, by month of `occur_time`.
pub const HISTORY: Partitioned = Partitioned { parent: "history", unit: Unit::Month, ahead: 2 };

/// A partition (or a table detached from the parent) whose period ended
/// before the cutoff.
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub attached: bool,
    /// A `DETACH ... CONCURRENTLY` began and did not finish.
    pub detach_pending: bool,
}

impl Partitioned {
    /// Makes the partitions of the current period and the next `ahead`
    /// that are missing; returns how many.
    pub async fn ensure(&self, conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
        let step = format!("{} {}", self.ahead, self.unit.name());
        sqlx::query_scalar!(
            r#"SELECT inv_ensure_partitions($1, $2, (now() AT TIME ZONE 'UTC')::date,
                      ((now() AT TIME ZONE 'UTC') + $3::text::interval)::date) AS "created!""#,
            self.parent,
            self.unit.name(),
            step,
        )
        .fetch_one(conn)
        .await
    }

    /// Its partitions (and tables detached from it) whose period ended at
    /// or before `cutoff`, oldest first.
    pub async fn expired(
        &self,
        conn: &mut PgConnection,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<Partition>, sqlx::Error> {
        let pattern = format!("^{}_p[0-9]{{{}}}$", self.parent, self.unit.digits());
        let format = match self.unit {
            Unit::Day => "YYYYMMDD",
            Unit::Month => "YYYYMM",
        };
        let step = format!("1 {}", self.unit.name());
        let rows = sqlx::query!(
            r#"SELECT c.relname::text AS "name!", i.inhrelid IS NOT NULL AS "attached!",
                      coalesce(i.inhdetachpending, false) AS "detach_pending!"
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
               LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = $1::text::regclass
               CROSS JOIN LATERAL (SELECT to_date(right(c.relname, length($3)), $3) AS start) p
               WHERE c.relkind = 'r' AND c.relname ~ $2
                 AND (p.start + $4::text::interval)::timestamp AT TIME ZONE 'UTC' <= $5
               ORDER BY c.relname"#,
            self.parent,
            pattern,
            format,
            step,
            cutoff,
        )
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Partition { name: r.name, attached: r.attached, detach_pending: r.detach_pending })
            .collect())
    }

    /// Drops an ended period: detached first with `DETACH PARTITION
    /// CONCURRENTLY` (writers are not blocked; it cannot run in a
    /// transaction, so `conn` must not be in one; a detach an earlier run
    /// left pending is finished with `FINALIZE`). Returns whether it
    /// dropped it. Dynamic SQL: DDL names the partition (checked against
    /// the parent's pattern first).
    pub async fn drop(&self, conn: &mut PgConnection, part: &Partition) -> Result<bool, sqlx::Error> {
        if !self.names(&part.name) {
            return Ok(false);
        }
        let (parent, name) = (self.parent, part.name.as_str());
        if part.attached {
            let how = if part.detach_pending { "FINALIZE" } else { "CONCURRENTLY" };
            sqlx::query(&format!("ALTER TABLE {parent} DETACH PARTITION {name} {how}")).execute(&mut *conn).await?;
        }
        sqlx::query(&format!("DROP TABLE {name}")).execute(conn).await?;
        Ok(true)
    }

    /// Drops every partition that ended at or before `cutoff`; returns the
    /// names dropped.
    pub async fn drop_expired(
        &self,
        conn: &mut PgConnection,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut dropped = Vec::new();
        for part in self.expired(conn, cutoff).await? {
            if self.drop(conn, &part).await? {
                dropped.push(part.name);
            }
        }
        Ok(dropped)
    }

    /// Whether `name` is one of its partitions' names.
    fn names(&self, name: &str) -> bool {
        name.strip_prefix(self.parent)
            .and_then(|rest| rest.strip_prefix("_p"))
            .is_some_and(|digits| digits.len() == self.unit.digits() && digits.bytes().all(|b| b.is_ascii_digit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_partition_names_are_dropped() {
        assert!(REDEMPTION_IPS.names("redemption_ips_p20261203"));
        assert!(!REDEMPTION_IPS.names("redemption_ips_p202612"), "a month name is not a day's");
        assert!(!REDEMPTION_IPS.names("redemption_ips"));
        assert!(!REDEMPTION_IPS.names("redemption_ips_p2026120x"));
        assert!(!REDEMPTION_IPS.names("redemptions_p20261203"));
        assert!(!REDEMPTION_IPS.names("redemption_ips_p20261203; DROP TABLE members"));
        assert!(HISTORY.names("history_p202612"));
        assert!(!HISTORY.names("history_p20261203"));
    }
}
