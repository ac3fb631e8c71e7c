//! The common path's connections: one statement per call and nothing after
//! it (docs/performance.md, "The release ping").
//!
//! sqlx's pool sends a ping (Sync → ReadyForQuery, a round trip that wakes
//! the backend) every time a connection goes back to it, whatever the
//! connection just did; sqlx 0.8 and 0.9 offer no way to turn it off. For a
//! call that is one statement that ping is half of its exchanges with
//! Postgres. This pool (deadpool, holding sqlx connections) pings only a
//! connection that needs it: one whose last statement did not finish (the
//! call was abandoned mid-statement, or it failed outside the database),
//! which the ping drains or proves broken, and one idle for
//! [`PING_IF_IDLE_FOR`]. Transactions and background work keep sqlx's pool.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolError, RecycleResult};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::PING_IF_IDLE_FOR;

/// A pool of connections for one-statement calls.
#[derive(Clone)]
pub struct StatementPool(managed::Pool<Manager>);

/// Opens connections with the service's options and decides on reuse
/// whether a connection needs a ping first.
pub struct Manager {
    options: PgConnectOptions,
}

/// A pooled connection and whether its last statement finished.
pub struct Pooled {
    raw: PgConnection,
    settled: bool,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Pooled, sqlx::Error> {
        Ok(Pooled { raw: PgConnection::connect_with(&self.options).await?, settled: true })
    }

    async fn recycle(&self, conn: &mut Pooled, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        // A failed ping discards the connection; the pool opens another.
        if !conn.settled || metrics.last_used() >= PING_IF_IDLE_FOR {
            if let Err(e) = conn.raw.ping().await {
                // An abandoned statement's own error (its deadline, a
                // refusal) is read first; the connection is sound if a
                // second ping answers.
                if !matches!(e, sqlx::Error::Database(_)) {
                    return Err(e.into());
                }
                conn.raw.ping().await?;
            }
            conn.settled = true;
        }
        Ok(())
    }
}

impl StatementPool {
    /// A lazy pool of at most `max_connections`: none is opened before a call
    /// needs one (`options` from `store::connect_options`).
    pub fn new(
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let manager = Manager { options };
        let size = usize::try_from(max_connections.max(1)).unwrap_or(1);
        managed::Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .recycle_timeout(Some(acquire_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map(Self)
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))
    }

    /// A connection for one statement. Call [`Lease::settle`] with the
    /// statement's result; a lease dropped unsettled is pinged before its
    /// next use.
    pub async fn get(&self) -> Result<Lease, sqlx::Error> {
        let mut object = self.0.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            PoolError::Closed => sqlx::Error::PoolClosed,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })?;
        object.settled = false;
        Ok(Lease(object))
    }

    /// Open connections and idle ones among them.
    pub fn status(&self) -> (usize, usize) {
        let status = self.0.status();
        (status.size, status.available)
    }

    /// Most connections it opens.
    pub fn max_size(&self) -> usize {
        self.0.status().max_size
    }
}

/// A connection of a statement pool for one statement.
pub struct Lease(managed::Object<Manager>);

impl Lease {
    /// Marks the statement finished unless it failed outside the database
    /// (I/O, protocol, a dropped connection): those leave the connection to
    /// be pinged, and replaced if the ping fails.
    pub fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.0.settled = matches!(result, Ok(_) | Err(sqlx::Error::Database(_)) | Err(sqlx::Error::RowNotFound));
    }

    /// [`Self::settle`], handing the result back: `conn.settled(result)?`.
    pub fn settled<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.settle(&result);
        result
    }
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.0.raw
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0.raw
    }
}
