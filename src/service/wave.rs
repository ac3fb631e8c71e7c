//! Waves: Mint by selector. `count` invitations, one each for members drawn
//! at random among those a selector matches, in one batch and one
//! transaction; the draw stays in the database (`store::waves`), so a wave
//! over a million members moves only the new codes, never the member list
//! (docs/design.md, "Waves").

use crate::domain::MAX_WAVE_LISTED;
use crate::domain::error::Error;
use crate::domain::history::{Entry, Operation};
use crate::domain::selector::Wave;
use crate::store::history;
use crate::store::{self, waves};

use super::mint::Recipients;
use super::{Answer, Idempotency, Invitations, MintCommand, MintOutcome};

impl Invitations {
    pub(super) async fn mint_wave(
        &self,
        cmd: &MintCommand,
        wave: Wave,
        idem: Idempotency<'_, MintOutcome>,
    ) -> Result<Answer<MintOutcome>, Error> {
        let count = i64::from(wave.count);
        if cmd.dry_run {
            let mut conn = self.pool.acquire().await?;
            let (matched, recipients) =
                waves::sample(&mut conn, wave.selector, count.min(MAX_WAVE_LISTED as i64)).await?;
            return Ok(Answer::Fresh(MintOutcome {
                count: matched.min(count) as u32,
                matched: matched as u32,
                recipients,
                dry_run: true,
                ..MintOutcome::default()
            }));
        }
        if let Some(bytes) = self.replay("Mint", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let batch = self.batch_attributes(cmd)?;
        // A member drawn and then erased before the insert (EraseMember
        // renames it under its row lock, which the insert's key check waits
        // for) fails the foreign key: draw again, the tombstone is a member.
        let (tx, outcome, drawn) = store::with_retry(&self.pool, store::waves::is_erased_recipient, |mut tx| {
            let batch = &batch;
            async move {
                let result = self.draw_and_mint(&mut tx, batch, wave.selector, count).await;
                (tx, result)
            }
        })
        .await
        .map(|((outcome, drawn), tx)| (tx, outcome, drawn))?;
        let matched = outcome.matched;
        let mut tx = tx;
        let entry = Entry::new(Operation::Mint, &cmd.minted_by)
            .batch(batch.id)
            .request(idem.request_id.as_ref())
            .detail("count", drawn)
            .detail("label", &cmd.label)
            .detail("wave", "true");
        history::append(&mut tx, &entry).await?;
        let answer = self.commit_answer(tx, "Mint", &idem, outcome).await?;
        if matches!(answer, Answer::Fresh(_)) {
            self.metrics.minted(drawn as u64);
        }
        tracing::info!(batch_id = %batch.id, matched, count = drawn, label = %cmd.label, "minted a wave");
        Ok(answer)
    }

    async fn draw_and_mint(
        &self,
        tx: &mut store::Tx<'_>,
        batch: &crate::store::invitations::BatchAttributes<'_>,
        selector: crate::domain::selector::Selector,
        count: i64,
    ) -> Result<(MintOutcome, i64), Error> {
        let (matched, drawn) = waves::draw(tx, selector, count).await?;
        let mut outcome = MintOutcome { matched: matched as u32, count: drawn as u32, ..MintOutcome::default() };
        if drawn > 0 {
            let listed = MAX_WAVE_LISTED;
            outcome.invitations = self.mint_batch(tx, batch, Recipients::Wave(drawn as usize), listed).await?;
            outcome.recipients = waves::recipients(tx, listed as i64).await?;
            outcome.batch_id = Some(batch.id);
            outcome.truncated = drawn as usize > listed;
        }
        Ok((outcome, drawn))
    }
}
