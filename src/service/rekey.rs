//! Moving codes and stored answers onto the current secret: plaintext rows
//! from before codes were sealed, and rows sealed under a previous secret
//! after a rotation (docs/operations.md, "Rotating secrets"). `serve` runs it
//! at start (plaintext rows first, before taking calls, since they cannot be
//! found by hash until converted) and `invitations rekey` runs it on demand.

use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::vault::{Purpose, Vault};
use crate::domain::history::{Entry, Operation};
use crate::store::history;
use crate::store::rekey::{self, Remaining};

/// The caller a rekey's history rows name (at start or `invitations rekey`).
const REKEYED_BY: &str = "rekey";

/// Rows per transaction.
const BATCH: i64 = 500;

/// What one run did, and what is left.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub codes: u64,
    pub answers: u64,
    pub remaining: Remaining,
}

/// Rewrites every plaintext or previously-sealed code and stored answer
/// under the current secret, in batches; safe to run on several replicas
/// at once. Rows sealed under a secret that is not configured are left
/// alone and counted in `remaining`.
pub async fn run(pool: &PgPool, vault: &Vault) -> anyhow::Result<Report> {
    let old = vault.previous_key_ids();
    let mut report = Report::default();
    loop {
        let mut tx = pool.begin().await?;
        let rows = rekey::codes_to_rekey(&mut tx, &old, BATCH).await?;
        if rows.is_empty() {
            break;
        }
        let (mut ids, mut hashes, mut sealed) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let Some(code) = readable_code(vault, row) else {
                anyhow::bail!("invitation {}: its sealed code does not open with its secret (altered?)", row.id);
            };
            ids.push(row.id);
            hashes.push(vault.hash(Purpose::Code, code.as_bytes()));
            sealed.push(vault.seal(row.id.as_bytes(), code.as_bytes())?.bytes);
        }
        rekey::set_sealed_codes(&mut tx, vault.current_key_id(), &ids, &hashes, &sealed).await?;
        let entry = Entry::new(Operation::Rekey, REKEYED_BY)
            .detail("codes", rows.len())
            .detail("key_id", vault.current_key_id());
        history::append(&mut tx, &entry).await?;
        tx.commit().await?;
        report.codes += rows.len() as u64;
    }
    loop {
        let mut tx = pool.begin().await?;
        let rows = rekey::answers_to_rekey(&mut tx, &old, BATCH).await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let aad = [row.method.as_bytes(), b"\0", row.request_id.as_bytes()].concat();
            let plain = match row.key_id {
                None => row.response.clone(),
                Some(key_id) => vault.open(key_id, &aad, &row.response).ok_or_else(|| {
                    anyhow::anyhow!("stored answer {}/{}: does not open with its secret", row.method, row.request_id)
                })?,
            };
            let sealed = vault.seal(&aad, &plain)?;
            rekey::set_sealed_answer(&mut tx, &row.method, &row.request_id, sealed.key_id, &sealed.bytes).await?;
        }
        let entry = Entry::new(Operation::Rekey, REKEYED_BY)
            .detail("answers", rows.len())
            .detail("key_id", vault.current_key_id());
        history::append(&mut tx, &entry).await?;
        tx.commit().await?;
        report.answers += rows.len() as u64;
    }
    let mut known = old;
    known.push(vault.current_key_id());
    let mut conn = pool.acquire().await?;
    report.remaining = rekey::remaining(&mut conn, vault.current_key_id(), &known).await?;
    Ok(report)
}

fn readable_code(vault: &Vault, row: &rekey::StoredCode) -> Option<String> {
    if let Some(code) = &row.plaintext {
        return Some(code.clone());
    }
    let (key_id, ciphertext) = (row.key_id?, row.ciphertext.as_deref()?);
    String::from_utf8(vault.open(key_id, Uuid::as_bytes(&row.id), ciphertext)?).ok()
}

/// Logs what a run did and what needs the operator.
pub fn log_report(report: &Report) {
    let r = report.remaining;
    if report.codes > 0 || report.answers > 0 {
        tracing::info!(codes = report.codes, answers = report.answers, "rekeyed to the current secret");
    }
    if r.unknown_key_codes > 0 || r.unknown_key_answers > 0 {
        tracing::warn!(
            codes = r.unknown_key_codes,
            answers = r.unknown_key_answers,
            "rows sealed under a secret that is not configured: add it to --previous-secrets and rekey"
        );
    } else if r.codes == 0 && r.answers == 0 {
        tracing::info!("every code and stored answer is under the current secret; previous secrets can go");
    }
}
