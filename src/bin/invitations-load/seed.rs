//! `seed`: writes the layout of `plan` straight into a fresh database, much
//! faster than a million RPCs would. The forest is generated in SQL (members
//! as RegisterMembers and Reparent leave them: id, path, inviter; counters as
//! the migration computes them). The invitations are made with the crate's
//! own code: codes from `plan`, hashed and sealed by `vault` under the
//! service's secret, inserted with `store::invitations` in batches of 10,000
//! (what a Mint of 10,000 writes, minus its outbox events).

use std::time::Instant;

use anyhow::Context;
use invitations::crypto::secret::Secrets;
use invitations::crypto::vault::{Purpose, Vault};
use invitations::store::{self, invitations as rows};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::plan::{Layout, user_id};

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub layout: Layout,
    /// The service's database (migrations are applied first).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The service's secret: the seeded codes are hashed and sealed under it.
    #[arg(long, env = "INVITATIONS_SECRET", hide_env_values = true)]
    pub secret: String,
}

const BATCH: usize = 10_000;

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let layout = args.layout;
    let pool = PgPoolOptions::new().max_connections(3).connect(&args.database_url).await.context("connecting")?;
    store::MIGRATOR.run(&pool).await.context("applying migrations")?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM members").fetch_one(&pool).await?;
    anyhow::ensure!(existing == 0, "the database already holds {existing} members: seed a fresh one");

    let start = Instant::now();
    let mut conn = pool.acquire().await?;
    for statement in layout.forest_sql() {
        sqlx::query(&statement).execute(&mut *conn).await.with_context(|| format!("running {statement}"))?;
    }
    drop(conn);
    println!("forest: {} members in {:.1} s", layout.members, start.elapsed().as_secs_f64());

    let start = Instant::now();
    let secrets = Secrets::parse(&args.secret, &[]).map_err(anyhow::Error::msg)?;
    let vault = Vault::new(&secrets);
    let codes = layout.codes();
    let key_id = vault.current_key_id();
    // Two writers, so sealing the next batch overlaps inserting this one.
    let (send, receive) = tokio::sync::mpsc::channel::<Vec<rows::NewInvitation>>(2);
    let receive = std::sync::Arc::new(tokio::sync::Mutex::new(receive));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, receive) = (pool.clone(), receive.clone());
            tokio::spawn(async move {
                loop {
                    let next = receive.lock().await.recv().await;
                    match next {
                        Some(batch) => write_batch(&pool, &batch, key_id).await?,
                        None => return Ok::<(), anyhow::Error>(()),
                    }
                }
            })
        })
        .collect();
    for (chunk_start, chunk) in (0_i64..).step_by(BATCH).zip(codes.chunks(BATCH)) {
        let batch = chunk
            .iter()
            .zip(chunk_start..)
            .map(|(code, k)| {
                let id = Uuid::now_v7();
                let sealed = vault.seal(id.as_bytes(), code.as_str().as_bytes())?;
                Ok(rows::NewInvitation {
                    id,
                    code_hash: vault.hash(Purpose::Code, code.as_str().as_bytes()),
                    code_ciphertext: sealed.bytes,
                    owner: rows::Owner::Named(Some(user_id(layout.owner_of(k)))),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        send.send(batch).await.context("a writer stopped")?;
    }
    drop(send);
    for writer in writers {
        writer.await??;
    }
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    println!("invitations: {} in {:.1} s", layout.invitations, start.elapsed().as_secs_f64());
    Ok(())
}

/// One batch as Mint writes it: the batch row, then its invitations.
async fn write_batch(pool: &sqlx::PgPool, invitations: &[rows::NewInvitation], key_id: i32) -> anyhow::Result<()> {
    let batch = rows::BatchAttributes {
        id: Uuid::now_v7(),
        label: "seed",
        note: "",
        minted_by: "invitations-load",
        max_uses: 1,
        expire_time: None,
        key_id,
        binding: None,
        attributes: &invitations::domain::attributes::NONE,
    };
    let mut tx = pool.begin().await?;
    rows::insert_batch(&mut tx, &batch, i32::try_from(invitations.len())?).await?;
    let inserted = rows::insert_invitations(&mut tx, &batch, invitations).await?;
    let collided = invitations.len() - inserted.len();
    anyhow::ensure!(collided == 0, "{collided} seeded codes collided: use another --seed");
    tx.commit().await?;
    Ok(())
}
