//! EraseMember and ListHistory on the wire (privacy.proto): request
//! validation into the service's command or query. The handlers in
//! `grpc/mod.rs` call [`erase`] and [`list_history`].

use tonic::{Request, Response, Status};

use super::auth::recorded_actor;
use super::convert::timestamp;
use super::idempotent::Key;
use super::members::parse_timestamp;
use super::{caller, status::to_status};
use crate::domain::error::{Error, Violations};
use crate::domain::history::{Filter, Operation};
use crate::domain::{self, UserId};
use crate::pb;
use crate::service::{Change, EraseCommand, EraseOutcome, HistoryQuery, Invitations};

impl TryFrom<&pb::EraseMemberRequest> for EraseCommand {
    type Error = Error;

    fn try_from(r: &pb::EraseMemberRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", UserId::parse(&r.user_id));
        let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
        if r.reason.trim().is_empty() {
            v.push("reason", "is required (the request's ticket, ...)");
        }
        v.into_result()?;
        match user {
            Some(user) => Ok(EraseCommand { user, reason: reason.unwrap_or_default(), erased_by: String::new() }),
            None => Err(Error::invalid("user_id", "is required")),
        }
    }
}

fn erase_response(o: &EraseOutcome) -> pb::EraseMemberResponse {
    pb::EraseMemberResponse { tombstone: o.tombstone.clone(), changed: o.changed, revoked_count: o.revoked }
}

pub async fn erase(
    service: &Invitations,
    request: Request<pb::EraseMemberRequest>,
) -> Result<Response<pb::EraseMemberResponse>, Status> {
    let caller = caller(&request);
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let mut command = EraseCommand::try_from(&request).map_err(to_status)?;
    command.erased_by = recorded_actor(caller.as_ref(), "");
    key.call(erase_response, async |idem| service.erase_member(command, idem).await).await.map_err(to_status)
}

impl TryFrom<&pb::ListHistoryRequest> for HistoryQuery {
    type Error = Error;

    fn try_from(r: &pb::ListHistoryRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let invitation_id = match nonempty(&r.invitation_id) {
            Some(id) => v.check("invitation_id", domain::parse_uuid(id)),
            None => None,
        };
        let user_id = match nonempty(&r.user_id) {
            Some(id) => v.check("user_id", UserId::parse(id).map(|u| u.as_str().to_owned())),
            None => None,
        };
        let caller = match nonempty(&r.caller) {
            Some(c) => v.check("caller", domain::parse_text(c, domain::MAX_NOTE_LEN)),
            None => None,
        };
        let operation = match nonempty(&r.operation) {
            Some(name) => v.check(
                "operation",
                Operation::parse(name).ok_or_else(|| format!("is not one of: {}", Operation::names())),
            ),
            None => None,
        };
        let start_time = r.start_time.as_ref().and_then(|t| v.check("start_time", parse_timestamp(t)));
        let end_time = r.end_time.as_ref().and_then(|t| v.check("end_time", parse_timestamp(t)));
        if let (Some(start), Some(end)) = (start_time, end_time)
            && end <= start
        {
            v.push("end_time", "must be after start_time");
        }
        if r.page_size < 0 {
            v.push("page_size", "must not be negative");
        }
        v.into_result()?;
        Ok(HistoryQuery {
            filter: Filter { invitation_id, user_id, caller, operation, start_time, end_time },
            page_size: r.page_size.max(0) as u32,
            page_token: r.page_token.clone(),
        })
    }
}

fn history_entry(c: Change) -> pb::HistoryEntry {
    pb::HistoryEntry {
        occur_time: Some(timestamp(c.occur_time)),
        caller: c.caller,
        operation: c.operation,
        invitation_ids: c.invitation_ids.iter().map(|u| u.to_string()).collect(),
        batch_id: c.batch_id.map(|u| u.to_string()).unwrap_or_default(),
        user_ids: c.user_ids,
        reason: c.reason,
        request_id: c.request_id,
        details: c.details.into_iter().collect(),
    }
}

pub async fn list_history(
    service: &Invitations,
    request: Request<pb::ListHistoryRequest>,
) -> Result<Response<pb::ListHistoryResponse>, Status> {
    let query = HistoryQuery::try_from(request.get_ref()).map_err(to_status)?;
    let page = service.list_history(query).await.map_err(to_status)?;
    Ok(Response::new(pb::ListHistoryResponse {
        entries: page.changes.into_iter().map(history_entry).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// An unset string filter.
fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
