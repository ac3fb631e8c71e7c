//! Redeem: spend one use and record the edge, race-free (docs/design.md).

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::code::InvitationCode;
use crate::domain::email::Email;
use crate::domain::error::Error;
use crate::domain::events::{Event, EventHead};
use crate::domain::{Invitation, UserId};
use crate::service::abuse::Attempt;
use crate::store::common_path::{self, Status};
use crate::store::{self, graph, members, outbox, tree};

use super::{Answer, Idempotency, Invitations, abuse, reservation};

/// What a Redeem names: a code, or a reservation to complete.
pub enum RedeemTarget {
    Code(InvitationCode),
    Reservation(Uuid),
}

pub struct RedeemCommand {
    pub target: RedeemTarget,
    pub invitee: UserId,
    pub email: Option<Email>,
    pub client_ip: Option<std::net::IpAddr>,
    /// The attempt limit was passed in `flag` mode: record it.
    pub over_attempt_limit: bool,
}

pub struct Redemption {
    pub invitation: Invitation,
    pub invitee_id: String,
    pub redeem_time: OffsetDateTime,
    /// Abuse signals recorded on this redemption.
    pub flags: Vec<String>,
}

impl Invitations {
    #[tracing::instrument(name = "db.redeem", skip_all, fields(db.system = "postgresql"))]
    pub async fn redeem(
        &self,
        cmd: RedeemCommand,
        idem: Idempotency<'_, Redemption>,
    ) -> Result<Answer<Redemption>, Error> {
        if let Some(bytes) = self.replay("Redeem", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let code_hashes = match &cmd.target {
            RedeemTarget::Code(code) => self.code_hashes(code),
            RedeemTarget::Reservation(_) => Vec::new(),
        };
        let (cmd, code_hashes) = (&cmd, &code_hashes[..]);
        let ((mut redemption, spent_now), tx) =
            store::with_retry(&self.pool, graph::is_redeem_race, |mut tx| async move {
                let result = self.redeem_in(&mut tx, cmd, code_hashes).await;
                (tx, result)
            })
            .await?;
        self.reveal_one(&mut redemption.invitation);
        let answer = self.commit_answer(tx, "Redeem", &idem, redemption).await?;
        if let (Some(granted), Answer::Fresh(_)) = (spent_now, &answer) {
            self.metrics.redeemed();
            if granted > 0 {
                self.metrics.minted(granted);
            }
        }
        Ok(answer)
    }
}

impl Invitations {
    /// Redeem in one round trip (docs/design.md, "One round trip per call"):
    /// a code, no `request_id`; quota grants included. `None`: the request is
    /// not one the statement handles (or it handed over), and the caller
    /// runs [`Invitations::redeem`], which answers it from scratch.
    #[tracing::instrument(name = "db.redeem", skip_all, fields(db.system = "postgresql"))]
    pub async fn redeem_in_one_trip(
        &self,
        cmd: &RedeemCommand,
        attempt: &Attempt,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<Redemption>, Error> {
        let RedeemTarget::Code(code) = &cmd.target else { return Ok(None) };
        let quotas = self.prepared_quotas()?;
        let screening = self.screening(attempt, cmd.email.as_ref());
        let invitee = cmd.invitee.as_str();
        let mut conn = self.statement_conn().await?;
        let hashes = self.code_hashes(code);
        let time_left = self.time_left(timeout);
        let event = EventHead::new();
        let outcome = common_path::redeem(&mut conn, &hashes, invitee, &event, &screening, &quotas, time_left).await;
        conn.settle(&outcome);
        let redeemed = match outcome {
            Ok(Status::Done(redeemed)) => redeemed,
            Ok(Status::Refused(reason)) => return Err(self.refusal(&reason)),
            Ok(Status::General) => return Ok(None),
            // Races the general path retries: deadlocks, the invitee's
            // unique key, the same invitee joining concurrently.
            Err(e) if graph::is_redeem_race(&e) || common_path::is_hand_over(&e) => return Ok(None),
            Err(e) if common_path::is_past_deadline(&e) => return Err(Error::Unavailable(e.into())),
            Err(e) => return Err(e.into()),
        };
        drop(conn);
        self.waker.committed();
        self.metrics.redeemed();
        if redeemed.granted > 0 {
            self.metrics.minted(redeemed.granted);
        }
        let mut invitation = redeemed.spent;
        self.reveal_one(&mut invitation);
        if !redeemed.flags.is_empty() {
            invitation.abuse_flags.extend(redeemed.flags.iter().cloned());
            invitation.abuse_flags.sort();
            invitation.abuse_flags.dedup();
        }
        tracing::info!(invitation_id = %invitation.id, flags = redeemed.flags.len(), "redeemed invitation");
        Ok(Some(Redemption {
            invitation,
            invitee_id: invitee.to_owned(),
            redeem_time: redeemed.redeem_time,
            flags: redeemed.flags,
        }))
    }
}

impl Invitations {
    /// One redeem attempt inside a transaction, and whether it spent a use (not
    /// a retry): then how many invitations policies granted with it. See docs/design.md ("Redeem" and "Graph storage") for why the
    /// locks below rule out double spends, cycles and stale paths.
    async fn redeem_in(&self, tx: &mut store::Tx<'_>, cmd: &RedeemCommand, code_hashes: &[Vec<u8>]) -> Outcome {
        let invitee = cmd.invitee.as_str();
        let (invitation, may_retry) = reservation::target_invitation(tx, &cmd.target, code_hashes, invitee).await?;
        let inviter = invitation.inviter_id.clone();
        if inviter.as_deref() == Some(invitee) {
            return Err(Error::SelfInvite);
        }
        members::ensure_one(tx, invitee).await?;
        // A retry of a finished redeem is answered before taking any lock.
        if let Some(answer) = joined_before(tx, invitee, &invitation, None, may_retry).await? {
            return answer;
        }
        let (member, parent) = match inviter.as_deref() {
            Some(inviter) => match super::locking::lock_move(tx, invitee, Some(inviter)).await? {
                Some(locked) => (locked.mover, locked.parent),
                None => return Err(sqlx::Error::RowNotFound.into()),
            },
            None => (graph::lock_member(tx, invitee).await?.ok_or(sqlx::Error::RowNotFound)?, None),
        };
        if let Some(answer) = joined_before(tx, invitee, &invitation, member.inviter_id.as_deref(), may_retry).await? {
            return answer;
        }
        if let Some(reason) = invitation.unavailable_reason(OffsetDateTime::now_utc()) {
            return Err(reason);
        }
        reservation::check_binding(&invitation, cmd)?;
        let mut screening =
            abuse::screen(tx, &self.abuse, &self.vault, cmd.client_ip, cmd.email.as_ref(), inviter.as_deref()).await?;
        if cmd.over_attempt_limit {
            screening.flags.push(crate::domain::abuse::Flag::AttemptLimit);
        }
        if let Some(parent) = &parent {
            if !parent.privileges.enabled {
                return Err(Error::InviterDisabled);
            }
            if parent.path.contains(&member.id) {
                return Err(Error::InviteCycle);
            }
        }
        let (mut spent, completed) = reservation::take_use(tx, &cmd.target, invitation.id, invitee).await?;
        let redeem_time = graph::insert_redemption(tx, &spent, invitee).await?;
        if spent.bound_to_applicant() {
            crate::store::waitlist::record_redemption(tx, spent.id, redeem_time).await?;
        }
        if let Some(parent) = &parent {
            tree::graft(tx, &member, Some(parent)).await?;
        }
        // Quotas: the invitee joins now unless it had a join time (it was
        // registered before); the inviter's spent use may be refilled.
        let mut granted = 0;
        if member.join_time.is_none() {
            granted += self.on_join(tx, &[invitee.to_owned()]).await?;
        }
        if let Some(parent) = &parent {
            granted += self.refill(tx, parent).await?;
        }
        abuse::record(tx, &self.abuse, &self.vault, cmd.client_ip, invitee, &screening.flags).await?;
        let mut emitted = vec![Event::redeemed(&spent, invitee, completed.is_some())];
        if let Some(reservation) = &completed {
            emitted.push(Event::reservation(reservation, &(&spent).into()));
        }
        outbox::append(tx, &emitted).await?;
        if !screening.flags.is_empty() {
            let mut all: Vec<String> = spent.abuse_flags.clone();
            all.extend(screening.flags.iter().map(|f| f.name().to_owned()));
            all.sort();
            all.dedup();
            spent.abuse_flags = all;
        }
        tracing::info!(invitation_id = %spent.id, flags = screening.flags.len(), "redeemed invitation");
        let flags = screening.flags.iter().map(|f| f.name().to_owned()).collect();
        Ok((Redemption { invitation: spent, invitee_id: invitee.to_owned(), redeem_time, flags }, Some(granted)))
    }
}

type Outcome = Result<(Redemption, Option<u64>), Error>;

/// Whether the invitee already joined: through this invitation, a retry
/// (the same success) when `may_retry`; through another, through this one
/// while completing a reservation it did not complete, or placed under an
/// inviter by Reparent, `ALREADY_INVITED`.
async fn joined_before(
    tx: &mut store::Tx<'_>,
    invitee: &str,
    invitation: &Invitation,
    inviter: Option<&str>,
    may_retry: bool,
) -> Result<Option<Outcome>, sqlx::Error> {
    Ok(match graph::joined_through(tx, invitee).await? {
        Some((through, redeem_time)) if through == invitation.id && may_retry => {
            let flags = abuse::flags_of(tx, invitee).await?;
            let invitation = invitation.clone();
            Some(Ok((Redemption { invitation, invitee_id: invitee.to_owned(), redeem_time, flags }, None)))
        }
        Some(_) => Some(Err(Error::AlreadyInvited)),
        None if inviter.is_some() => Some(Err(Error::AlreadyInvited)),
        None => None,
    })
}
