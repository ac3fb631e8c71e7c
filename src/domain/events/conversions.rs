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
