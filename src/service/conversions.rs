//! Conversions (docs/design.md, "Conversions and rewards"): a member did a
//! qualifying action of a kind the operator named; recorded once per
//! member and kind, attributed to the invitation it joined through, and
//! rewarded by the kind's rule in the same statement (the codes are made
//! here, as for the quota grants of a one-statement Redeem). None of this
//! knows about gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Answer, Idempotency, Invitations};
use crate::domain::UserId;
use crate::domain::error::Error;

use crate::domain::conversion::{ConversionKind, RewardRule};
use crate::domain::events::{self, EventHead};
use crate::store::conversions::{self as conv, ConversionRow, Recorded, RuleRow};

/// Conversions and rewards as configured (`--conversion-kinds`,
/// `--reward-rule`, `--reward-cap`).
#[derive(Debug, Clone, Default)]
pub struct ConversionSettings {
    /// The kinds RecordConversion accepts; empty: conversions are off.
    pub kinds: Vec<ConversionKind>,
    pub rules: BTreeMap<ConversionKind, RewardRule>,
    /// Most rewarded conversions per inviter per `cap_period` (0: no cap).
    pub cap: u32,
    pub cap_period: std::time::Duration,
    /// Rewards wait this long, then the background granter grants them
    /// (zero: granted with the conversion).
    pub hold: std::time::Duration,
    /// Rewards of conversions whose redemption the abuse checks flagged.
    pub flagged: Flagged,
}

/// What `--reward-flagged` does with a conversion whose redemption was
/// flagged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flagged {
    /// Rewarded like any other.
    #[default]
    Grant,
    /// Held for ReviewRewards.
    Hold,
    /// Not rewarded.
    Deny,
}

impl Flagged {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Flagged::Grant => "grant",
            Flagged::Hold => "hold",
            Flagged::Deny => "deny",
        }
    }
}

pub struct ConversionCommand {
    pub user: UserId,
    pub kind: ConversionKind,
    /// None: when recorded.
    pub occur_time: Option<OffsetDateTime>,
    pub value: Option<i64>,
}

pub struct ConversionOutcome {
    pub conversion: ConversionRow,
    pub created: bool,
}

impl Invitations {
    pub fn with_conversions(self, conversions: ConversionSettings) -> Self {
        Self { conversions: Arc::new(conversions), ..self }
    }

    /// RecordConversion: one statement; with a request_id, that statement
    /// and the stored answer in one transaction.
    #[tracing::instrument(name = "db.record_conversion", skip_all, fields(db.system = "postgresql"))]
    pub async fn record_conversion(
        &self,
        cmd: ConversionCommand,
        idem: Idempotency<'_, ConversionOutcome>,
    ) -> Result<Answer<ConversionOutcome>, Error> {
        let settings = &self.conversions;
        if settings.kinds.is_empty() {
            return Err(Error::ConversionsDisabled);
        }
        if !settings.kinds.contains(&cmd.kind) {
            let known: Vec<&str> = settings.kinds.iter().map(ConversionKind::as_str).collect();
            return Err(Error::invalid("kind", format!("is not a kind this service records ({})", known.join(", "))));
        }
        if let Some(bytes) = self.replay("RecordConversion", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let record = self.prepared_record(&cmd)?;
        let recorded = match &idem.request_id {
            None => {
                let mut conn = self.pool.acquire().await?;
                conv::record(&mut conn, &record).await?
            }
            Some(_) => {
                let mut tx = self.pool.begin().await?;
                let recorded = conv::record(&mut tx, &record).await?;
                let outcome = self.outcome(recorded)?;
                let granted = granted(&outcome);
                let answer = self.commit_answer(tx, "RecordConversion", &idem, outcome).await?;
                if let Answer::Fresh(_) = &answer {
                    self.metrics.minted(granted);
                }
                return Ok(answer);
            }
        };
        let outcome = self.outcome(recorded)?;
        if outcome.created {
            self.waker.committed();
            self.metrics.minted(granted(&outcome));
        }
        Ok(Answer::Fresh(outcome))
    }

    fn outcome(&self, recorded: Recorded) -> Result<ConversionOutcome, Error> {
        match recorded {
            Recorded::New(conversion) => {
                tracing::info!(
                    conversion_id = %conversion.id,
                    kind = %conversion.kind,
                    attributed = conversion.inviter_id.is_some(),
                    inviter_reward = conversion.inviter_reward,
                    member_reward = conversion.member_reward,
                    "recorded a conversion"
                );
                Ok(ConversionOutcome { conversion, created: true })
            }
            Recorded::Existing(conversion) => Ok(ConversionOutcome { conversion, created: false }),
            Recorded::UnknownMember => Err(Error::NotFound { what: "member", field: "user_id" }),
        }
    }

    /// The statement's inputs: ids, the events' known parts, and codes for
    /// the full reward (the statement mints what the privileges and the cap
    /// allow, and drops the rest).
    fn prepared_record<'a>(&self, cmd: &'a ConversionCommand) -> Result<conv::Record<'a>, Error> {
        let settings = &self.conversions;
        let rule = settings.rules.get(&cmd.kind).copied().unwrap_or(RewardRule { inviter: 0, member: 0 });
        // A held reward is minted by the granter: no codes to make now.
        let held = !settings.hold.is_zero();
        let id = Uuid::now_v7();
        let (user_id, kind) = (cmd.user.as_str(), cmd.kind.as_str());
        let event = EventHead::new();
        let occur_time = cmd.occur_time.unwrap_or(event.time);
        Ok(conv::Record {
            id,
            user_id,
            kind,
            occur_time: Some(occur_time),
            value: cmd.value,
            rule: RuleRow {
                inviter: rule.inviter as i32,
                member: rule.member as i32,
                cap: settings.cap as i32,
                cap_secs: settings.cap_period.as_secs_f64(),
                key_id: self.vault.current_key_id(),
                hold_secs: settings.hold.as_secs_f64(),
                flagged: settings.flagged.as_str(),
            },
            inviter_grant: self.prepared_grant(if held { 0 } else { rule.inviter as usize })?,
            member_grant: self.prepared_grant(if held { 0 } else { rule.member as usize })?,
            converted_fixed: events::converted_fixed(id, user_id, kind, occur_time, cmd.value),
            event,
            reward_event: EventHead::new(),
            reward_fixed: events::reward_fixed(id, user_id, kind),
        })
    }
}

/// Invitations a fresh conversion's reward minted.
/// Invitations this recording minted: only a reward granted now (a pending
/// one is counted by the granter when it grants it, one held for review
/// when approved, a denied one never).
fn granted(outcome: &ConversionOutcome) -> u64 {
    let c = &outcome.conversion;
    if !outcome.created || c.reward_state != "granted" {
        return 0;
    }
    (c.inviter_reward.max(0) + c.member_reward.max(0)) as u64
}
