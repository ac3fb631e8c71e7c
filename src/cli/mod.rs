//! The command line: the clap tree (`args`), every `*Args → *Settings`
//! conversion (`settings`), the operator's admin client (`admin`), the
//! `outbox` command and the one-shot `commands`; [`run`] dispatches a
//! parsed command line. Nothing below this layer knows about clap.

pub mod admin;
pub mod args;
pub mod commands;
pub mod outbox;
pub mod settings;

use std::future::Future;

use args::Command;

/// Runs one subcommand; `serve` until `shutdown` completes.
pub async fn run(command: Command, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let listeners = crate::app::Listeners::bind(&args).await?;
            crate::app::serve(args, listeners, shutdown).await
        }
        Command::Migrate(db) => commands::migrate(db).await,
        Command::Outbox(args) => outbox::command(args).await,
        Command::Rekey(args) => commands::rekey(args).await,
        Command::HashToken(args) => commands::hash_token(args),
        Command::Admin(args) => admin::run(args).await,
    }
}
