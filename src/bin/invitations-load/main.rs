//! `invitations-load`: the load generator of docs/performance.md. `seed`
//! writes a realistic forest and millions of invitations into a fresh
//! database; `run` drives the real service over gRPC and reports throughput
//! and latency percentiles. `scripts/bench` runs both next to pgbench.

mod plan;
mod run;
mod seed;

use clap::{Parser, Subcommand};

/// The service's allocator (src/main.rs), so the load generator's own CPU,
/// on the same cores as the service, stays small too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Seeds a database and drives the invitations service with load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the forest and the invitations into a fresh database.
    Seed(seed::SeedArgs),
    /// Call the service with a fixed number of calls in flight and report.
    Run(run::RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed(args) => seed::seed(args).await,
        Command::Run(args) => run::run(args).await,
    }
}
