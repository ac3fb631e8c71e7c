//! The `invitations` binary: parse flags, set up telemetry, run a subcommand.

use clap::Parser;
use invitations::config::{Cli, Command};
use invitations::server::Listeners;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = invitations::telemetry::init(cli.log_format, &cli.log)?;
    let result = match cli.command {
        Command::Serve(args) => match Listeners::bind(&args).await {
            Ok(listeners) => invitations::server::serve(args, listeners, shutdown_signal()).await,
            Err(e) => Err(e),
        },
        Command::Migrate(db) => migrate(db).await,
        Command::Outbox(args) => invitations::outbox::command(args).await,
    };
    if let Err(e) = &result {
        tracing::error!(error = ?e, "exiting with an error");
    }
    telemetry.shutdown();
    result
}

async fn migrate(db: invitations::config::DatabaseArgs) -> anyhow::Result<()> {
    let pool = invitations::store::connect_lazy(&db.database_url, 1, db.db_acquire_timeout)?;
    invitations::store::MIGRATOR.run(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
