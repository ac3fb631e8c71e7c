//! Quota policies: invitations the service grants by itself, all off by
//! default (docs/design.md, "Quotas"):
//! - welcome: K invitations when a member joins (RegisterMembers, Redeem),
//!   in the joining call's transaction;
//! - refill: when one of a member's invitations is redeemed, their unspent
//!   ones are topped up to K in the Redeem's transaction;
//! - earn: one invitation per interval since joining, never above a cap of
//!   unspent ones, granted by a background granter that replicas share.
//!
//! Every grant is a batch minted through `mint_batch` (the same insert path,
//! events and bookkeeping as Mint), labelled and minted by `policy:<name>`.
//! Members with disabled invite privileges get nothing.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Member;
use crate::domain::attributes::Attributes;
use crate::domain::error::Error;
use crate::domain::events::{self, EventHead};
use crate::store::common_path::{PreparedGrant, QuotaGrants};
use crate::store::invitations::{BatchAttributes, Owner};
use crate::store::quotas;

use super::Invitations;
use super::mint::Recipients;

/// Members the granter takes per transaction.
const EARN_BATCH: i64 = 1000;

/// Most invitations a welcome grant or refill gives one member (a
/// RegisterMembers call of 10,000 members then mints at most a million).
pub const MAX_GRANT: u32 = 100;

/// The configured policies.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    /// Invitations on joining (0: off).
    pub welcome: u32,
    /// Unspent invitations a redeem tops its inviter up to (0: off).
    pub refill_to: u32,
    pub earn: Option<Earn>,
    /// Carried by every granted invitation (--grant-attributes).
    pub grant_attributes: Attributes,
}

#[derive(Debug, Clone, Copy)]
pub struct Earn {
    pub interval: Duration,
    /// No tick grants while the member holds this many unspent.
    pub cap: u32,
}

impl Earn {
    pub(crate) fn interval_secs(&self) -> f64 {
        self.interval.as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    Welcome,
    Refill,
    Earn,
}

impl Policy {
    /// The grant's label and minted_by.
    fn name(self) -> &'static str {
        match self {
            Policy::Welcome => "policy:welcome",
            Policy::Refill => "policy:refill",
            Policy::Earn => "policy:earn",
        }
    }
}

impl Invitations {
    pub fn with_quotas(self, quotas: Quotas) -> Self {
        Self { quotas, ..self }
    }

    /// For members who just joined (their join time was set in `tx`): the
    /// welcome grant and the start of their earn schedule. Returns how many
    /// invitations it minted.
    pub(super) async fn on_join(&self, tx: &mut PgConnection, user_ids: &[String]) -> Result<u64, Error> {
        if user_ids.is_empty() {
            return Ok(0);
        }
        if let Some(earn) = self.quotas.earn {
            quotas::schedule(&mut *tx, user_ids, earn.interval_secs()).await?;
        }
        if self.quotas.welcome == 0 {
            return Ok(0);
        }
        let welcomed = quotas::enabled_among(&mut *tx, user_ids).await?;
        let owners: Vec<Option<String>> = welcomed
            .into_iter()
            .flat_map(|user| std::iter::repeat_n(Some(user), self.quotas.welcome as usize))
            .collect();
        self.grant(tx, Policy::Welcome, &owners).await
    }

    /// In a Redeem that spent a use of `inviter`'s invitation (the caller
    /// holds the inviter's row and checked its privileges): tops the
    /// inviter's unspent invitations up to the refill level. Returns how many
    /// it minted.
    pub(super) async fn refill(&self, tx: &mut PgConnection, inviter: &Member) -> Result<u64, Error> {
        let level = i64::from(self.quotas.refill_to);
        if level == 0 || !inviter.privileges.enabled {
            return Ok(0);
        }
        quotas::lock_grants(&mut *tx, inviter.id).await?;
        let unspent = quotas::unspent_count(&mut *tx, &inviter.user_id).await?;
        if unspent >= level {
            return Ok(0);
        }
        let owners = vec![Some(inviter.user_id.clone()); (level - unspent) as usize];
        self.grant(tx, Policy::Refill, &owners).await
    }

    /// The grants a one-statement Redeem may make (`inv_redeem`'s quotas),
    /// prepared before the call: codes for a full welcome grant and a full
    /// refill, of which the statement mints what the counts call for.
    pub(super) fn prepared_quotas(&self) -> Result<QuotaGrants, Error> {
        let q = &self.quotas;
        if q.welcome == 0 && q.refill_to == 0 && q.earn.is_none() {
            // No policy grants anything (nor schedules anything).
            return Ok(QuotaGrants::default());
        }
        Ok(QuotaGrants {
            welcome: q.welcome as i32,
            refill_to: q.refill_to as i32,
            earn_secs: q.earn.map(|earn| earn.interval_secs()),
            key_id: self.vault.current_key_id(),
            welcome_grant: self.prepared_grant(q.welcome as usize)?,
            refill_grant: self.prepared_grant(q.refill_to as usize)?,
        })
    }

    /// `n` fresh codes for one grant, made as `mint_batch` makes them, in id
    /// order, with their minted event's parts.
    pub(super) fn prepared_grant(&self, n: usize) -> Result<PreparedGrant, Error> {
        let mut grant = PreparedGrant::default();
        if n == 0 {
            return Ok(grant);
        }
        grant.batch_id = Uuid::now_v7();
        grant.attributes = self.quotas.grant_attributes.to_stored();
        grant.event = EventHead::new();
        let mut codes: HashMap<Uuid, String> = HashMap::with_capacity(n);
        let mut rows = (0..n).map(|_| self.new_row(Owner::Named(None), &mut codes)).collect::<Result<Vec<_>, _>>()?;
        rows.sort_by_key(|row| row.id);
        for row in rows {
            if let (Some(disclosure), Some(code)) = (&self.code_disclosure, codes.get(&row.id)) {
                let (code_field, link_field) = events::grant_code_fields(code, disclosure);
                grant.code_fields.push(code_field);
                grant.link_fields.push(link_field);
            }
            grant.ids.push(row.id);
            grant.hashes.push(row.code_hash);
            grant.sealed.push(row.code_ciphertext);
        }
        Ok(grant)
    }

    /// One batch of policy invitations (single use, no expiry).
    async fn grant(&self, tx: &mut PgConnection, policy: Policy, owners: &[Option<String>]) -> Result<u64, Error> {
        if owners.is_empty() {
            return Ok(0);
        }
        let batch = BatchAttributes {
            id: Uuid::now_v7(),
            label: policy.name(),
            note: "",
            minted_by: policy.name(),
            max_uses: 1,
            expire_time: None,
            key_id: self.vault.current_key_id(),
            binding: None,
            attributes: &self.quotas.grant_attributes,
        };
        self.mint_batch(tx, &batch, Recipients::Listed(owners), 0).await?;
        tracing::info!(batch_id = %batch.id, policy = policy.name(), count = owners.len(), "granted invitations");
        Ok(owners.len() as u64)
    }

    /// One pass of the earn granter: schedules members who joined while the
    /// policy was off, then grants due ticks, a transaction per batch of
    /// members, until none are left. Returns how many it granted.
    async fn grant_earned(&self, earn: Earn) -> Result<u64, Error> {
        let mut granted = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let scheduled = quotas::schedule_unscheduled(&mut tx, earn.interval_secs(), EARN_BATCH).await?;
            let due = quotas::take_due(&mut tx, earn.interval_secs(), EARN_BATCH).await?;
            let owners: Vec<Option<String>> = due
                .iter()
                .filter(|d| d.invite_enabled && d.unspent < i64::from(earn.cap))
                .map(|d| Some(d.user_id.clone()))
                .collect();
            let minted = self.grant(&mut tx, Policy::Earn, &owners).await?;
            tx.commit().await?;
            if minted > 0 {
                self.waker.committed();
                self.metrics.minted(minted);
            }
            granted += minted;
            if (due.len() as i64) < EARN_BATCH && (scheduled as i64) < EARN_BATCH {
                return Ok(granted);
            }
        }
    }
}

/// The earn granter: a pass every `interval` until the task is dropped (only
/// when the earn policy is on). Safe across replicas: each pass takes due
/// members `FOR UPDATE SKIP LOCKED` and moves their schedule in the
/// transaction that grants, so a tick is granted once.
pub async fn grant_earned_invitations(service: std::sync::Arc<Invitations>, interval: Duration) {
    let Some(earn) = service.quotas.earn else { return };
    loop {
        match service.grant_earned(earn).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "granted earned invitations"),
            Err(e) => tracing::warn!(error = %e, "granting earned invitations failed; retrying next interval"),
        }
        tokio::time::sleep(interval).await;
    }
}
