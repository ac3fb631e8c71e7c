//! ListHistory, and the background task that keeps the history's monthly
//! partitions: makes the coming months' and, with a retention, drops the
//! months that ended before it. Writing a change's row is each operation's
//! own business (`store::history::append` in its transaction).

use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::error::Error;
use crate::domain::history::{Cursor, Filter};
use crate::store::history::{self, HistoryRow};
use crate::store::partitions;

use super::{Invitations, bad_page_token};

/// Largest ListHistory page.
pub const MAX_HISTORY_PAGE: u32 = 500;
/// ListHistory's page when the caller names none.
pub const DEFAULT_HISTORY_PAGE: u32 = 50;

pub struct HistoryQuery {
    pub filter: Filter,
    pub page_size: u32,
    pub page_token: String,
}

/// One change as ListHistory shows it.
#[derive(Debug, Clone)]
pub struct Change {
    pub occur_time: OffsetDateTime,
    pub caller: String,
    pub operation: String,
    pub invitation_ids: Vec<uuid::Uuid>,
    pub batch_id: Option<uuid::Uuid>,
    pub user_ids: Vec<String>,
    pub reason: String,
    pub request_id: String,
    pub details: Vec<(String, String)>,
}

impl From<HistoryRow> for Change {
    fn from(r: HistoryRow) -> Self {
        // Written by this service as an object of strings; anything else
        // would be a bug, shown as no details rather than a failed page.
        let details = match serde_json::from_str::<serde_json::Value>(&r.details) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        };
        Change {
            occur_time: r.occur_time,
            caller: r.caller,
            operation: r.operation,
            invitation_ids: r.invitation_ids,
            batch_id: r.batch_id,
            user_ids: r.user_ids,
            reason: r.reason,
            request_id: r.request_id,
            details,
        }
    }
}

pub struct HistoryPage {
    pub changes: Vec<Change>,
    pub next_page_token: String,
}

impl Invitations {
    #[tracing::instrument(name = "db.history", skip_all, fields(db.system = "postgresql"))]
    pub async fn list_history(&self, query: HistoryQuery) -> Result<HistoryPage, Error> {
        let scope = query.filter.scope();
        let after = if query.page_token.is_empty() {
            None
        } else {
            let bytes = self.page_tokens.decode(&query.page_token, &scope).ok_or_else(bad_page_token)?;
            Some(Cursor::decode(&bytes).ok_or_else(bad_page_token)?)
        };
        let size = match query.page_size {
            0 => DEFAULT_HISTORY_PAGE,
            n => n.min(MAX_HISTORY_PAGE),
        };
        let mut conn = self.pool.acquire().await?;
        let mut rows = history::page(&mut conn, &query.filter, after.as_ref(), i64::from(size) + 1).await?;
        drop(conn);
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| self.page_tokens.encode(&scope, &r.cursor().encode())).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(HistoryPage { changes: rows.into_iter().map(Change::from).collect(), next_page_token })
    }
}

/// The history's partition upkeep, in every replica (each CREATE and DROP
/// is safe to race): the first round at once, then every `interval`.
pub async fn maintain_history(pool: PgPool, retention: Option<Duration>, interval: Duration) {
    loop {
        if let Err(e) = upkeep(&pool, retention).await {
            tracing::warn!(error = %e, "keeping the history's partitions failed; retrying next interval");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn upkeep(pool: &PgPool, retention: Option<Duration>) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    partitions::HISTORY.ensure(&mut conn).await?;
    let Some(retention) = retention else { return Ok(()) };
    for name in partitions::HISTORY.drop_expired(&mut conn, OffsetDateTime::now_utc() - retention).await? {
        tracing::info!(partition = %name, "dropped a month of history: it ended before the retention");
    }
    Ok(())
}
