//! `invitations outbox [status|replay …]`: the backlog report and the
//! replay of sent events, over a connection of its own.

use time::OffsetDateTime;

use super::args::{OutboxAction, OutboxArgs};
use crate::domain::events::EventType;
use crate::store::{self, outbox};

/// `invitations outbox [status|replay …]`: prints a report on stdout.
pub async fn command(args: OutboxArgs) -> anyhow::Result<()> {
    let db = &args.database;
    let pool = store::connect_lazy(&db.database_url, 1, db.db_acquire_timeout)?;
    let mut conn = pool.acquire().await?;
    let report = match args.action.unwrap_or(OutboxAction::Status) {
        OutboxAction::Status => {
            let backlog = outbox::backlog(&mut conn).await?;
            let by_type = outbox::counts_by_type(&mut conn).await?;
            status_report(&backlog, &by_type)
        }
        OutboxAction::Replay { since, until, event_type, dry_run } => {
            if let Some(t) = &event_type
                && EventType::parse(t).is_none()
            {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
                anyhow::bail!("unknown event type {t:?}; one of {}", known.join(", "));
            }
            let until = until.unwrap_or_else(OffsetDateTime::now_utc);
            let n = outbox::requeue(&mut conn, since, until, event_type.as_deref(), dry_run).await?;
            if dry_run {
                format!("would replay {n} sent events (dry run: nothing changed)\n")
            } else {
                format!(
                    "replaying {n} events: marked pending, the relays publish them again \
                     (JetStream drops those still inside its duplicate window)\n"
                )
            }
        }
    };
    print!("{report}");
    drop(conn);
    pool.close().await;
    Ok(())
}

fn status_report(backlog: &outbox::Backlog, by_type: &[(String, i64, i64)]) -> String {
    let mut out = format!(
        "pending: {}\noldest pending: {}\n",
        backlog.pending,
        if backlog.pending == 0 { "-".to_owned() } else { format!("{:.1}s ago", backlog.oldest_age_seconds) }
    );
    if !by_type.is_empty() {
        out.push_str(&format!("\n{:<24} {:>10} {:>12}\n", "type", "pending", "sent (kept)"));
        for (event_type, pending, sent) in by_type {
            out.push_str(&format!("{event_type:<24} {pending:>10} {sent:>12}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_report_lists_types() {
        let backlog = outbox::Backlog { pending: 3, oldest_age_seconds: 12.34 };
        let text = status_report(&backlog, &[("minted".into(), 1, 5), ("redeemed".into(), 2, 0)]);
        assert!(text.starts_with("pending: 3\noldest pending: 12.3s ago\n"), "{text}");
        assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["redeemed", "2", "0"]), "{text}");
        let empty = status_report(&outbox::Backlog::default(), &[]);
        assert_eq!(empty, "pending: 0\noldest pending: -\n");
    }
}
