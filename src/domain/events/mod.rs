//! Notifications as data: the events a state change emits, encoded as the
//! `invitations.v1.InvitationEvent` protobuf (proto/invitations/v1/events.proto).
//!
//! The service layer builds events here and hands them to
//! `store::outbox::append` in the transaction of the change itself, so a
//! committed change always has its events and a rolled-back one never does.
//! The relay (`relay`) publishes them; this module knows nothing about NATS
//! or SQL.
//!
//! **Ordering.** Every event about an invitation has the same *owner*: the
//! inviter, or the batch for an unowned invitation. The owner picks one of
//! [`PARTITIONS`] partitions; one relay at a time publishes a partition, in
//! the order the rows were written, which for one invitation is the order its
//! changes committed (each change holds the invitation's row lock while it
//! appends). An event that covers several invitations (minted, revoked,
//! expired) only groups invitations of one partition, so it never has to be
//! split across two ordered queues.
//!
//! **Adding an event**: add its message to
//! events.proto, a variant to [`EventType`], a builder here that returns
//! [`Event`]s through [`Event::new`] with the owner's partition, and call
//! `store::outbox::append(&mut tx, &events)` in the service's transaction,
//! after the change and under the lock it holds. `commit_answer` wakes the
//! relays after the commit; a transaction committed by hand calls
//! `self.waker.committed()` after it (as `SetInvitePrivileges` does with
//! [`Event::privileges_changed`], partitioned by the member so it is ordered
//! with their invitations' events); policy mints go through
//! `Invitations::mint` or call [`minted`] with the batch's rows.

mod conversions;
mod grouped;
mod lifecycle;
mod privacy;
mod waitlist;

pub use conversions::{RewardFacts, converted_fixed, reward_fixed};
pub use grouped::{expired, grant_code_fields, minted, revoked};
pub use privacy::rename_user;
pub use waitlist::{Admitted, applicant_partition};

use prost::Message;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::email::BindingKind;
use crate::domain::{Invitation, Reservation, ReservationStatus};
use crate::pb;
use crate::pb::invitation_event::Event as Payload;

/// Ordered queues of events. Fixed: changing it would let events of one
/// owner that are pending across an upgrade leave out of order.
pub const PARTITIONS: u16 = 32;

/// Most invitations one minted/revoked/expired event lists, keeping messages
/// far below NATS's default 1 MiB payload limit even with codes and links.
pub const MAX_INVITATIONS_PER_EVENT: usize = 1_000;

/// What happened; also the subject suffix and `ce-type` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Minted,
    Redeemed,
    Revoked,
    Expired,
    Reserved,
    ReservationCompleted,
    Released,
    Lapsed,
    PrivilegesChanged,
    WaitlistJoined,
    WaitlistReviewed,
    WaitlistAdmitted,
    Updated,
    Restored,
    Converted,
    RewardGranted,
    RewardVoided,
    Erased,
}

impl EventType {
    pub const ALL: [EventType; 18] = [
        EventType::Minted,
        EventType::Redeemed,
        EventType::Revoked,
        EventType::Expired,
        EventType::Reserved,
        EventType::ReservationCompleted,
        EventType::Released,
        EventType::Lapsed,
        EventType::PrivilegesChanged,
        EventType::WaitlistJoined,
        EventType::WaitlistReviewed,
        EventType::WaitlistAdmitted,
        EventType::Updated,
        EventType::Restored,
        EventType::Converted,
        EventType::RewardGranted,
        EventType::RewardVoided,
        EventType::Erased,
    ];

    /// `minted`, `reservation.lapsed`, ...: the subject is `<prefix>.<name>`,
    /// the CloudEvents type `invitations.v1.<name>`.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Minted => "minted",
            EventType::Redeemed => "redeemed",
            EventType::Revoked => "revoked",
            EventType::Expired => "expired",
            EventType::Reserved => "reservation.reserved",
            EventType::ReservationCompleted => "reservation.completed",
            EventType::Released => "reservation.released",
            EventType::Lapsed => "reservation.lapsed",
            EventType::PrivilegesChanged => "privileges_changed",
            EventType::WaitlistJoined => "waitlist.joined",
            EventType::WaitlistReviewed => "waitlist.reviewed",
            EventType::WaitlistAdmitted => "waitlist.admitted",
            EventType::Updated => "updated",
            EventType::Restored => "restored",
            EventType::Converted => "converted",
            EventType::RewardGranted => "reward.granted",
            EventType::RewardVoided => "reward.voided",
            EventType::Erased => "erased",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn cloud_event_type(self) -> String {
        format!("invitations.v1.{}", self.name())
    }
}

/// An event ready for the outbox.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Uuid,
    pub event_type: EventType,
    pub partition: i16,
    pub time: OffsetDateTime,
    /// The encoded `InvitationEvent`.
    pub payload: Vec<u8>,
}

impl Event {
    fn new(event_type: EventType, partition: i16, time: OffsetDateTime, payload: Payload) -> Self {
        let id = Uuid::now_v7();
        let message = pb::InvitationEvent { id: id.to_string(), time: Some(timestamp(time)), event: Some(payload) };
        Self { id, event_type, partition, time, payload: message.encode_to_vec() }
    }

    /// A member's invite privileges were turned off or on.
    pub fn privileges_changed(user_id: &str, enabled: bool, reason: &str, changed_by: &str) -> Self {
        let payload = Payload::PrivilegesChanged(pb::PrivilegesChanged {
            user_id: user_id.to_owned(),
            enabled,
            reason: reason.to_owned(),
            changed_by: changed_by.to_owned(),
        });
        Self::new(EventType::PrivilegesChanged, partition_of(Some(user_id), Uuid::nil()), now(), payload)
    }

    /// One use of `invitation` (as it is after the spend) went to `invitee_id`.
    pub fn redeemed(invitation: &Invitation, invitee_id: &str, via_reservation: bool) -> Self {
        let payload = Payload::Redeemed(pb::Redeemed {
            invitation_id: invitation.id.to_string(),
            inviter_id: invitation.inviter_id.clone().unwrap_or_default(),
            invitee_id: invitee_id.to_owned(),
            batch_id: invitation.batch_id.to_string(),
            uses: invitation.uses as u32,
            max_uses: invitation.max_uses as u32,
            via_reservation,
            attributes: invitation.attributes.to_map(),
        });
        Self::new(EventType::Redeemed, partition_for(invitation), now(), payload)
    }

    /// A reservation of `invitation` changed state (reserved, completed,
    /// released, lapsed: its status says which).
    pub fn reservation(reservation: &Reservation, invitation: &InvitationOwner) -> Self {
        let (event_type, state) = match reservation.status {
            ReservationStatus::Held => (EventType::Reserved, pb::reservation::State::Held),
            ReservationStatus::Completed => (EventType::ReservationCompleted, pb::reservation::State::Completed),
            ReservationStatus::Released => (EventType::Released, pb::reservation::State::Released),
            ReservationStatus::Lapsed => (EventType::Lapsed, pb::reservation::State::Lapsed),
        };
        let payload = Payload::Reservation(pb::ReservationChanged {
            state: state as i32,
            invitation_id: reservation.invitation_id.to_string(),
            inviter_id: invitation.inviter_id.clone().unwrap_or_default(),
            reservation_ref: reservation_ref(reservation.id),
            expire_time: Some(timestamp(reservation.expire_time)),
            invitee_id: reservation.invitee_id.clone().unwrap_or_default(),
        });
        let partition = partition_of(invitation.inviter_id.as_deref(), invitation.batch_id);
        Self::new(event_type, partition, now(), payload)
    }
}

/// The parts of an event the service encodes for the one-statement calls,
/// which add the fields only the database knows (docs/design.md, "One round
/// trip per call"): the id, the time, and the encoded `InvitationEvent`
/// with just those two fields (`head`).
pub struct EventHead {
    pub id: Uuid,
    pub time: OffsetDateTime,
    pub head: Vec<u8>,
}

impl EventHead {
    pub fn new() -> Self {
        let (id, time) = (Uuid::now_v7(), now());
        let head = pb::InvitationEvent { id: id.to_string(), time: Some(timestamp(time)), event: None }.encode_to_vec();
        Self { id, time, head }
    }
}

impl Default for EventHead {
    fn default() -> Self {
        Self::new()
    }
}

/// `Redeemed.invitee_id`, encoded (field 3).
pub fn redeemed_invitee_field(invitee_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::string::encode(3, &invitee_id.to_owned(), &mut out);
    out
}

/// `ReservationChanged.reservation_ref` of the reservation `id`, encoded (field 4).
pub fn reservation_ref_field(id: Uuid) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::string::encode(4, &reservation_ref(id), &mut out);
    out
}

/// Who an invitation belongs to, for ordering: enough to find its partition.
#[derive(Debug, Clone)]
pub struct InvitationOwner {
    pub inviter_id: Option<String>,
    pub batch_id: Uuid,
}

impl From<&Invitation> for InvitationOwner {
    fn from(inv: &Invitation) -> Self {
        Self { inviter_id: inv.inviter_id.clone(), batch_id: inv.batch_id }
    }
}

/// Whether and how `minted` events show codes (`--events-include-codes`).
#[derive(Debug, Clone)]
pub struct CodeDisclosure {
    pub code_prefix: String,
    pub link_template: String,
}

/// The partition of an invitation's owner (its inviter, or its batch when
/// unowned): SHA-256 of the owner, so it never changes between releases.
pub fn partition_of(inviter_id: Option<&str>, batch_id: Uuid) -> i16 {
    let mut hasher = Sha256::new();
    match inviter_id {
        Some(inviter) => {
            hasher.update(b"inviter:");
            hasher.update(inviter.as_bytes());
        }
        None => {
            hasher.update(b"batch:");
            hasher.update(batch_id.as_bytes());
        }
    }
    let digest = hasher.finalize();
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (n % u32::from(PARTITIONS)) as i16
}

fn partition_for(inv: &Invitation) -> i16 {
    partition_of(inv.inviter_id.as_deref(), inv.batch_id)
}

/// A handle that correlates a reservation's events without being the
/// reservation id (a bearer handle): hex of a truncated, domain-separated
/// SHA-256 of it.
pub fn reservation_ref(id: Uuid) -> String {
    let digest = Sha256::new().chain_update(b"invitations/reservation-ref\0").chain_update(id.as_bytes()).finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn binding_pb(binding: Option<BindingKind>) -> pb::Binding {
    match binding {
        None => pb::Binding::Unbound,
        Some(BindingKind::Email) => pb::Binding::Email,
        Some(BindingKind::Domain) => pb::Binding::Domain,
        Some(BindingKind::Applicant) => pb::Binding::Applicant,
    }
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn invitation(inviter: Option<&str>, batch_id: Uuid) -> Invitation {
        Invitation {
            id: Uuid::now_v7(),
            code: "ABCDEFGHJKMNPQR2".into(),
            code_ciphertext: None,
            code_key_id: None,
            inviter_id: inviter.map(str::to_owned),
            last_invitee_id: None,
            uses: 0,
            max_uses: 1,
            create_time: now(),
            expire_time: None,
            last_redeem_time: None,
            batch_id,
            label: "wave".into(),
            note: String::new(),
            minted_by: "ops".into(),
            revoke_time: None,
            revoke_reason: None,
            revoked_by: None,
            binding: None,
            binding_digest: None,
            abuse_flags: Vec::new(),
            attributes: Default::default(),
        }
    }

    fn decode(event: &Event) -> pb::InvitationEvent {
        pb::InvitationEvent::decode(event.payload.as_slice()).expect("decodes")
    }

    #[test]
    fn every_event_of_an_invitation_shares_its_partition() {
        for inviter in [Some("ayo"), None] {
            let inv = invitation(inviter, Uuid::now_v7());
            let minted = minted(std::slice::from_ref(&inv), None);
            let redeemed = Event::redeemed(&inv, "bo", false);
            let Some(Payload::Redeemed(r)) = decode(&redeemed).event else { panic!("a redeemed event") };
            assert_eq!((r.invitation_id, r.invitee_id), (inv.id.to_string(), "bo".to_owned()));
            let revoked = revoked(std::slice::from_ref(&inv), "r", "ops");
            let expired = expired(std::slice::from_ref(&inv));
            let partitions = [minted[0].partition, redeemed.partition, revoked[0].partition, expired[0].partition];
            assert!(partitions.iter().all(|p| *p == partitions[0]), "{partitions:?}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.name()), Some(t));
        }
        assert_eq!(EventType::Lapsed.cloud_event_type(), "invitations.v1.reservation.lapsed");
        assert_eq!(EventType::parse("nope"), None);
    }

    #[test]
    fn partitions_are_stable_and_follow_the_owner() {
        let batch = Uuid::now_v7();
        // Pinned values: a change would reorder events pending across an upgrade.
        assert_eq!(partition_of(Some("ayo"), batch), partition_of(Some("ayo"), Uuid::now_v7()));
        assert_eq!(partition_of(Some("ayo"), batch), 17);
        assert_eq!(partition_of(None, Uuid::nil()), 22);
        let spread: std::collections::HashSet<i16> =
            (0..1000).map(|i| partition_of(Some(&format!("user-{i}")), batch)).collect();
        assert_eq!(spread.len(), PARTITIONS as usize, "every partition is used");
        assert!(spread.iter().all(|p| (0..PARTITIONS as i16).contains(p)));
    }

    #[test]
    fn reservation_ref_is_not_the_id() {
        let id = Uuid::new_v4();
        let r = reservation_ref(id);
        assert_eq!(r.len(), 32);
        assert_eq!(r, reservation_ref(id));
        assert!(!r.contains(&id.simple().to_string()));
    }
}
