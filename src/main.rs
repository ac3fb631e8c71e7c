//! The `invitations` binary: parse flags, set up telemetry, run a subcommand.

use std::process::ExitCode;

use clap::Parser;
use invitations::app::Listeners;
use invitations::cli::args::{Cli, Command};

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
    let result = match cli.command {
        Command::Serve(args) => match Listeners::bind(&args).await {
            Ok(listeners) => invitations::app::serve(args, listeners, shutdown_signal()).await,
            Err(e) => Err(e),
        },
        Command::Migrate(db) => migrate(db).await,
        Command::Outbox(args) => invitations::cli::outbox::command(args).await,
        Command::Rekey(args) => rekey(args).await,
        Command::HashToken(args) => hash_token(args),
        Command::Admin(args) => invitations::cli::admin::run(args).await,
    };
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

async fn migrate(db: invitations::cli::args::DatabaseArgs) -> anyhow::Result<()> {
    let pool = invitations::store::connect_lazy(&db.database_url, 1, db.db_acquire_timeout)?;
    invitations::app::apply_migrations(&pool, db.db_acquire_timeout).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn rekey(args: invitations::cli::args::RekeyArgs) -> anyhow::Result<()> {
    let secrets = invitations::crypto::secret::Secrets::parse(&args.secrets.secret, &args.secrets.previous_secrets)
        .map_err(anyhow::Error::msg)?;
    let vault = invitations::crypto::vault::Vault::new(&secrets);
    let db = &args.database;
    let pool = invitations::store::connect_lazy(&db.database_url, 2, db.db_acquire_timeout)?;
    let report = invitations::service::rekey::run(&pool, &vault).await?;
    invitations::service::rekey::log_report(&report);
    let r = report.remaining;
    println!(
        "rekeyed {} codes and {} stored answers; not yet under the current secret: {} codes, {} answers          (of which under an unknown secret: {} codes, {} answers)",
        report.codes, report.answers, r.codes, r.answers, r.unknown_key_codes, r.unknown_key_answers
    );
    if r.codes > 0 || r.answers > 0 {
        anyhow::bail!("some rows are not under the current secret yet (see above)");
    }
    Ok(())
}

/// Prints the SHA-256 of a token for `--caller-tokens`. The token comes from
/// standard input (never a flag: it would land in shell history and `ps`).
fn hash_token(args: invitations::cli::args::HashTokenArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let token = if args.generate {
        let mut bytes = [0u8; 32];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)?;
        let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
        println!("token:  {token}");
        token
    } else {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        let token = input.trim_end_matches(['\n', '\r']).to_owned();
        if token.is_empty() {
            anyhow::bail!("no token on standard input (or pass --generate)");
        }
        token
    };
    let hash = invitations::grpc::auth::token_digest_hex(&token);
    if args.generate {
        println!("sha256: {hash}");
    } else {
        println!("{hash}");
    }
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
