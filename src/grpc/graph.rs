//! GetInviteGraph, WalkInviteForest and Reparent on the wire: request
//! validation and member nodes. The handlers sit with the others in
//! `grpc/mod.rs`.

use super::convert::timestamp;
use crate::domain::error::{Error, Violations};
use crate::domain::{self, InvitePrivileges, Member, UserId};
use crate::pb;
use crate::service::{GraphQuery, GraphView, ReparentCommand, ReparentOutcome, WalkQuery};

pub fn privileges_pb(p: &InvitePrivileges) -> pb::InvitePrivileges {
    pb::InvitePrivileges {
        enabled: p.enabled,
        reason: p.reason.clone(),
        update_time: p.update_time.map(timestamp),
        updated_by: p.updated_by.clone(),
    }
}

/// A node without counts or privileges (those are only on the member asked for).
pub fn member_pb(m: Member) -> pb::MemberNode {
    pb::MemberNode {
        depth: m.depth(),
        hidden: m.hidden,
        user_id: m.user_id,
        inviter_id: m.inviter_id.unwrap_or_default(),
        join_time: m.join_time.map(timestamp),
        invitation_id: m.invitation_id.map(|i| i.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

pub fn graph_response(view: GraphView) -> pb::GetInviteGraphResponse {
    let privileges = (!view.public_view).then(|| privileges_pb(&view.member.privileges));
    let member = pb::MemberNode {
        direct_invitee_count: u64::try_from(view.invitee_count).unwrap_or_default(),
        descendant_count: u64::try_from(view.descendant_count).unwrap_or_default(),
        invite_privileges: privileges,
        ..member_pb(view.member)
    };
    pb::GetInviteGraphResponse {
        member: Some(member),
        ancestors: view.ancestors.into_iter().map(member_pb).collect(),
        descendants: view.descendants.into_iter().map(member_pb).collect(),
        next_page_token: view.next_page_token,
    }
}

/// 0 means 1, negative is refused, anything deeper than the maximum is the
/// maximum (the whole subtree).
fn parse_depth(value: i32) -> Result<u32, String> {
    match value {
        v if v < 0 => Err("must not be negative".into()),
        0 => Ok(1),
        v => Ok((v as u32).min(domain::MAX_GRAPH_DEPTH)),
    }
}

impl TryFrom<pb::GetInviteGraphRequest> for GraphQuery {
    type Error = Error;

    fn try_from(r: pb::GetInviteGraphRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", UserId::parse(&r.user_id));
        let page_size = v.check("page_size", domain::parse_page_size(r.page_size));
        let max_depth = v.check("max_depth", parse_depth(r.max_depth));
        v.into_result()?;
        match (user, page_size, max_depth) {
            (Some(user), Some(page_size), Some(max_depth)) => {
                Ok(GraphQuery { user, page_size, page_token: r.page_token, max_depth, public_view: r.public_view })
            }
            _ => Err(Error::invalid("user_id", "is required")),
        }
    }
}

impl From<pb::WalkInviteForestRequest> for WalkQuery {
    fn from(r: pb::WalkInviteForestRequest) -> Self {
        WalkQuery {
            max_depth: r.max_depth.map(|d| d.min(domain::MAX_GRAPH_DEPTH)),
            public_view: r.public_view,
            omit_singletons: r.omit_singletons,
        }
    }
}

impl TryFrom<pb::ReparentRequest> for ReparentCommand {
    type Error = Error;

    fn try_from(r: pb::ReparentRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", UserId::parse(&r.user_id));
        let new_inviter = match (r.make_root, r.new_inviter_id.is_empty()) {
            (true, true) => None,
            (true, false) => {
                v.push("new_inviter_id", "must be empty when make_root is set");
                None
            }
            (false, true) => {
                v.push("new_inviter_id", "is required (or set make_root)");
                None
            }
            (false, false) => v.check("new_inviter_id", UserId::parse(&r.new_inviter_id)),
        };
        let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
        let by = v.check("reparented_by", domain::parse_actor(&r.reparented_by));
        v.into_result()?;
        match user {
            Some(user) => Ok(ReparentCommand {
                user,
                new_inviter,
                reason: reason.unwrap_or_default(),
                reparented_by: by.unwrap_or_default(),
            }),
            None => Err(Error::invalid("user_id", "is required")),
        }
    }
}

pub fn reparent_response(o: ReparentOutcome) -> pb::ReparentResponse {
    pb::ReparentResponse {
        member: Some(member_pb(o.member)),
        old_inviter_id: o.old_inviter_id.unwrap_or_default(),
        moved_count: u64::try_from(o.moved_count).unwrap_or_default(),
    }
}
