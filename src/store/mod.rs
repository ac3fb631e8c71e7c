//! Postgres access: the only place that holds SQL. Each function is one
//! statement (or one small, named sequence) on a connection or transaction the
//! caller owns; transactions are opened and committed by `service`.

pub mod abuse;
pub mod graph;
pub mod idempotency;
pub mod invitations;
pub mod members;
pub mod outbox;
pub mod quotas;
pub mod rekey;
pub mod reservations;
pub mod tree;
pub mod waves;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// The embedded migrations in `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Opens a pool lazily: the service starts (and reports NOT_SERVING) even
/// when the database is down, and recovers when it comes back.
pub fn connect_lazy(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name("invitations");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options))
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
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// Cheap liveness query for health checks.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
