//! Postgres access: the only place that holds SQL. Each function is one
//! statement (or one small, named sequence) on a connection or transaction the
//! caller owns; transactions are opened and committed by `service`.

pub mod abuse;
pub mod common_path;
pub mod conversion_stats;
pub mod conversions;
pub mod graph;
pub mod history;
pub mod idempotency;
pub mod invitations;
pub mod lifecycle;
pub mod member_mint;
pub mod members;
pub mod outbox;
pub mod partitions;
pub mod privacy;
pub mod quotas;
pub mod rekey;
pub mod replicas;
pub mod reservations;
pub mod rows;
pub mod statements;
pub mod stats;
pub mod tree;
pub mod waitlist;
pub mod waves;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::domain::error::{DbClass, Error, classify};

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// The embedded migrations in `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Opens a pool lazily: the service starts (and reports NOT_SERVING) even
/// when the database is down, and recovers when it comes back.
pub fn connect_lazy(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<PgPool, sqlx::Error> {
    connect_lazy_as("invitations", url, max_connections, acquire_timeout)
}

/// How to connect to `url`, showing `application_name` in
/// `pg_stat_activity` (`invitations-read` for the standbys): for the sqlx
/// pools and the statement pools alike.
pub fn connect_options(application_name: &str, url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    Ok(options.application_name(application_name))
}

/// A lazy pool whose connections show `application_name` in
/// `pg_stat_activity` (`connect_options`).
pub fn connect_lazy_as(
    application_name: &str,
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(application_name, url)?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings a connection (one round trip) when it goes back to the
        // pool and, by default, again when it comes out: the second ping is
        // only worth its round trip after the connection sat idle a while
        // (docs/performance.md, "Round trips per call").
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// A pooled connection idle at least this long is pinged before use, so a
/// connection the database or the network dropped meanwhile is replaced
/// instead of failing a call. One in use more recently passed the ping sqlx
/// sends when a connection is released; if the database ended it since, the
/// one call that meets it fails as retryable UNAVAILABLE and it is replaced.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// Counters kept without hot rows (docs/design.md, "Counts without hot
/// rows"): writers append rows to `deltas` and never update a counter; the
/// background fold moves deltas into `counts`, keyed by `key`. A reader adds
/// the counter and its pending deltas, so counts are exact either way.
pub struct Counters {
    pub counts: &'static str,
    pub deltas: &'static str,
    pub key: &'static str,
    pub columns: &'static [&'static str],
}

/// Moves up to `limit` deltas of `c` into its counters in one statement (so
/// a reader sees them either as deltas or as counts, never both or
/// neither); returns how many it moved. Skips deltas another fold holds, and
/// upserts counters in key order, so concurrent folds (one per replica) do
/// not deadlock.
pub async fn fold(conn: &mut sqlx::PgConnection, c: &Counters, limit: i64) -> Result<i64, sqlx::Error> {
    // Runtime SQL: one fold for every counter table, which `c` names.
    let Counters { counts, deltas, key, columns } = c;
    let cols = columns.join(", ");
    let sums = columns.iter().map(|col| format!("sum({col})")).collect::<Vec<_>>().join(", ");
    let adds =
        columns.iter().map(|col| format!("{col} = {counts}.{col} + EXCLUDED.{col}")).collect::<Vec<_>>().join(", ");
    sqlx::query_scalar(&format!(
        "WITH batch AS ( \
             DELETE FROM {deltas} WHERE ctid = ANY (ARRAY( \
                 SELECT ctid FROM {deltas} LIMIT $1 FOR UPDATE SKIP LOCKED)) \
             RETURNING {key}, {cols}), \
         folded AS ( \
             INSERT INTO {counts} ({key}, {cols}) \
             SELECT {key}, {sums} FROM batch GROUP BY {key} ORDER BY {key} \
             ON CONFLICT ({key}) DO UPDATE SET {adds} \
             RETURNING 1) \
         SELECT count(*) FROM batch"
    ))
    .bind(limit)
    .fetch_one(conn)
    .await
}

/// VACUUMs the deltas table of `c` (a few thousand live rows at most, so a
/// few milliseconds), skipping it if another replica is vacuuming it
/// (SKIP_LOCKED). Not the counters: `member_counts` has a row per member,
/// and a VACUUM a second of a table that size is autovacuum's job; the
/// fold's upserts leave few dead rows there. Outside a transaction (VACUUM
/// cannot run in one), by the simple query protocol.
pub async fn vacuum_deltas(pool: &sqlx::PgPool, c: &Counters) -> Result<(), sqlx::Error> {
    // Runtime SQL: the table name is `c`'s constant.
    // No truncation: giving back empty pages at the end takes an ACCESS
    // EXCLUSIVE lock, which would stall every writer appending deltas (and
    // replay it to the standbys' readers).
    sqlx::raw_sql(&format!("VACUUM (SKIP_LOCKED, TRUNCATE false) {}", c.deltas)).execute(pool).await?;
    Ok(())
}

/// Whether a database error is the violation of this named constraint.
pub fn is_constraint_violation(error: &sqlx::Error, constraint: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => db.constraint() == Some(constraint),
        _ => false,
    }
}

/// Whether a database error asks us to retry the transaction (serialization
/// failure or deadlock).
pub fn is_retryable(error: &sqlx::Error) -> bool {
    classify(error) == DbClass::Retry
}

/// Most times a transaction is run by [`with_retry`].
pub const MAX_ATTEMPTS: usize = 5;

/// Runs `op` in a transaction of its own, and again in a fresh one (after a
/// rollback) while it fails with a database error `retry` accepts, up to
/// [`MAX_ATTEMPTS`] runs. The transaction comes back uncommitted with the
/// value: the caller commits, some after writing their stored answer.
///
/// `op` takes the transaction and hands it back rather than borrowing it:
/// an async closure over `&mut Tx` makes a future rustc cannot prove `Send`
/// for every lifetime, which the tonic handlers need.
pub async fn with_retry<T, F, Fut>(
    pool: &PgPool,
    retry: impl Fn(&sqlx::Error) -> bool,
    mut op: F,
) -> Result<(T, Tx<'static>), Error>
where
    F: FnMut(Tx<'static>) -> Fut,
    Fut: std::future::Future<Output = (Tx<'static>, Result<T, Error>)>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (tx, result) = op(pool.begin().await?).await;
        match result {
            Ok(value) => return Ok((value, tx)),
            Err(Error::Database(e)) if attempt < MAX_ATTEMPTS && retry(&e) => tx.rollback().await?,
            Err(e) => return Err(e),
        }
    }
}

/// Cheap liveness query for health checks.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT 1 AS one").fetch_one(pool).await.map(|_| ())
}
