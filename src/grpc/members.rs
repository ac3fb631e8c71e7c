//! RegisterMembers and SetInvitePrivileges on the wire: request validation
//! and responses. The handlers sit with the others in `grpc/mod.rs`.

use std::collections::HashSet;

use time::OffsetDateTime;

use crate::domain::error::{Error, Violations};
use crate::domain::{self, UserId};
use crate::pb;
use crate::service::{PrivilegesCommand, PrivilegesOutcome, RegisterCommand, RegisterOutcome};
use crate::store::members::Registration;

/// A protobuf timestamp as a time no earlier than the Unix epoch.
pub(crate) fn parse_timestamp(t: &prost_types::Timestamp) -> Result<OffsetDateTime, String> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err("nanos must be between 0 and 999,999,999".into());
    }
    if t.seconds < 0 {
        return Err("must not be before 1970-01-01".into());
    }
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| "is out of range".into())
}

impl TryFrom<pb::RegisterMembersRequest> for RegisterCommand {
    type Error = Error;

    fn try_from(r: pb::RegisterMembersRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        if r.members.is_empty() {
            v.push("members", "name at least one member");
        } else if r.members.len() > domain::MAX_REGISTER_PER_CALL {
            v.push("members", format!("at most {} members per call", domain::MAX_REGISTER_PER_CALL));
        }
        v.into_result()?;
        let mut v = Violations::default();
        let latest = OffsetDateTime::now_utc() + domain::MAX_JOIN_TIME_SKEW;
        let mut seen = HashSet::with_capacity(r.members.len());
        let mut members = Vec::with_capacity(r.members.len());
        for (i, m) in r.members.into_iter().enumerate() {
            let user = v.check(&format!("members[{i}].user_id"), UserId::parse(&m.user_id));
            if user.is_some() && !seen.insert(m.user_id.clone()) {
                v.push(format!("members[{i}].user_id"), "names a member already named in this call");
            }
            let join_time = match &m.join_time {
                Some(t) => {
                    let field = format!("members[{i}].join_time");
                    match v.check(&field, parse_timestamp(t)) {
                        Some(t) if t > latest => {
                            v.push(field, "must not be in the future");
                            None
                        }
                        t => t,
                    }
                }
                None => None,
            };
            if let Some(user) = user {
                members.push(Registration { user_id: user.into_string(), join_time, hidden: m.hidden });
            }
        }
        v.into_result()?;
        // One order for every call, so concurrent calls lock rows alike.
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(RegisterCommand { members })
    }
}

pub fn register_response(o: &RegisterOutcome) -> pb::RegisterMembersResponse {
    pb::RegisterMembersResponse { created_count: o.created, updated_count: o.updated }
}

impl TryFrom<pb::SetInvitePrivilegesRequest> for PrivilegesCommand {
    type Error = Error;

    fn try_from(r: pb::SetInvitePrivilegesRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", UserId::parse(&r.user_id));
        let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
        let updated_by = v.check("updated_by", domain::parse_actor(&r.updated_by));
        if r.revoke_subtree && r.enabled {
            v.push("revoke_subtree", "only when disabling (enabled = false)");
        }
        v.into_result()?;
        match user {
            Some(user) => Ok(PrivilegesCommand {
                user,
                enabled: r.enabled,
                reason: reason.unwrap_or_default(),
                revoke_subtree: r.revoke_subtree,
                updated_by: updated_by.unwrap_or_default(),
            }),
            None => Err(Error::invalid("user_id", "is required")),
        }
    }
}

pub fn privileges_response(o: &PrivilegesOutcome) -> pb::SetInvitePrivilegesResponse {
    pb::SetInvitePrivilegesResponse {
        privileges: Some(super::graph::privileges_pb(&o.privileges)),
        changed: o.changed,
        revoked_count: o.revoked,
    }
}
