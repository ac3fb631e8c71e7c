//! Mint: invitations for named users and unowned ones, in one batch.

use super::*;

impl Invitations {
    #[tracing::instrument(name = "db.mint", skip_all, fields(db.system = "postgresql"))]
    pub async fn mint(
        &self,
        cmd: MintCommand,
        idem: Idempotency<'_, MintOutcome>,
    ) -> Result<Answer<MintOutcome>, Error> {
        let count = cmd.owners.len() as u32 * cmd.per_user + cmd.unowned;
        let owners: Vec<String> = cmd.owners.iter().map(|u| u.as_str().to_owned()).collect();
        if cmd.dry_run {
            self.refuse_disabled_owners(&owners).await?;
            return Ok(Answer::Fresh(MintOutcome { invitations: vec![], batch_id: None, count, dry_run: true }));
        }
        if let Some(bytes) = self.replay("Mint", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        self.refuse_disabled_owners(&owners).await?;
        let expire_time = cmd.ttl.map(|ttl| OffsetDateTime::now_utc() + ttl);
        let binding = match &cmd.binding {
            Some(b) => {
                Some((b.kind(), b.digest().map_err(|e| Error::Internal(anyhow::anyhow!("OS random source: {e}")))?))
            }
            None => None,
        };
        let batch = invitations::BatchAttributes {
            id: Uuid::now_v7(),
            label: &cmd.label,
            note: &cmd.note,
            minted_by: &cmd.minted_by,
            max_uses: cmd.max_uses as i32,
            expire_time,
            key_id: self.vault.current_key_id(),
            binding,
        };
        let mut rows = Vec::with_capacity(count as usize);
        for owner in &owners {
            for _ in 0..cmd.per_user {
                rows.push(self.new_row(Some(owner.clone()))?);
            }
        }
        for _ in 0..cmd.unowned {
            rows.push(self.new_row(None)?);
        }

        let mut tx = self.pool.begin().await?;
        members::ensure(&mut tx, &owners).await?;
        invitations::insert_batch(&mut tx, &batch, count as i32).await?;
        let mut pending = rows;
        // A code collision (about 2^-74 per pair) only redraws that code.
        for _ in 0..MAX_ATTEMPTS {
            let collided = invitations::insert_invitations(&mut tx, &batch, &pending).await?;
            if collided.is_empty() {
                pending.clear();
                break;
            }
            pending.retain(|r| collided.contains(&r.id));
            for row in &mut pending {
                *row = self.new_row(row.inviter_id.take())?;
            }
        }
        if !pending.is_empty() {
            return Err(Error::Internal(anyhow::anyhow!("code collisions did not resolve")));
        }
        let minted = self.reveal(invitations::by_batch(&mut tx, batch.id).await?);
        outbox::append(&mut tx, &events::minted(&minted, self.code_disclosure.as_ref())).await?;
        let outcome = MintOutcome { invitations: minted, batch_id: Some(batch.id), count, dry_run: false };
        let answer = self.commit_answer(tx, "Mint", &idem, outcome).await?;
        if matches!(answer, Answer::Fresh(_)) {
            self.metrics.minted(u64::from(count));
        }
        tracing::info!(batch_id = %batch.id, count, label = %cmd.label, "minted invitations");
        Ok(answer)
    }

    /// A member whose invite privileges are disabled cannot receive
    /// invitations: the whole call is refused, naming the first such member.
    /// (Read without a lock: a disable racing this mint leaves invitations
    /// that Redeem refuses while it lasts.)
    async fn refuse_disabled_owners(&self, owners: &[String]) -> Result<(), Error> {
        if owners.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        match members::first_disabled(&mut conn, owners).await? {
            Some(user_id) => Err(Error::InvitePrivilegesDisabled { user_id }),
            None => Ok(()),
        }
    }

    /// A fresh code, kept only as its lookup hash and sealed under the
    /// invitation's id (docs/design.md, "Codes at rest").
    fn new_row(&self, inviter_id: Option<String>) -> Result<invitations::NewInvitation, Error> {
        let code = self.codes.generate().map_err(|e| Error::Internal(anyhow::anyhow!("OS random source: {e}")))?;
        let id = Uuid::now_v7();
        let sealed = self.vault.seal(id.as_bytes(), code.as_str().as_bytes()).map_err(internal)?;
        Ok(invitations::NewInvitation {
            id,
            code_hash: self.vault.hash(Purpose::Code, code.as_str().as_bytes()),
            code_ciphertext: sealed.bytes,
            inviter_id,
        })
    }
}
