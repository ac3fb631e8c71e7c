//! Held rewards and voids (docs/design.md, "Conversions and rewards"): the
//! background granter that mints a pending reward when its hold ends
//! (`--reward-hold`), and VoidConversion, which drops a pending reward or
//! revokes what a granted one minted while still unspent. Both lock the
//! conversion's row, so a void racing the end of the hold either finds the
//! reward pending (and the granter then skips it) or granted (and revokes
//! it): never granted and kept.

use std::sync::Arc;

use uuid::Uuid;

use super::mint::Recipients;
use super::{Answer, Idempotency, Invitations};
use crate::domain::error::Error;
use crate::domain::events::{self, Event, RewardFacts};
use crate::domain::history::{Entry, Operation};
use crate::store;
use crate::store::conversions::{self as conv, ConversionRow};
use crate::store::history;
use crate::store::invitations::BatchAttributes;
use crate::store::{invitations, outbox};

/// Pending rewards the granter takes per transaction.
const GRANT_BATCH: i64 = 100;

pub struct VoidCommand {
    pub conversion_id: Uuid,
    pub reason: String,
    pub voided_by: String,
}

/// Most conversions one ReviewRewards names.
pub const MAX_REVIEW_REWARDS: usize = 1_000;

pub struct ReviewRewardsCommand {
    pub conversions: Vec<Uuid>,
    pub approve: bool,
    pub reason: String,
    pub reviewed_by: String,
}

pub struct ReviewRewardsOutcome {
    /// In the order of the command's ids.
    pub conversions: Vec<ConversionRow>,
    pub changed: u32,
}

pub struct VoidOutcome {
    pub conversion: ConversionRow,
    pub changed: bool,
    pub revoked: u32,
    pub kept: u32,
}

fn facts(c: &ConversionRow) -> RewardFacts<'_> {
    RewardFacts {
        conversion_id: c.id,
        kind: &c.kind,
        user_id: &c.user_id,
        inviter_id: c.inviter_id.as_deref().unwrap_or_default(),
    }
}

impl Invitations {
    /// One pass of the granter: due pending rewards, a transaction per
    /// batch of them, until none are left. Returns how many invitations it
    /// minted.
    async fn grant_held(&self) -> Result<u64, Error> {
        let mut granted = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let due = conv::take_due(&mut tx, GRANT_BATCH).await?;
            let mut minted = 0u64;
            let mut events = Vec::with_capacity(due.len());
            for c in &due {
                let (event, n) = self.grant_decided(&mut tx, c).await?;
                minted += n;
                events.push(event);
            }
            outbox::append(&mut tx, &events).await?;
            tx.commit().await?;
            if !due.is_empty() {
                self.waker.committed();
                self.metrics.minted(minted);
            }
            granted += minted;
            if (due.len() as i64) < GRANT_BATCH {
                return Ok(granted);
            }
        }
    }

    /// Mints a decided reward (pending or approved) and marks it granted;
    /// returns its event and how many invitations it minted.
    async fn grant_decided(&self, tx: &mut store::Tx<'_>, c: &ConversionRow) -> Result<(Event, u64), Error> {
        let policy = format!("reward:{}", c.kind);
        let inviter = c.inviter_id.as_deref().unwrap_or_default();
        let inviter_batch = self.reward_batch(tx, &policy, inviter, c.inviter_reward).await?;
        let member_batch = self.reward_batch(tx, &policy, &c.user_id, c.member_reward).await?;
        conv::mark_granted(tx, c.id, inviter_batch, member_batch).await?;
        let counts = (c.inviter_reward.max(0) as u32, c.member_reward.max(0) as u32);
        let event = Event::reward_granted(&facts(c), counts, (inviter_batch, member_batch), c.inviter_capped);
        Ok((event, u64::from(counts.0 + counts.1)))
    }

    /// `n` reward invitations for `owner` as one batch through the one
    /// mint path; None when `n` is 0.
    async fn reward_batch(
        &self,
        tx: &mut store::Tx<'_>,
        policy: &str,
        owner: &str,
        n: i32,
    ) -> Result<Option<Uuid>, Error> {
        if n <= 0 || owner.is_empty() {
            return Ok(None);
        }
        let batch = BatchAttributes {
            id: Uuid::now_v7(),
            label: policy,
            note: "",
            minted_by: policy,
            max_uses: 1,
            expire_time: None,
            key_id: self.vault.current_key_id(),
            binding: None,
            attributes: &crate::domain::attributes::NONE,
        };
        let owners = vec![Some(owner.to_owned()); n as usize];
        self.mint_batch(tx, &batch, Recipients::Listed(&owners), 0).await?;
        Ok(Some(batch.id))
    }

    /// VoidConversion: one transaction under the conversion's row lock.
    #[tracing::instrument(name = "db.void_conversion", skip_all, fields(db.system = "postgresql"))]
    pub async fn void_conversion(
        &self,
        cmd: VoidCommand,
        idem: Idempotency<'_, VoidOutcome>,
    ) -> Result<Answer<VoidOutcome>, Error> {
        if let Some(bytes) = self.replay("VoidConversion", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut tx = self.pool.begin().await?;
        let Some(c) = conv::lock(&mut tx, cmd.conversion_id).await? else {
            return Err(Error::NotFound { what: "conversion", field: "conversion_id" });
        };
        if c.reward_state == "voided" {
            let outcome = VoidOutcome { conversion: c, changed: false, revoked: 0, kept: 0 };
            return self.commit_answer(tx, "VoidConversion", &idem, outcome).await;
        }
        let (mut revoked, mut kept) = (Vec::new(), 0u32);
        if c.reward_state == "granted" {
            let batches: Vec<Uuid> = [c.inviter_batch_id, c.member_batch_id].into_iter().flatten().collect();
            let owners: Vec<String> = c.inviter_id.iter().cloned().chain([c.user_id.clone()]).collect();
            let ids = conv::reward_invitations(&mut tx, &owners, &batches).await?;
            let changed = invitations::revoke_ids(&mut tx, &ids, &cmd.reason, &cmd.voided_by).await?;
            kept = (ids.len() - changed.len()) as u32;
            outbox::append(&mut tx, &events::revoked(&changed, &cmd.reason, &cmd.voided_by)).await?;
            revoked = changed.iter().map(|inv| inv.id).collect();
        }
        if matches!(c.reward_state.as_str(), "pending" | "review" | "granted") {
            let was_pending = c.reward_state != "granted";
            let event = Event::reward_voided(&facts(&c), was_pending, &revoked, kept, &cmd.reason, &cmd.voided_by);
            outbox::append(&mut tx, &[event]).await?;
        }
        let conversion = conv::mark_voided(&mut tx, c.id, &cmd.reason, &cmd.voided_by).await?;
        let entry = Entry::new(Operation::ConversionVoid, &cmd.voided_by)
            .invitations(revoked.iter().copied())
            .users(c.inviter_id.iter().chain([&c.user_id]))
            .reason(&cmd.reason)
            .request(idem.request_id.as_ref())
            .detail("conversion_id", c.id)
            .detail("revoked", revoked.len());
        history::append(&mut tx, &entry).await?;
        tracing::info!(conversion_id = %c.id, revoked = revoked.len(), kept, "voided a conversion");
        let outcome = VoidOutcome { conversion, changed: true, revoked: revoked.len() as u32, kept };
        self.commit_answer(tx, "VoidConversion", &idem, outcome).await
    }
}

impl Invitations {
    /// ReviewRewards: the named conversions whose reward waits for review
    /// are approved (granted now, through the one mint path) or denied, in
    /// one transaction; the others are returned as they are. Unknown ids:
    /// NOT_FOUND, nothing changes.
    #[tracing::instrument(name = "db.review_rewards", skip_all, fields(db.system = "postgresql"))]
    pub async fn review_rewards(&self, cmd: ReviewRewardsCommand) -> Result<ReviewRewardsOutcome, Error> {
        let mut tx = self.pool.begin().await?;
        let locked = conv::lock_many(&mut tx, &cmd.conversions).await?;
        if locked.len() != cmd.conversions.len() {
            return Err(Error::NotFound { what: "conversion", field: "conversion_ids" });
        }
        let (mut events, mut minted, mut changed) = (Vec::new(), 0u64, 0u32);
        for c in locked.iter().filter(|c| c.reward_state == "review") {
            conv::mark_reviewed(&mut tx, c.id, !cmd.approve, &cmd.reason, &cmd.reviewed_by).await?;
            if cmd.approve {
                let (event, n) = self.grant_decided(&mut tx, c).await?;
                events.push(event);
                minted += n;
            }
            changed += 1;
        }
        outbox::append(&mut tx, &events).await?;
        if changed > 0 {
            let reviewed: Vec<&ConversionRow> = locked.iter().filter(|c| c.reward_state == "review").collect();
            let ids: Vec<String> = reviewed.iter().map(|c| c.id.to_string()).collect();
            let entry = Entry::new(Operation::RewardReview, &cmd.reviewed_by)
                .users(reviewed.iter().flat_map(|c| c.inviter_id.iter().chain([&c.user_id])))
                .reason(&cmd.reason)
                .detail("approved", cmd.approve)
                .detail("conversions", ids.join(","));
            history::append(&mut tx, &entry).await?;
        }
        let rows = conv::get_many(&mut tx, &cmd.conversions).await?;
        tx.commit().await?;
        if minted > 0 {
            self.waker.committed();
            self.metrics.minted(minted);
        }
        tracing::info!(changed, approved = cmd.approve, "reviewed rewards");
        let mut by_id: std::collections::HashMap<Uuid, ConversionRow> = rows.into_iter().map(|r| (r.id, r)).collect();
        let conversions = cmd.conversions.iter().filter_map(|id| by_id.remove(id)).collect();
        Ok(ReviewRewardsOutcome { conversions, changed })
    }
}

/// The reward granter: a pass every `interval` until the task is dropped
/// (only with a hold configured). Safe across replicas: each pass takes due
/// rewards `FOR UPDATE SKIP LOCKED` and marks them granted in the
/// transaction that mints them, so a reward is granted once.
pub async fn grant_held_rewards(service: Arc<Invitations>, interval: std::time::Duration) {
    loop {
        match service.grant_held().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "granted held rewards"),
            Err(e) => tracing::warn!(error = %e, "granting held rewards failed; retrying next interval"),
        }
        tokio::time::sleep(interval).await;
    }
}
