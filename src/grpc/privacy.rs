//! EraseMember on the wire (privacy.proto): request validation into the
//! service's command. The handler in `grpc/mod.rs` calls [`erase`].

use prost::Message;
use tonic::{Request, Response, Status};

use super::auth::recorded_actor;
use super::{caller, request_hash, request_id, respond, status::to_status};
use crate::domain::error::{Error, Violations};
use crate::domain::{self, UserId};
use crate::pb;
use crate::service::{EraseCommand, EraseOutcome, Idempotency, Invitations};

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
    let hash = request_hash(&request);
    let request_id = request_id(&request.request_id)?;
    let mut command = EraseCommand::try_from(&request).map_err(to_status)?;
    command.erased_by = recorded_actor(caller.as_ref(), "");
    let encode = |o: &_| erase_response(o).encode_to_vec();
    let idem = Idempotency { request_id, request_hash: hash, encode: &encode };
    let answer = service.erase_member(command, idem).await.map_err(to_status)?;
    respond(answer, erase_response)
}
