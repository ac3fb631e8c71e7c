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

/// `serve`: the flags checked into [`crate::app::Settings`], then the
/// service on `listeners` until `shutdown` completes.
pub async fn serve(
    args: args::ServeArgs,
    listeners: crate::app::Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    crate::app::serve(settings::serve(args)?, listeners, shutdown).await
}

/// Runs one subcommand; `serve` until `shutdown` completes.
pub async fn run(command: Command, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let listeners = crate::app::Listeners::bind(args.listen, args.admin_listen).await?;
            serve(args, listeners, shutdown).await
        }
        Command::Migrate(db) => commands::migrate(db).await,
        Command::Outbox(args) => outbox::command(args).await,
        Command::Rekey(args) => commands::rekey(args).await,
        Command::HashToken(args) => commands::hash_token(args),
        Command::Admin(args) => admin::run(args).await,
    }
}
