//! Reserve and Release, the sweeper that tidies lapsed leases, and the parts
//! of Redeem that depend on what it names (a code or a reservation) and on
//! bound invitations. Redeem's graph rules stay in `redeem.rs`; this module
//! only finds the invitation, checks the e-mail binding and spends the use.
//!
//! Correctness never depends on the sweeper: a lease counts only while
//! `status = 'held'` and `expire_time` is in the future (docs/design.md,
//! "Reservations").

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::code::InvitationCode;
use crate::domain::email::Email;
use crate::domain::error::Error;
use crate::domain::events::{Event, EventHead};
use crate::domain::{Invitation, Reservation, ReservationStatus, UserId};
use crate::outbox::Waker;
use crate::service::abuse::Attempt;
use crate::store::common_path::{self, Status};
use crate::store::{self, invitations, members, outbox, reservations};

use super::{Answer, Idempotency, Invitations, RedeemCommand, RedeemTarget};

/// How long leases last.
#[derive(Debug, Clone, Copy)]
pub struct ReservationSettings {
    /// For a Reserve that names no ttl.
    pub default_ttl: time::Duration,
    /// Longer requests are clamped to this.
    pub max_ttl: time::Duration,
}

impl Default for ReservationSettings {
    fn default() -> Self {
        Self { default_ttl: time::Duration::minutes(15), max_ttl: time::Duration::hours(1) }
    }
}

impl ReservationSettings {
    /// The lease for a requested ttl: the default when unset, clamped to the maximum.
    pub fn lease(&self, requested: Option<time::Duration>) -> time::Duration {
        requested.unwrap_or(self.default_ttl).min(self.max_ttl)
    }
}

pub struct ReserveCommand {
    pub code: InvitationCode,
    /// Positive when set (the transport checks).
    pub ttl: Option<time::Duration>,
    pub email: Option<Email>,
    /// Who will redeem the use: required by applicant-bound invitations.
    pub invitee: Option<UserId>,
    pub client_ip: Option<std::net::IpAddr>,
}

/// A reservation, with the inviter of the invitation it holds a use of.
pub struct Reserved {
    pub reservation: Reservation,
    pub inviter_id: Option<String>,
    /// The invitation's attributes (Reserve's answer; empty from Release).
    pub attributes: Attributes,
}

impl Invitations {
    #[tracing::instrument(name = "db.reserve", skip_all, fields(db.system = "postgresql"))]
    pub async fn reserve(
        &self,
        cmd: ReserveCommand,
        idem: Idempotency<'_, Reserved>,
    ) -> Result<Answer<Reserved>, Error> {
        if let Some(bytes) = self.replay("Reserve", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let ttl = self.reservations.lease(cmd.ttl);
        let mut tx = self.pool.begin().await?;
        let Some(invitation) = invitations::by_code_hash(&mut tx, &self.code_hashes(&cmd.code)).await? else {
            return Err(Error::CodeNotFound);
        };
        if let Some(reason) = invitation.unavailable_reason(OffsetDateTime::now_utc()) {
            return Err(reason);
        }
        if inviter_disabled(&mut tx, &invitation).await? {
            return Err(Error::InviterDisabled);
        }
        if !invitation.admits(cmd.email.as_ref()) {
            return Err(Error::EmailMismatch);
        }
        if !cmd.invitee.as_ref().map_or(!invitation.bound_to_applicant(), |i| invitation.admits_user(i.as_str())) {
            return Err(Error::ApplicantMismatch);
        }
        // Blocking checks refuse the sign-up at the form already; flags are
        // recorded when Redeem completes it (a reservation records nothing).
        let inviter = invitation.inviter_id.as_deref();
        super::abuse::screen(&mut tx, &self.abuse, &self.vault, cmd.client_ip, cmd.email.as_ref(), inviter).await?;
        reservations::lock_invitation(&mut tx, invitation.id).await?;
        let micros = i64::try_from(ttl.whole_microseconds()).unwrap_or(i64::MAX);
        let Some(reservation) = reservations::insert_if_free(&mut tx, Uuid::new_v4(), invitation.id, micros).await?
        else {
            let refusal = refusal(&mut tx, invitation.id).await?;
            tx.rollback().await?;
            // A concurrent twin with the same request_id may hold the use.
            return match self.replay("Reserve", &idem).await? {
                Some(bytes) => Ok(Answer::Replayed(bytes)),
                None => Err(refusal),
            };
        };
        outbox::append(&mut tx, &[Event::reservation(&reservation, &(&invitation).into())]).await?;
        let reserved =
            Reserved { reservation, inviter_id: invitation.inviter_id, attributes: invitation.attributes.clone() };
        let answer = self.commit_answer(tx, "Reserve", &idem, reserved).await?;
        if matches!(answer, Answer::Fresh(_)) {
            tracing::info!(invitation_id = %invitation.id, "reserved a use");
        }
        Ok(answer)
    }

    /// Reserve in one round trip (docs/design.md, "One round trip per call"),
    /// without `request_id`; `None`: run [`Invitations::reserve`].
    #[tracing::instrument(name = "db.reserve", skip_all, fields(db.system = "postgresql"))]
    pub async fn reserve_in_one_trip(
        &self,
        cmd: &ReserveCommand,
        attempt: &Attempt,
        timeout: Option<Duration>,
    ) -> Result<Option<Reserved>, Error> {
        let ttl = self.reservations.lease(cmd.ttl);
        let micros = i64::try_from(ttl.whole_microseconds()).unwrap_or(i64::MAX);
        let screening = self.screening(attempt, cmd.email.as_ref());
        let hashes = self.code_hashes(&cmd.code);
        let mut conn = self.statement_conn().await?;
        let time_left = self.time_left(timeout);
        let outcome =
            common_path::reserve(&mut conn, &hashes, Uuid::new_v4(), micros, &EventHead::new(), &screening, time_left)
                .await;
        conn.settle(&outcome);
        let reserved = match outcome {
            Ok(Status::Done(reserved)) => reserved,
            Ok(Status::Refused(reason)) => return Err(self.refusal(&reason)),
            Ok(Status::General) => return Ok(None),
            Err(e) if common_path::is_past_deadline(&e) => return Err(Error::Unavailable(e.into())),
            Err(e) => return Err(e.into()),
        };
        drop(conn);
        self.waker.committed();
        tracing::info!(invitation_id = %reserved.reservation.invitation_id, "reserved a use");
        Ok(Some(Reserved {
            reservation: reserved.reservation,
            inviter_id: reserved.inviter_id,
            attributes: reserved.attributes,
        }))
    }

    /// Gives the use back. Idempotent: an ended or lapsed lease is returned
    /// as it is, except a completed one, which cannot be released.
    #[tracing::instrument(name = "db.release", skip_all, fields(db.system = "postgresql"))]
    pub async fn release(&self, id: Uuid) -> Result<Reserved, Error> {
        let mut tx = self.pool.begin().await?;
        // The invitation's lock orders this change (and its event) with the
        // invitation's other changes (docs/design.md, "Events").
        if let Some(found) = reservations::by_id(&mut tx, id).await? {
            reservations::lock_invitation(&mut tx, found.invitation_id).await?;
        }
        let reservation = match reservations::release(&mut tx, id).await? {
            Some(released) => released,
            None => {
                let Some(mut found) = reservations::by_id(&mut tx, id).await? else {
                    return Err(reservation_not_found());
                };
                match found.status {
                    ReservationStatus::Completed => return Err(Error::ReservationCompleted),
                    ReservationStatus::Released | ReservationStatus::Lapsed => {}
                    // Not live by the database clock: it ran out, unswept.
                    ReservationStatus::Held => {
                        found.status = ReservationStatus::Lapsed;
                        found.end_time = Some(found.expire_time);
                    }
                }
                let inviter_id = invitations::by_id(&mut tx, found.invitation_id).await?.and_then(|i| i.inviter_id);
                return Ok(Reserved { reservation: found, inviter_id, attributes: Attributes::default() });
            }
        };
        let Some(invitation) = invitations::by_id(&mut tx, reservation.invitation_id).await? else {
            return Err(Error::Internal(anyhow::anyhow!("reservation without invitation")));
        };
        outbox::append(&mut tx, &[Event::reservation(&reservation, &(&invitation).into())]).await?;
        tx.commit().await?;
        self.waker.committed();
        tracing::info!(invitation_id = %reservation.invitation_id, "released a reservation");
        Ok(Reserved { reservation, inviter_id: invitation.inviter_id, attributes: Attributes::default() })
    }
}

fn reservation_not_found() -> Error {
    Error::NotFound { what: "reservation", field: "reservation_id" }
}

/// Why no use is free: the invitation's own state, else live leases.
async fn refusal(conn: &mut sqlx::PgConnection, invitation_id: Uuid) -> Result<Error, sqlx::Error> {
    let Some(invitation) = invitations::by_id(conn, invitation_id).await? else { return Ok(Error::CodeNotFound) };
    Ok(availability(conn, &invitation).await?.0.unwrap_or(Error::AlreadyRedeemed))
}

/// Whether a use is free right now (for CheckCode), and how many uses live
/// leases hold.
pub(super) async fn availability(
    conn: &mut sqlx::PgConnection,
    invitation: &Invitation,
) -> Result<(Option<Error>, u32), sqlx::Error> {
    let held = reservations::live_count(conn, invitation.id).await?;
    let refusal = match invitation.unavailable_reason(OffsetDateTime::now_utc()) {
        Some(reason) => Some(reason),
        None if inviter_disabled(conn, invitation).await? => Some(Error::InviterDisabled),
        None if i64::from(invitation.uses) + held >= i64::from(invitation.max_uses) => Some(Error::Reserved),
        None => None,
    };
    Ok((refusal, u32::try_from(held).unwrap_or(u32::MAX)))
}

/// Whether the invitation's owner has invite privileges disabled (Redeem
/// checks this itself, under a lock; see `privileges`).
async fn inviter_disabled(conn: &mut sqlx::PgConnection, invitation: &Invitation) -> Result<bool, sqlx::Error> {
    match &invitation.inviter_id {
        Some(inviter) => Ok(!members::invite_enabled(conn, inviter).await?),
        None => Ok(false),
    }
}

/// The invitation a Redeem names. A reservation that already ended is refused
/// here, except one this invitee completed (a retry: Redeem answers it).
/// The invitation a Redeem spends, and whether the invitee having joined
/// through it already makes this call a retry (the same success): always for
/// a code; for a reservation only when this invitee completed it (a held
/// reservation is not the use the invitee joined through).
pub(super) async fn target_invitation(
    tx: &mut store::Tx<'_>,
    target: &RedeemTarget,
    code_hashes: &[Vec<u8>],
    invitee: &str,
) -> Result<(Invitation, bool), Error> {
    let id = match target {
        RedeemTarget::Code(_) => {
            let invitation = invitations::by_code_hash(tx, code_hashes).await?;
            return invitation.map(|i| (i, true)).ok_or(Error::CodeNotFound);
        }
        RedeemTarget::Reservation(id) => *id,
    };
    let Some(reservation) = reservations::by_id(tx, id).await? else {
        return Err(reservation_not_found());
    };
    let completed_by_invitee = reservation.invitee_id.as_deref() == Some(invitee);
    if !completed_by_invitee {
        refuse_unless_held(&reservation, OffsetDateTime::now_utc())?;
    }
    let invitation = invitations::by_id(tx, reservation.invitation_id).await?;
    let invitation = invitation.ok_or_else(|| Error::Internal(anyhow::anyhow!("reservation without invitation")))?;
    Ok((invitation, completed_by_invitee))
}

fn refuse_unless_held(reservation: &Reservation, now: OffsetDateTime) -> Result<(), Error> {
    let refusal = match reservation.status_at(now) {
        ReservationStatus::Held => return Ok(()),
        ReservationStatus::Completed => Error::ReservationCompleted,
        ReservationStatus::Released => Error::ReservationReleased,
        ReservationStatus::Lapsed => Error::ReservationExpired,
    };
    Err(refusal)
}

/// An address-bound invitation needs a matching address. Completing a
/// reservation may omit it (Reserve checked it) but may not present another
/// one. An applicant-bound invitation needs its applicant as the invitee, on
/// every path (the reservation may have been taken by anyone with the code).
pub(super) fn check_binding(invitation: &Invitation, cmd: &RedeemCommand) -> Result<(), Error> {
    let admitted = match (&cmd.target, &cmd.email) {
        (RedeemTarget::Reservation(_), None) => true,
        (_, email) => invitation.admits(email.as_ref()),
    };
    if !admitted {
        return Err(Error::EmailMismatch);
    }
    if !invitation.admits_user(cmd.invitee.as_str()) {
        return Err(Error::ApplicantMismatch);
    }
    Ok(())
}

/// Spends the use: a free one for a code, the held one for a reservation
/// (which is then completed, and returned). Race-free under the invitation's
/// row lock.
pub(super) async fn take_use(
    tx: &mut store::Tx<'_>,
    target: &RedeemTarget,
    invitation_id: Uuid,
    invitee: &str,
) -> Result<(Invitation, Option<Reservation>), Error> {
    let (spent, completed) = match target {
        RedeemTarget::Code(_) => (invitations::take_use(tx, invitation_id, invitee).await?, None),
        RedeemTarget::Reservation(id) => {
            reservations::lock_invitation(tx, invitation_id).await?;
            let Some((reservation, db_now)) = reservations::lock(tx, *id).await? else {
                return Err(reservation_not_found());
            };
            refuse_unless_held(&reservation, db_now)?;
            let spent = reservations::take_reserved_use(tx, invitation_id, invitee).await?;
            let completed = match spent {
                Some(_) => Some(reservations::mark_completed(tx, *id, invitee).await?),
                None => None,
            };
            (spent, completed)
        }
    };
    match spent {
        Some(invitation) => Ok((invitation, completed)),
        // Lost the race for the last use, or the database clock says expired.
        None => Err(refusal(tx, invitation_id).await?),
    }
}

/// Marks lapsed leases until shutdown, every `interval`, and emits their
/// `reservation.lapsed` events in the same transaction. Tidying and events
/// only: nothing else waits for it. Replicas may all run it: each lease is
/// marked (and announced) by exactly one of them.
pub async fn sweep_lapsed_reservations(pool: sqlx::PgPool, interval: Duration, waker: Waker) {
    const BATCH: i64 = 1000;
    loop {
        tokio::time::sleep(interval).await;
        let swept = async {
            let mut total = 0;
            loop {
                let mut tx = pool.begin().await?;
                let lapsed = reservations::sweep_lapsed(&mut tx, BATCH).await?;
                let emitted: Vec<Event> = lapsed.iter().map(|l| Event::reservation(&l.reservation, &l.owner)).collect();
                outbox::append(&mut tx, &emitted).await?;
                tx.commit().await?;
                if !emitted.is_empty() {
                    waker.committed();
                }
                total += lapsed.len();
                if (lapsed.len() as i64) < BATCH {
                    return Ok::<_, sqlx::Error>(total);
                }
            }
        };
        match swept.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "marked lapsed reservations"),
            Err(e) => tracing::warn!(error = %e, "sweeping lapsed reservations failed; retrying next interval"),
        }
    }
}
