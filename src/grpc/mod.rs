//! The gRPC transport: thin handlers that convert the request, call the
//! domain (`service`), and map the answer or error. Only this layer knows
//! `tonic::Status`.

pub mod convert;
mod reservation;
pub mod status;

use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::domain::RequestId;
use crate::pb;
use crate::pb::invitation_service_server::InvitationService;
use crate::service::{Answer, CodeCheck, Idempotency, Invitations};
use convert::View;
use status::to_status;

pub struct InvitationApi {
    service: Arc<Invitations>,
    view: View,
}

impl InvitationApi {
    pub fn new(service: Arc<Invitations>, view: View) -> Self {
        Self { service, view }
    }
}

fn request_hash<M: Message>(message: &M) -> [u8; 32] {
    Sha256::digest(message.encode_to_vec()).into()
}

fn request_id(value: &str) -> Result<Option<RequestId>, Status> {
    RequestId::parse_optional(value).map_err(|d| to_status(crate::Error::invalid("request_id", d)))
}

/// A fresh answer converted, or a stored one decoded.
fn respond<T, M: Message + Default>(answer: Answer<T>, convert: impl FnOnce(&T) -> M) -> Result<Response<M>, Status> {
    match answer {
        Answer::Fresh(value) => Ok(Response::new(convert(&value))),
        Answer::Replayed(bytes) => M::decode(bytes.as_slice())
            .map(Response::new)
            .map_err(|e| to_status(crate::Error::Internal(anyhow::anyhow!("stored answer does not decode: {e}")))),
    }
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    async fn mint(&self, request: Request<pb::MintRequest>) -> Result<Response<pb::MintResponse>, Status> {
        let request = request.into_inner();
        let hash = request_hash(&request);
        let request_id = request_id(&request.request_id)?;
        let command = request.try_into().map_err(to_status)?;
        let encode = |o: &_| self.view.mint_response(o).encode_to_vec();
        let idem = Idempotency { request_id, request_hash: hash, encode: &encode };
        let answer = self.service.mint(command, idem).await.map_err(to_status)?;
        respond(answer, |o| self.view.mint_response(o))
    }

    async fn list_for_user(
        &self,
        request: Request<pb::ListForUserRequest>,
    ) -> Result<Response<pb::ListForUserResponse>, Status> {
        let query = request.into_inner().try_into().map_err(to_status)?;
        let page = self.service.list(query).await.map_err(to_status)?;
        Ok(Response::new(self.view.list_response(page)))
    }

    async fn redeem(&self, request: Request<pb::RedeemRequest>) -> Result<Response<pb::RedeemResponse>, Status> {
        let request = request.into_inner();
        let hash = request_hash(&request);
        let command = self.view.redeem_command(&request).map_err(to_status)?;
        let request_id = request_id(&request.request_id)?;
        let encode = |r: &_| self.view.redeem_response(r).encode_to_vec();
        let idem = Idempotency { request_id, request_hash: hash, encode: &encode };
        let answer = self.service.redeem(command, idem).await.map_err(to_status)?;
        respond(answer, |r| self.view.redeem_response(r))
    }

    async fn check_code(
        &self,
        request: Request<pb::CheckCodeRequest>,
    ) -> Result<Response<pb::CheckCodeResponse>, Status> {
        let request = request.into_inner();
        crate::domain::parse_client_ip(&request.client_ip)
            .map_err(|d| to_status(crate::Error::invalid("client_ip", d)))?;
        if request.code.is_empty() {
            return Err(to_status(crate::Error::invalid("code", "is required")));
        }
        // A malformed or mistyped code is an answer here, not an error: the
        // sign-up form wants to say "check for a typo" without a round trip.
        let code = match self.view.parse_code("code", &request.code) {
            Ok(code) => code,
            Err(e) => {
                return Ok(Response::new(pb::CheckCodeResponse { reason: e.reason().into(), ..Default::default() }));
            }
        };
        let CodeCheck { invitation, refusal, reserved_uses } = self.service.check(&code).await.map_err(to_status)?;
        let mut response = pb::CheckCodeResponse {
            redeemable: refusal.is_none(),
            reserved: matches!(refusal, Some(crate::Error::Reserved)),
            reserved_uses,
            reason: refusal.map(|e| e.reason().to_owned()).unwrap_or_default(),
            normalized_code: code.display(&self.view.code_prefix),
            ..Default::default()
        };
        if let Some(inv) = invitation {
            response.inviter_id = inv.inviter_id.clone().unwrap_or_default();
            response.expire_time = inv.expire_time.map(convert::timestamp);
            response.remaining_uses = (inv.max_uses - inv.uses).max(0) as u32;
            response.binding = convert::binding_pb(inv.binding) as i32;
        }
        Ok(Response::new(response))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let request = request.into_inner();
        let hash = request_hash(&request);
        let request_id = request_id(&request.request_id)?;
        let command = request.try_into().map_err(to_status)?;
        let encode = |o: &_| self.view.revoke_response(o).encode_to_vec();
        let idem = Idempotency { request_id, request_hash: hash, encode: &encode };
        let answer = self.service.revoke(command, idem).await.map_err(to_status)?;
        respond(answer, |o| self.view.revoke_response(o))
    }

    async fn get_invite_graph(
        &self,
        request: Request<pb::GetInviteGraphRequest>,
    ) -> Result<Response<pb::GetInviteGraphResponse>, Status> {
        let query = request.into_inner().try_into().map_err(to_status)?;
        let view = self.service.graph(query).await.map_err(to_status)?;
        Ok(Response::new(convert::graph_response(view)))
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Result<Response<pb::ReserveResponse>, Status> {
        let request = request.into_inner();
        let hash = request_hash(&request);
        let command = self.view.reserve_command(&request).map_err(to_status)?;
        let request_id = request_id(&request.request_id)?;
        let encode = |r: &_| reservation::reserve_response(r).encode_to_vec();
        let idem = Idempotency { request_id, request_hash: hash, encode: &encode };
        let answer = self.service.reserve(command, idem).await.map_err(to_status)?;
        respond(answer, reservation::reserve_response)
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        let id = reservation::release_id(request.get_ref()).map_err(to_status)?;
        let released = self.service.release(id).await.map_err(to_status)?;
        Ok(Response::new(reservation::release_response(&released)))
    }
}
