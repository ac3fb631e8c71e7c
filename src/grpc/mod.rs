//! The gRPC transport: thin handlers that convert the request, call the
//! domain (`service`), and map the answer or error. Only this layer knows
//! `tonic::Status`.

pub mod auth;
pub mod connections;
pub mod conversions;
pub mod convert;
pub mod deadline;
mod graph;
mod idempotent;
mod lifecycle;
mod members;
pub mod overload;
mod privacy;
mod reservation;
pub mod stats;
pub mod status;
pub mod tls;
mod waitlist;

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::domain::UserId;
use crate::domain::error::Error;
use crate::grpc::auth::{Caller, recorded_actor};
use crate::pb;
use crate::pb::invitation_service_server::InvitationService;
use crate::service::Invitations;
use crate::service::abuse::is_guess_failure;
use crate::service::{Attempt, MintCommand, PrivilegesCommand, ReparentCommand, RevokeCommand};
use crate::store::replicas::ReadFrom;
use convert::View;
use idempotent::Key;
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

/// The authenticated caller, if authentication is on.
fn caller<T>(request: &Request<T>) -> Option<Caller> {
    request.extensions().get::<Caller>().cloned()
}

/// Who is attempting, as far as the request says (malformed fields are
/// reported by the call's own validation, not here).
fn attempt(client_ip: &str, invitee: Option<&str>) -> Attempt {
    Attempt {
        ip: crate::domain::parse_client_ip(client_ip).ok().flatten(),
        invitee: invitee.and_then(|i| UserId::parse(i).ok()),
    }
}

impl InvitationApi {
    /// Runs a Redeem, CheckCode or Reserve under the failed-attempt limit:
    /// refused while over it (`block`), and a guess-like failure is counted.
    /// `call` gets whether to flag the attempt.
    async fn limited<T, F>(&self, attempt: Attempt, call: impl FnOnce(bool) -> F) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let over_limit = self.service.admit_attempt(&attempt).await.map_err(to_status)?;
        let result = call(over_limit).await;
        if let Err(e) = &result
            && is_guess_failure(e)
        {
            self.service.count_failed_attempt(&attempt).await;
        }
        result.map_err(to_status)
    }
}

/// The caller's deadline, if it sent one (`deadline::DeadlineLayer`).
fn timeout<T>(request: &Request<T>) -> Option<std::time::Duration> {
    request.extensions().get::<deadline::CallTimeout>().map(|t| t.0)
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    async fn mint(&self, request: Request<pb::MintRequest>) -> Result<Response<pb::MintResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let key = Key::of(&request).map_err(to_status)?;
        if !request.custom_code.is_empty() && !self.view.vanity_codes {
            let off = "vanity codes are off on this server (--vanity-codes true turns them on)";
            return Err(to_status(crate::Error::invalid("custom_code", off)));
        }
        let mut command: MintCommand = request.try_into().map_err(to_status)?;
        command.minted_by = recorded_actor(caller.as_ref(), &command.minted_by);
        key.call(|o| self.view.mint_response(o), async |idem| self.service.mint(command, idem).await)
            .await
            .map_err(to_status)
    }

    async fn list_for_user(
        &self,
        request: Request<pb::ListForUserRequest>,
    ) -> Result<Response<pb::ListForUserResponse>, Status> {
        let read = read_from(&request)?;
        let query = request.into_inner().try_into().map_err(to_status)?;
        let page = self.service.list(query, read).await.map_err(to_status)?;
        Ok(Response::new(self.view.list_response(page)))
    }

    async fn redeem(&self, request: Request<pb::RedeemRequest>) -> Result<Response<pb::RedeemResponse>, Status> {
        let deadline = timeout(&request);
        let request = request.into_inner();
        // Parsed once (the attempt's ip and invitee too, unless the request
        // does not parse). The common path, in one round trip; anything else
        // (and a request that does not parse, which the general path refuses
        // after the attempt limit as before) takes the general path.
        let parsed = self.view.redeem_command(&request);
        let who = match &parsed {
            Ok(command) => Attempt { ip: command.client_ip, invitee: Some(command.invitee.clone()) },
            Err(_) => attempt(&request.client_ip, Some(&request.invitee_id)),
        };
        if request.request_id.is_empty()
            && let Ok(command) = &parsed
            && let Some(redemption) =
                self.service.redeem_in_one_trip(command, &who, deadline).await.map_err(to_status)?
        {
            return Ok(Response::new(self.view.redeem_response(&redemption)));
        }
        self.limited(who, |over_limit| async move {
            let mut command = parsed?;
            command.over_attempt_limit = over_limit;
            let key = Key::of(&request)?;
            key.call(|r| self.view.redeem_response(r), async |idem| self.service.redeem(command, idem).await).await
        })
        .await
    }

    async fn check_code(
        &self,
        request: Request<pb::CheckCodeRequest>,
    ) -> Result<Response<pb::CheckCodeResponse>, Status> {
        let read = read_from(&request)?;
        let command = self.view.check_command(request.get_ref()).map_err(to_status)?;
        let who = Attempt { ip: command.client_ip, invitee: None };
        // A malformed or mistyped code is an answer here, not an error (but
        // still under the attempt limit).
        let code = match command.code {
            Ok(code) => code,
            Err(e) => {
                self.service.admit_attempt(&who).await.map_err(to_status)?;
                return Ok(Response::new(pb::CheckCodeResponse { reason: e.reason().into(), ..Default::default() }));
            }
        };
        // One statement: the limit, the lookup, and (an unknown code is an
        // answer too, but counts against the limit) the count.
        let check = self.service.check(&code, &who, read).await.map_err(to_status)?;
        Ok(Response::new(self.view.check_response(&code, check)))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let key = Key::of(&request).map_err(to_status)?;
        let mut command: RevokeCommand = request.try_into().map_err(to_status)?;
        command.revoked_by = recorded_actor(caller.as_ref(), &command.revoked_by);
        key.call(|o| self.view.revoke_response(o), async |idem| self.service.revoke(command, idem).await)
            .await
            .map_err(to_status)
    }

    async fn get_invite_graph(
        &self,
        request: Request<pb::GetInviteGraphRequest>,
    ) -> Result<Response<pb::GetInviteGraphResponse>, Status> {
        let read = read_from(&request)?;
        let query = request.into_inner().try_into().map_err(to_status)?;
        let view = self.service.graph(query, read).await.map_err(to_status)?;
        Ok(Response::new(graph::graph_response(view)))
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Result<Response<pb::ReserveResponse>, Status> {
        let deadline = timeout(&request);
        let request = request.into_inner();
        // Parsed once; the common path in one round trip, as for Redeem.
        let parsed = self.view.reserve_command(&request);
        if request.request_id.is_empty()
            && let Ok(command) = &parsed
            && let Some(reserved) = self
                .service
                .reserve_in_one_trip(command, &attempt(&request.client_ip, None), deadline)
                .await
                .map_err(to_status)?
        {
            return Ok(Response::new(reservation::reserve_response(&reserved)));
        }
        self.limited(attempt(&request.client_ip, None), |_| async {
            let command = parsed?;
            let key = Key::of(&request)?;
            key.call(reservation::reserve_response, async |idem| self.service.reserve(command, idem).await).await
        })
        .await
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        let id = reservation::release_id(request.get_ref()).map_err(to_status)?;
        let released = self.service.release(id).await.map_err(to_status)?;
        Ok(Response::new(reservation::release_response(&released)))
    }

    async fn register_members(
        &self,
        request: Request<pb::RegisterMembersRequest>,
    ) -> Result<Response<pb::RegisterMembersResponse>, Status> {
        let command = request.into_inner().try_into().map_err(to_status)?;
        let outcome = self.service.register_members(command).await.map_err(to_status)?;
        Ok(Response::new(members::register_response(&outcome)))
    }

    async fn set_invite_privileges(
        &self,
        request: Request<pb::SetInvitePrivilegesRequest>,
    ) -> Result<Response<pb::SetInvitePrivilegesResponse>, Status> {
        let caller = caller(&request);
        let mut command: PrivilegesCommand = request.into_inner().try_into().map_err(to_status)?;
        command.updated_by = recorded_actor(caller.as_ref(), &command.updated_by);
        let outcome = self.service.set_invite_privileges(command).await.map_err(to_status)?;
        Ok(Response::new(members::privileges_response(&outcome)))
    }

    type WalkInviteForestStream = Pin<Box<dyn Stream<Item = Result<pb::MemberNode, Status>> + Send>>;

    async fn walk_invite_forest(
        &self,
        request: Request<pb::WalkInviteForestRequest>,
    ) -> Result<Response<Self::WalkInviteForestStream>, Status> {
        let read = read_from(&request)?;
        let members = self.service.walk_forest(request.into_inner().into(), read);
        let stream = ReceiverStream::new(members).map(|m| m.map(graph::member_pb).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_stats(&self, request: Request<pb::GetStatsRequest>) -> Result<Response<pb::GetStatsResponse>, Status> {
        let read = read_from(&request)?;
        let query = request.into_inner().try_into().map_err(to_status)?;
        let stats = self.service.stats(query, read).await.map_err(to_status)?;
        Ok(Response::new(stats::stats_response(&stats)))
    }

    async fn reparent(&self, request: Request<pb::ReparentRequest>) -> Result<Response<pb::ReparentResponse>, Status> {
        let caller = caller(&request);
        let mut command: ReparentCommand = request.into_inner().try_into().map_err(to_status)?;
        command.reparented_by = recorded_actor(caller.as_ref(), &command.reparented_by);
        let outcome = self.service.reparent(command).await.map_err(to_status)?;
        Ok(Response::new(graph::reparent_response(outcome)))
    }

    async fn join_waitlist(
        &self,
        request: Request<pb::JoinWaitlistRequest>,
    ) -> Result<Response<pb::JoinWaitlistResponse>, Status> {
        waitlist::join(&self.service, &self.view, request).await
    }

    async fn get_waitlist_entry(
        &self,
        request: Request<pb::GetWaitlistEntryRequest>,
    ) -> Result<Response<pb::GetWaitlistEntryResponse>, Status> {
        waitlist::get(&self.service, &self.view, request).await
    }

    async fn review_waitlist_entries(
        &self,
        request: Request<pb::ReviewWaitlistEntriesRequest>,
    ) -> Result<Response<pb::ReviewWaitlistEntriesResponse>, Status> {
        waitlist::review(&self.service, &self.view, request).await
    }

    async fn admit_from_waitlist(
        &self,
        request: Request<pb::AdmitFromWaitlistRequest>,
    ) -> Result<Response<pb::AdmitFromWaitlistResponse>, Status> {
        waitlist::admit(&self.service, &self.view, request).await
    }

    async fn update_invitation(
        &self,
        request: Request<pb::UpdateInvitationRequest>,
    ) -> Result<Response<pb::UpdateInvitationResponse>, Status> {
        lifecycle::update(&self.service, &self.view, request).await
    }

    async fn restore_invitation(
        &self,
        request: Request<pb::RestoreInvitationRequest>,
    ) -> Result<Response<pb::RestoreInvitationResponse>, Status> {
        lifecycle::restore(&self.service, &self.view, request).await
    }

    async fn create_member_invitation(
        &self,
        request: Request<pb::CreateMemberInvitationRequest>,
    ) -> Result<Response<pb::CreateMemberInvitationResponse>, Status> {
        lifecycle::create_for_member(&self.service, &self.view, request).await
    }

    async fn record_conversion(
        &self,
        request: Request<pb::RecordConversionRequest>,
    ) -> Result<Response<pb::RecordConversionResponse>, Status> {
        conversions::record(&self.service, request).await
    }

    async fn void_conversion(
        &self,
        request: Request<pb::VoidConversionRequest>,
    ) -> Result<Response<pb::VoidConversionResponse>, Status> {
        conversions::void(&self.service, request).await
    }

    async fn review_rewards(
        &self,
        request: Request<pb::ReviewRewardsRequest>,
    ) -> Result<Response<pb::ReviewRewardsResponse>, Status> {
        conversions::review(&self.service, request).await
    }

    async fn erase_member(
        &self,
        request: Request<pb::EraseMemberRequest>,
    ) -> Result<Response<pb::EraseMemberResponse>, Status> {
        privacy::erase(&self.service, request).await
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        privacy::list_history(&self.service, request).await
    }
}

/// The request header that sends a read-only call to the primary
/// (`x-invitations-read: primary`), for a caller that must see its own
/// write; without it (or `replica`) the call may read from a standby
/// (docs/design.md, "Reads from standbys").
pub const READ_HEADER: &str = "x-invitations-read";

pub(crate) fn read_from<T>(request: &Request<T>) -> Result<ReadFrom, Status> {
    match request.metadata().get(READ_HEADER).map(|v| v.to_str()) {
        None | Some(Ok("replica")) => Ok(ReadFrom::AnyReplica),
        Some(Ok("primary")) => Ok(ReadFrom::Primary),
        Some(_) => Err(to_status(crate::Error::invalid(READ_HEADER, "must be primary or replica"))),
    }
}
