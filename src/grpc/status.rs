//! Domain errors to gRPC statuses: one exhaustive match, no wildcard, so a new
//! error variant cannot silently become INTERNAL. Every status carries a
//! `google.rpc.ErrorInfo` (domain `invitations`); bad fields carry `BadRequest`.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::domain::error::ERROR_DOMAIN;
use crate::domain::error::{DbClass, Error, classify};

pub fn to_status(error: Error) -> Status {
    let reason = error.reason();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    let code = match &error {
        Error::InvalidArgument(violations) => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            Code::InvalidArgument
        }
        Error::InvalidCodeFormat { field } | Error::CodeChecksumMismatch { field } => {
            details.add_bad_request_violation(*field, error.to_string());
            Code::InvalidArgument
        }
        Error::RequestIdReused => {
            details.add_bad_request_violation("request_id", error.to_string());
            Code::InvalidArgument
        }
        Error::CodeNotFound => Code::NotFound,
        Error::CodeTaken => {
            details.add_bad_request_violation("custom_code", error.to_string());
            Code::AlreadyExists
        }
        Error::NotFound { field, .. } => {
            details.add_bad_request_violation(*field, error.to_string());
            Code::NotFound
        }
        Error::AlreadyRedeemed
        | Error::Expired
        | Error::Revoked
        | Error::SelfInvite
        | Error::AlreadyInvited
        | Error::InviteCycle
        | Error::InviterDisabled
        | Error::Reserved
        | Error::ReservationExpired
        | Error::ReservationReleased
        | Error::ReservationCompleted
        | Error::EmailMismatch
        | Error::IpAlreadyUsed
        | Error::SameIpAsInviter
        | Error::DisposableEmail
        | Error::AlreadyMember
        | Error::ApplicantMismatch
        | Error::NotRevoked
        | Error::ConversionsDisabled => Code::FailedPrecondition,
        Error::MemberLimit { limit, flag, retry_after, .. } => {
            details.add_precondition_failure_violation(*limit, *flag, error.to_string());
            if let Some(after) = retry_after {
                details.set_retry_info(Some(std::time::Duration::from_secs(after.whole_seconds().max(1) as u64)));
            }
            Code::FailedPrecondition
        }
        Error::MaxUsesBelowHeld { .. } => {
            details.add_precondition_failure_violation(error.reason(), "max_uses", error.to_string());
            Code::FailedPrecondition
        }
        Error::ReapplyTooSoon { retry_after } => {
            let secs = retry_after.whole_seconds().max(1) as u64;
            details.set_retry_info(Some(std::time::Duration::from_secs(secs)));
            Code::FailedPrecondition
        }
        Error::AlreadyAdmitted { entry_id } => {
            details.add_precondition_failure_violation(error.reason(), entry_id.clone(), error.to_string());
            Code::FailedPrecondition
        }
        Error::TooManyAttempts { retry_after } => {
            let secs = retry_after.whole_seconds().max(1) as u64;
            details.set_retry_info(Some(std::time::Duration::from_secs(secs)));
            Code::ResourceExhausted
        }
        Error::InvitePrivilegesDisabled { user_id } => {
            details.add_precondition_failure_violation(error.reason(), user_id.clone(), error.to_string());
            Code::FailedPrecondition
        }
        Error::Database(cause) => {
            let code = match classify(cause) {
                DbClass::Unavailable => {
                    tracing::warn!(error = ?cause, "database unavailable");
                    return Status::with_error_details(Code::Unavailable, error.to_string(), details);
                }
                DbClass::Retry | DbClass::Internal => Code::Internal,
            };
            tracing::error!(error = ?cause, "internal error");
            return Status::with_error_details(code, "internal error", details);
        }
        Error::Unavailable(cause) => {
            tracing::warn!(error = ?cause, "database unavailable");
            return Status::with_error_details(Code::Unavailable, error.to_string(), details);
        }
        Error::Internal(cause) => {
            // The cause stays in the log (with the span's trace id); the
            // client gets a generic message, never SQL or driver text.
            tracing::error!(error = ?cause, "internal error");
            return Status::with_error_details(Code::Internal, "internal error", details);
        }
    };
    Status::with_error_details(code, error.to_string(), details)
}
