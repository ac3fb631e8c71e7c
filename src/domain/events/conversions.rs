//! The conversion events' parts the service knows before the statement
//! (`converted`, `reward.granted`): `inv_record_conversion` adds the
//! attribution only the database knows, and appends them. Partitioned by
//! the inviter, with the invitation's own events.

use super::*;

/// The `Converted` message's fields 1-5 (the statement adds 6-9).
pub fn converted_fixed(
    conversion_id: Uuid,
    user_id: &str,
    kind: &str,
    occur_time: OffsetDateTime,
    value: Option<i64>,
) -> Vec<u8> {
    pb::Converted {
        conversion_id: conversion_id.to_string(),
        user_id: user_id.to_owned(),
        kind: kind.to_owned(),
        occur_time: Some(timestamp(occur_time)),
        value,
        ..Default::default()
    }
    .encode_to_vec()
}

/// The `RewardGranted` message's fields 1-3 (the statement adds 4-9).
pub fn reward_fixed(conversion_id: Uuid, user_id: &str, kind: &str) -> Vec<u8> {
    pb::RewardGranted {
        conversion_id: conversion_id.to_string(),
        kind: kind.to_owned(),
        user_id: user_id.to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// What `reward.granted` and `reward.voided` say about one conversion.
pub struct RewardFacts<'a> {
    pub conversion_id: Uuid,
    pub kind: &'a str,
    pub user_id: &'a str,
    pub inviter_id: &'a str,
}

impl Event {
    /// A held reward granted by the background granter (the statement of a
    /// RecordConversion without hold encodes the same message itself).
    pub fn reward_granted(
        r: &RewardFacts<'_>,
        counts: (u32, u32),
        batches: (Option<Uuid>, Option<Uuid>),
        capped: bool,
    ) -> Self {
        let id = |b: Option<Uuid>| b.map(|b| b.to_string()).unwrap_or_default();
        let payload = Payload::RewardGranted(pb::RewardGranted {
            conversion_id: r.conversion_id.to_string(),
            kind: r.kind.to_owned(),
            user_id: r.user_id.to_owned(),
            inviter_id: r.inviter_id.to_owned(),
            inviter_count: counts.0,
            member_count: counts.1,
            inviter_batch_id: id(batches.0),
            member_batch_id: id(batches.1),
            inviter_capped: capped,
        });
        Self::new(EventType::RewardGranted, partition_of(Some(r.inviter_id), Uuid::nil()), now(), payload)
    }

    /// A conversion voided: its pending reward dropped, or `revoked` of its
    /// granted invitations revoked (`kept` were already redeemed).
    pub fn reward_voided(
        r: &RewardFacts<'_>,
        was_pending: bool,
        revoked: &[Uuid],
        kept: u32,
        reason: &str,
        voided_by: &str,
    ) -> Self {
        let payload = Payload::RewardVoided(pb::RewardVoided {
            conversion_id: r.conversion_id.to_string(),
            kind: r.kind.to_owned(),
            user_id: r.user_id.to_owned(),
            inviter_id: r.inviter_id.to_owned(),
            was_pending,
            revoked_invitation_ids: revoked.iter().map(Uuid::to_string).collect(),
            kept_count: kept,
            reason: reason.to_owned(),
            voided_by: voided_by.to_owned(),
        });
        let owner = if r.inviter_id.is_empty() { r.user_id } else { r.inviter_id };
        Self::new(EventType::RewardVoided, partition_of(Some(owner), Uuid::nil()), now(), payload)
    }
}
