//! The one-shot subcommands that work on the database or the terminal:
//! `migrate`, `rekey` and `hash-token`.

pub async fn migrate(db: crate::cli::args::DatabaseArgs) -> anyhow::Result<()> {
    let pool = crate::store::connect_lazy(&db.database_url, 1, db.db_acquire_timeout)?;
    crate::app::apply_migrations(&pool, db.db_acquire_timeout).await?;
    tracing::info!("migrations applied");
    Ok(())
}

pub async fn rekey(args: crate::cli::args::RekeyArgs) -> anyhow::Result<()> {
    let secrets = crate::crypto::secret::Secrets::parse(&args.secrets.secret, &args.secrets.previous_secrets)
        .map_err(anyhow::Error::msg)?;
    let vault = crate::crypto::vault::Vault::new(&secrets);
    let db = &args.database;
    let pool = crate::store::connect_lazy(&db.database_url, 2, db.db_acquire_timeout)?;
    let report = crate::service::rekey::run(&pool, &vault).await?;
    crate::service::rekey::log_report(&report);
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
pub fn hash_token(args: crate::cli::args::HashTokenArgs) -> anyhow::Result<()> {
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
    let hash = crate::grpc::auth::token_digest_hex(&token);
    if args.generate {
        println!("sha256: {hash}");
    } else {
        println!("{hash}");
    }
    Ok(())
}
