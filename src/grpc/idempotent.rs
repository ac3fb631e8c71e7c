//! The one shape of every `request_id` operation (Mint, Revoke, Redeem,
//! Reserve, UpdateInvitation, RestoreInvitation, CreateMemberInvitation,
//! RecordConversion, VoidConversion, EraseMember): the whole request hashed
//! before it is consumed, its `request_id` parsed, the service called with
//! both, and the answer converted (fresh) or decoded (the first answer,
//! replayed).

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Response;

use crate::domain::RequestId;
use crate::domain::error::Error;
use crate::pb;
use crate::service::{Answer, Idempotency};

/// A request that carries a `request_id`.
pub(super) trait Idempotent: Message {
    fn request_id(&self) -> &str;
}

macro_rules! idempotent_requests {
    ($($request:ty),+ $(,)?) => {
        $(impl Idempotent for $request {
            fn request_id(&self) -> &str {
                &self.request_id
            }
        })+
    };
}

idempotent_requests!(
    pb::MintRequest,
    pb::RevokeRequest,
    pb::RedeemRequest,
    pb::ReserveRequest,
    pb::UpdateInvitationRequest,
    pb::RestoreInvitationRequest,
    pb::CreateMemberInvitationRequest,
    pb::RecordConversionRequest,
    pb::VoidConversionRequest,
    pb::EraseMemberRequest,
);

/// A request's idempotency key: its parsed `request_id` (if any) and the
/// SHA-256 of the whole request (the same id with another request is refused).
pub(super) struct Key {
    request_id: Option<RequestId>,
    request_hash: [u8; 32],
}

impl Key {
    /// Taken before the request is converted (conversion consumes it).
    pub(super) fn of(request: &impl Idempotent) -> Result<Self, Error> {
        let request_id =
            RequestId::parse_optional(request.request_id()).map_err(|d| Error::invalid("request_id", d))?;
        Ok(Self { request_id, request_hash: Sha256::digest(request.encode_to_vec()).into() })
    }

    /// Calls the operation under this key; `reply` converts its answer to the
    /// response (and to the bytes stored for a replay).
    pub(super) async fn call<T, M>(
        self,
        reply: impl Fn(&T) -> M + Sync,
        operation: impl AsyncFnOnce(Idempotency<'_, T>) -> Result<Answer<T>, Error>,
    ) -> Result<Response<M>, Error>
    where
        M: Message + Default,
    {
        let encode = |answer: &T| reply(answer).encode_to_vec();
        let idem = Idempotency { request_id: self.request_id, request_hash: self.request_hash, encode: &encode };
        match operation(idem).await? {
            Answer::Fresh(answer) => Ok(Response::new(reply(&answer))),
            Answer::Replayed(bytes) => M::decode(bytes.as_slice())
                .map(Response::new)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored answer does not decode: {e}"))),
        }
    }
}
