//! The `invitations` binary: parse flags, set up telemetry, run a subcommand.

use std::process::ExitCode;

use clap::Parser;

use invitations::cli::args::Cli;

/// mimalloc instead of glibc's malloc: a ListForUser answer allocates a few
/// hundred small strings, and glibc's malloc/free were ~11 % of the
/// service's CPU under load (docs/performance.md, "Round trips per call").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exits 1 on an error, which is said once (with its causes) rather than
/// also printed by Rust's `Result`-returning `main`.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match invitations::telemetry::init(cli.log_format.into(), &cli.log) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: setting up telemetry: {}", invitations::telemetry::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = invitations::cli::run(cli.command, shutdown_signal()).await;
    let code = match &result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain = invitations::telemetry::error_chain(e);
            // Once: in the log, or on stderr when the log is off (the admin
            // CLI in scripts, INVITATIONS_LOG=off) so a failure never goes
            // unsaid.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %chain, "exiting with an error");
            } else {
                eprintln!("error: {chain}");
            }
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
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
