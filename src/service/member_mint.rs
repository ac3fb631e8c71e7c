//! CreateMemberInvitation: the product mints on behalf of a member, within
//! the operator's limits (`MemberLimits`, the `--member-*` flags). Distinct
//! from the quota policies (invitations granted by the service itself): both
//! can be on. One transaction under the member's lock
//! (`store::member_mint`), so the rate and unspent limits hold across
//! replicas; minted through the one mint path.

use std::collections::BTreeSet;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::error::Error;
use crate::domain::history::{Entry, Operation};
use crate::domain::{Invitation, UserId};
use crate::store::history;
use crate::store::invitations::BatchAttributes;
use crate::store::member_mint::{self, MINTED_BY, MemberState};

use super::{Answer, Idempotency, Invitations, mint};

/// The operator's limits. `None` / 0: that limit is off.
#[derive(Debug, Clone, Default)]
pub struct MemberLimits {
    /// Whether members may create invitations at all.
    pub enabled: bool,
    /// Most uses per invitation.
    pub max_uses: u32,
    /// Longest lifetime; when set, a ttl is required.
    pub max_ttl: Option<time::Duration>,
    /// Members younger than this (since joining) may not create any.
    pub min_age: time::Duration,
    /// At most `rate.0` per `rate.1`.
    pub rate: Option<(u32, time::Duration)>,
    /// No more while the member holds this many unspent invitations.
    pub max_unspent: Option<u32>,
    /// The attribute keys a member may set (none: no attributes).
    pub attribute_keys: BTreeSet<String>,
}

pub struct MemberMintCommand {
    pub user_id: UserId,
    pub max_uses: u32,
    pub ttl: Option<time::Duration>,
    pub label: String,
    pub attributes: Attributes,
}

/// Which limit refused, as `Error::MemberLimit` names it.
fn refuse(limit: &'static str, flag: &'static str, detail: String) -> Error {
    Error::MemberLimit { limit, flag, detail, retry_after: None }
}

impl MemberLimits {
    /// The limits a request alone can break (before any database work).
    pub fn check_request(&self, cmd: &MemberMintCommand) -> Result<(), Error> {
        if !self.enabled {
            return Err(refuse(
                "MEMBER_INVITATIONS_OFF",
                "--member-invitations",
                "members cannot create invitations".into(),
            ));
        }
        let mut bad = Vec::new();
        for key in cmd.attributes.keys() {
            if !self.attribute_keys.contains(key) {
                bad.push(crate::domain::error::FieldViolation::new(
                    format!("attributes.{key}"),
                    "is not a key members may set (--member-attribute-keys)",
                ));
            }
        }
        if !bad.is_empty() {
            return Err(Error::InvalidArgument(bad));
        }
        if cmd.max_uses > self.max_uses {
            return Err(refuse("MAX_USES", "--member-max-uses", format!("at most {} uses", self.max_uses)));
        }
        if let Some(max_ttl) = self.max_ttl {
            match cmd.ttl {
                None => return Err(refuse("TTL_REQUIRED", "--member-max-ttl", "a ttl is required".into())),
                Some(ttl) if ttl > max_ttl => {
                    return Err(refuse(
                        "MAX_TTL",
                        "--member-max-ttl",
                        format!("ttl at most {}s", max_ttl.whole_seconds()),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The limits that depend on the member, read under its lock.
    fn check_member(&self, m: &MemberState) -> Result<(), Error> {
        if !m.enabled {
            return Err(refuse("PRIVILEGES", "SetInvitePrivileges", "invite privileges are disabled".into()));
        }
        if !self.min_age.is_zero() {
            let old_enough = m.join_time.is_some_and(|t| t + self.min_age <= m.now);
            if !old_enough {
                let days = self.min_age.whole_days();
                return Err(refuse("MEMBER_AGE", "--member-min-age", format!("a member for at least {days} days")));
            }
        }
        if let Some(k) = self.max_unspent
            && m.unspent >= i64::from(k)
        {
            return Err(refuse("MAX_UNSPENT", "--member-max-unspent", format!("at most {k} unspent invitations")));
        }
        if let Some((r, period)) = self.rate
            && m.recent >= i64::from(r)
        {
            let next = m.oldest_recent.map_or(period, |t| t + period - m.now);
            return Err(Error::MemberLimit {
                limit: "RATE",
                flag: "--member-rate",
                detail: format!("at most {r} per {}s", period.whole_seconds()),
                retry_after: Some(next.max(time::Duration::SECOND)),
            });
        }
        Ok(())
    }
}

impl Invitations {
    pub fn with_member_limits(self, member_limits: MemberLimits) -> Self {
        Self { member_limits, ..self }
    }

    #[tracing::instrument(name = "db.create_member_invitation", skip_all, fields(db.system = "postgresql"))]
    pub async fn create_member_invitation(
        &self,
        cmd: MemberMintCommand,
        idem: Idempotency<'_, Invitation>,
    ) -> Result<Answer<Invitation>, Error> {
        self.member_limits.check_request(&cmd)?;
        if let Some(bytes) = self.replay("CreateMemberInvitation", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let period = self.member_limits.rate.map_or(time::Duration::ZERO, |(_, p)| p);
        let mut tx = self.pool.begin().await?;
        let state = member_mint::lock_and_read(&mut tx, cmd.user_id.as_str(), period.as_seconds_f64())
            .await?
            .ok_or(Error::NotFound { what: "member", field: "user_id" })?;
        self.member_limits.check_member(&state)?;
        let batch = BatchAttributes {
            id: Uuid::now_v7(),
            label: &cmd.label,
            note: "",
            minted_by: MINTED_BY,
            max_uses: cmd.max_uses as i32,
            expire_time: cmd.ttl.map(|ttl| OffsetDateTime::now_utc() + ttl),
            key_id: self.vault.current_key_id(),
            binding: None,
            attributes: &cmd.attributes,
        };
        let owner = [Some(cmd.user_id.as_str().to_owned())];
        let mut minted = self.mint_batch(&mut tx, &batch, mint::Recipients::Listed(&owner), 1).await?;
        let invitation = minted.pop().ok_or_else(|| Error::Internal(anyhow::anyhow!("minted nothing")))?;
        let entry = Entry::new(Operation::MemberMint, MINTED_BY)
            .batch(batch.id)
            .users([cmd.user_id.as_str()])
            .request(idem.request_id.as_ref())
            .detail("max_uses", cmd.max_uses);
        history::append(&mut tx, &entry).await?;
        let answer = self.commit_answer(tx, "CreateMemberInvitation", &idem, invitation).await?;
        if matches!(answer, Answer::Fresh(_)) {
            self.metrics.minted(1);
        }
        tracing::info!(batch_id = %batch.id, "a member created an invitation");
        Ok(answer)
    }
}
