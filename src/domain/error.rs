//! The domain's error type: every way a call can fail, in words the caller can
//! act on. The transport layer (`grpc::status`) maps each variant to a gRPC
//! status; nothing here knows about tonic.

/// The `domain` of every `google.rpc.ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "invitations";

/// One bad field of a request (AIP-193 `BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more fields are invalid; nothing was changed.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The code has the wrong length or a symbol outside the alphabet.
    #[error("`{field}` is not an invitation code")]
    InvalidCodeFormat { field: &'static str },
    /// The check symbol does not match: a typo, not a wrong code.
    #[error("`{field}` has a mistyped symbol or two swapped symbols")]
    CodeChecksumMismatch { field: &'static str },
    #[error("no invitation has this code")]
    CodeNotFound,
    #[error("the invitation has no uses left")]
    AlreadyRedeemed,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation was revoked")]
    Revoked,
    #[error("a user cannot redeem their own invitation")]
    SelfInvite,
    #[error("the user already joined through another invitation")]
    AlreadyInvited,
    #[error("the invitee is the inviter's own ancestor in the invite graph")]
    InviteCycle,
    /// The invitation's owner has their invite privileges disabled.
    #[error("the inviter's invite privileges are disabled")]
    InviterDisabled,
    /// A member named to receive invitations has invite privileges disabled.
    #[error("invite privileges of `{user_id}` are disabled: it cannot receive invitations")]
    InvitePrivilegesDisabled { user_id: String },
    /// Every remaining use is held by someone else's live reservation.
    #[error("every remaining use of the invitation is reserved by a sign-up in progress")]
    Reserved,
    #[error("the reservation ran out before it was completed")]
    ReservationExpired,
    #[error("the reservation was released")]
    ReservationReleased,
    #[error("the reservation was already completed by another user")]
    ReservationCompleted,
    /// Never says which address or domain the invitation is bound to.
    #[error("the invitation is bound to an e-mail address or domain, and the one presented does not match")]
    EmailMismatch,
    /// The client's IP prefix already redeemed within the IP window.
    #[error("an invitation was already redeemed from this network recently")]
    IpAlreadyUsed,
    /// The invitee redeems from the IP prefix the inviter joined from.
    #[error("the invitee and the inviter use the same network")]
    SameIpAsInviter,
    #[error("e-mail addresses at disposable domains cannot redeem invitations")]
    DisposableEmail,
    /// Too many failed attempts from this client IP or for this invitee.
    #[error("too many failed attempts; retry later")]
    TooManyAttempts { retry_after: time::Duration },
    /// JoinWaitlist for an applicant who is already a member.
    #[error("the applicant is already a member")]
    AlreadyMember,
    /// The invitation was admitted from the waitlist for another applicant.
    #[error("the invitation is bound to the waitlist applicant it was admitted for")]
    ApplicantMismatch,
    /// A rejected applicant joins again before the reapply time.
    #[error("the applicant was rejected recently; retry later")]
    ReapplyTooSoon { retry_after: time::Duration },
    /// A review named an entry that was already admitted.
    #[error("waitlist entry `{entry_id}` was already admitted")]
    AlreadyAdmitted { entry_id: String },
    /// UpdateInvitation would set max_uses below the uses spent plus those
    /// held by live reservations.
    #[error("max_uses must be at least {held}: {held} uses are spent or held by live reservations")]
    MaxUsesBelowHeld { held: i64 },
    /// CreateMemberInvitation refused by an operator limit: `limit` names
    /// it (MAX_USES, MAX_TTL, TTL_REQUIRED, MEMBER_AGE, RATE, MAX_UNSPENT,
    /// PRIVILEGES, MEMBER_INVITATIONS_OFF), `flag` the setting behind it.
    #[error("member limit {limit} ({flag}): {detail}")]
    MemberLimit { limit: &'static str, flag: &'static str, detail: String, retry_after: Option<time::Duration> },
    /// Mint with a custom_code another invitation has.
    #[error("the code is already taken")]
    CodeTaken,
    /// RestoreInvitation of an invitation that is not revoked.
    #[error("the invitation is not revoked")]
    NotRevoked,
    /// RecordConversion while no conversion kinds are configured.
    #[error("conversions are off: the service is configured with no conversion kinds")]
    ConversionsDisabled,
    #[error("{what} not found")]
    NotFound { what: &'static str, field: &'static str },
    /// The request_id was used before with a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// A database error, kept typed up to the transport: [`classify`] says
    /// whether the caller hears UNAVAILABLE (retry later) or INTERNAL.
    #[error("{}", database_message(.0))]
    Database(#[source] sqlx::Error),
    /// The database cannot be reached right now; retrying later may work.
    #[error("{UNAVAILABLE_MESSAGE}")]
    Unavailable(#[source] anyhow::Error),
    /// Something failed inside the service; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

const UNAVAILABLE_MESSAGE: &str = "the service cannot reach its database; retry later";

fn database_message(e: &sqlx::Error) -> &'static str {
    match classify(e) {
        DbClass::Unavailable => UNAVAILABLE_MESSAGE,
        DbClass::Retry | DbClass::Internal => "internal error",
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The stable reason string (`google.rpc.ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::InvalidCodeFormat { .. } => "INVALID_CODE_FORMAT",
            Error::CodeChecksumMismatch { .. } => "CODE_CHECKSUM_MISMATCH",
            Error::CodeNotFound => "CODE_NOT_FOUND",
            Error::AlreadyRedeemed => "ALREADY_REDEEMED",
            Error::Expired => "EXPIRED",
            Error::Revoked => "REVOKED",
            Error::SelfInvite => "SELF_INVITE",
            Error::AlreadyInvited => "ALREADY_INVITED",
            Error::InviteCycle => "INVITE_CYCLE",
            Error::InviterDisabled => "INVITER_DISABLED",
            Error::InvitePrivilegesDisabled { .. } => "INVITE_PRIVILEGES_DISABLED",
            Error::Reserved => "RESERVED",
            Error::ReservationExpired => "RESERVATION_EXPIRED",
            Error::ReservationReleased => "RESERVATION_RELEASED",
            Error::ReservationCompleted => "RESERVATION_COMPLETED",
            Error::EmailMismatch => "EMAIL_MISMATCH",
            Error::IpAlreadyUsed => "IP_ALREADY_USED",
            Error::SameIpAsInviter => "SAME_IP_AS_INVITER",
            Error::DisposableEmail => "DISPOSABLE_EMAIL",
            Error::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            Error::AlreadyMember => "ALREADY_MEMBER",
            Error::ApplicantMismatch => "APPLICANT_MISMATCH",
            Error::ReapplyTooSoon { .. } => "REAPPLY_TOO_SOON",
            Error::AlreadyAdmitted { .. } => "ALREADY_ADMITTED",
            Error::MaxUsesBelowHeld { .. } => "MAX_USES_BELOW_HELD",
            Error::NotRevoked => "NOT_REVOKED",
            Error::CodeTaken => "CODE_TAKEN",
            Error::MemberLimit { .. } => "MEMBER_LIMIT",
            Error::ConversionsDisabled => "CONVERSIONS_DISABLED",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::RequestIdReused => "REQUEST_ID_REUSED",
            Error::Database(e) => match classify(e) {
                DbClass::Unavailable => "UNAVAILABLE",
                DbClass::Retry | DbClass::Internal => "INTERNAL",
            },
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

/// What a database error means for the call: the one place that decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbClass {
    /// A deadlock or serialization failure: the transaction may be run
    /// again (`store::with_retry`). One that still fails is INTERNAL.
    Retry,
    /// The database is away (pool timeout or closed, I/O, connection
    /// ended or refused): UNAVAILABLE, the caller may retry later.
    Unavailable,
    /// Anything else: INTERNAL.
    Internal,
}

pub fn classify(e: &sqlx::Error) -> DbClass {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => DbClass::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("40001" | "40P01") => DbClass::Retry,
            Some(code) if connection_lost(code) => DbClass::Unavailable,
            _ => DbClass::Internal,
        },
        _ => DbClass::Internal,
    }
}

/// SQLSTATEs of a connection the database ended or refused: class 08
/// (connection exception) and 57P0x (shut down, terminated by an operator,
/// not accepting connections yet). The call can be retried on another
/// connection, so it is UNAVAILABLE rather than INTERNAL.
fn connection_lost(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || sqlstate.starts_with("57P")
}

/// Collects field violations so a request reports all its bad fields at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Keeps the value if `result` is Ok, records the violation otherwise.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(description) => {
                self.push(field, description);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_that_is_away_is_unavailable_and_anything_else_internal() {
        let reset = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for away in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, reset()] {
            assert_eq!(classify(&away), DbClass::Unavailable, "{away}");
            let error = Error::from(away);
            assert_eq!((error.reason(), error.to_string()), ("UNAVAILABLE", UNAVAILABLE_MESSAGE.to_owned()));
        }
        let fault = Error::from(sqlx::Error::RowNotFound);
        assert!(matches!(fault, Error::Database(sqlx::Error::RowNotFound)), "kept typed");
        assert_eq!((fault.reason(), fault.to_string()), ("INTERNAL", "internal error".to_owned()));
    }

    #[test]
    fn lost_connections_are_told_from_other_sqlstates() {
        for lost in ["08000", "08006", "57P01", "57P03"] {
            assert!(connection_lost(lost), "{lost}");
        }
        for other in ["40001", "40P01", "23505", "57014"] {
            assert!(!connection_lost(other), "{other}");
        }
    }
}
