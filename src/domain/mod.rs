//! Domain types: validated ids and inputs, the invitation entity and its state.
//! Once you hold one of these, it is valid; parsing happens at the edge.

pub mod abuse;
pub mod attributes;
pub mod code;
pub mod conversion;
pub mod email;
pub mod error;
pub mod events;
pub mod history;
pub mod selector;

use time::OffsetDateTime;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::email::{BindingKind, Email};

/// Longest user id, request id or caller name, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most invitations one Mint call may create (keeps the answer under 4 MiB).
pub const MAX_MINT_PER_CALL: u32 = 10_000;
/// Most uses one invitation may have.
pub const MAX_USES: u32 = 1_000_000;
/// Most invitations one wave (Mint by selector) mints.
pub const MAX_WAVE: u32 = 10_000_000;
/// Most invitations and recipients a wave's answer lists.
pub const MAX_WAVE_LISTED: usize = 1_000;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 128;
/// Longest note or revoke reason, in bytes.
pub const MAX_NOTE_LEN: usize = 1024;
/// Longest time-to-live of an invitation.
pub const MAX_TTL: time::Duration = time::Duration::days(3650);
/// Most invitation ids in one Revoke call.
pub const MAX_REVOKE_IDS: usize = 1_000;
/// Most members one RegisterMembers call may name (about 1.5 MB at most).
pub const MAX_REGISTER_PER_CALL: usize = 10_000;
/// How far ahead of the server's clock a join time may be (clock skew).
pub const MAX_JOIN_TIME_SKEW: time::Duration = time::Duration::minutes(5);
/// Graph depths (GetInviteGraph and the forest walk) are clamped to this,
/// which stands for "the whole subtree".
pub const MAX_GRAPH_DEPTH: u32 = 10_000;
/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger page sizes are clamped to this.
pub const MAX_PAGE_SIZE: u32 = 500;

fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Characters that draw nothing yet are not whitespace: the Hangul fillers
/// and the blank Braille pattern. An id of these alone looks empty.
const BLANK_LOOKING: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];

/// The rules for a name an operator reads (user ids, who did something),
/// on top of `check_text`: no format characters (Unicode category Cf: the
/// right-to-left override U+202E, the zero-width space U+200B, …), which
/// make one name look like another on a screen or in a spreadsheet, and not
/// blank-looking (only whitespace or fillers).
fn check_visible(value: &str) -> Result<(), String> {
    if let Some(c) = value.chars().find(|c| c.general_category() == GeneralCategory::Format) {
        return Err(format!("must not contain invisible format characters (found U+{:04X})", u32::from(c)));
    }
    if !value.is_empty() && value.chars().all(|c| c.is_whitespace() || BLANK_LOOKING.contains(&c)) {
        return Err("must not be only whitespace".into());
    }
    Ok(())
}

/// An opaque user id from the product: 1-128 bytes of UTF-8, no control or
/// format characters, not only whitespace (`check_visible`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err("is required".into());
        }
        check_text(value, MAX_ID_LEN)?;
        check_visible(value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An AIP-155 request id: optional, 1-128 bytes when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse_optional(value: &str) -> Result<Option<Self>, String> {
        if value.is_empty() {
            return Ok(None);
        }
        check_text(value, MAX_ID_LEN)?;
        Ok(Some(Self(value.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses an invitation or batch id (a UUID).
pub fn parse_uuid(value: &str) -> Result<Uuid, String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    Uuid::parse_str(value).map_err(|_| "must be a UUID".into())
}

/// Free text with a length limit (labels, notes, reasons).
pub fn parse_text(value: &str, max: usize) -> Result<String, String> {
    check_text(value, max)?;
    Ok(value.to_owned())
}

/// Who did something, as a request names them (`minted_by`, `revoked_by`,
/// `updated_by`, `reparented_by`): optional, and when set the rules of a
/// user id, since operators read it the same way.
pub fn parse_actor(value: &str) -> Result<String, String> {
    check_text(value, MAX_ID_LEN)?;
    check_visible(value)?;
    Ok(value.to_owned())
}

/// Optional client IP address (for the abuse checks).
pub fn parse_client_ip(value: &str) -> Result<Option<std::net::IpAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| "must be an IPv4 or IPv6 address".into())
}

/// Optional e-mail address, normalised (see `email`).
pub fn parse_email(value: &str) -> Result<Option<Email>, String> {
    Email::parse_optional(value)
}

/// AIP-158 page size: 0 is the default, negative is an error, large is clamped.
pub fn parse_page_size(value: i32) -> Result<u32, String> {
    match value {
        v if v < 0 => Err("must not be negative".into()),
        0 => Ok(DEFAULT_PAGE_SIZE),
        v => Ok((v as u32).min(MAX_PAGE_SIZE)),
    }
}

/// Where an invitation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unspent,
    Redeemed,
    Revoked,
    Expired,
}

/// An invitation as stored. The store reads the code sealed; the service
/// opens it into `code` (canonical, see `code::InvitationCode`), which stays
/// empty if its secret is no longer configured.
#[derive(Clone)]
pub struct Invitation {
    pub id: Uuid,
    pub code: String,
    pub code_ciphertext: Option<Vec<u8>>,
    pub code_key_id: Option<i32>,
    pub inviter_id: Option<String>,
    pub last_invitee_id: Option<String>,
    pub uses: i32,
    pub max_uses: i32,
    pub create_time: OffsetDateTime,
    pub expire_time: Option<OffsetDateTime>,
    pub last_redeem_time: Option<OffsetDateTime>,
    pub batch_id: Uuid,
    pub label: String,
    pub note: String,
    pub minted_by: String,
    pub revoke_time: Option<OffsetDateTime>,
    pub revoke_reason: Option<String>,
    pub revoked_by: Option<String>,
    /// Set on bound invitations; the digest tests a presented address.
    pub binding: Option<BindingKind>,
    pub binding_digest: Option<Vec<u8>>,
    /// Abuse signals raised on any of its redemptions (names of `abuse::Flag`).
    pub abuse_flags: Vec<String>,
    /// Carried to the sign-up service, never interpreted (`attributes`).
    pub attributes: Attributes,
}

impl Invitation {
    /// The state at `now`. A fully used invitation stays REDEEMED even if it
    /// was later revoked or passed its expiry: the uses happened.
    pub fn state(&self, now: OffsetDateTime) -> State {
        if self.uses >= self.max_uses {
            State::Redeemed
        } else if self.revoke_time.is_some() {
            State::Revoked
        } else if self.expire_time.is_some_and(|t| t <= now) {
            State::Expired
        } else {
            State::Unspent
        }
    }

    /// Why this invitation cannot be redeemed at `now`, if it cannot.
    pub fn unavailable_reason(&self, now: OffsetDateTime) -> Option<crate::Error> {
        match self.state(now) {
            State::Unspent => None,
            State::Redeemed => Some(crate::Error::AlreadyRedeemed),
            State::Revoked => Some(crate::Error::Revoked),
            State::Expired => Some(crate::Error::Expired),
        }
    }

    /// Whether `email` may redeem this invitation: always for unbound ones
    /// and applicant-bound ones ([`Self::admits_user`] decides those); for
    /// address-bound ones only a matching address.
    pub fn admits(&self, email: Option<&Email>) -> bool {
        match (self.binding, &self.binding_digest) {
            (None | Some(crate::domain::email::BindingKind::Applicant), _) => true,
            (Some(kind), Some(digest)) => email.is_some_and(|e| crate::domain::email::admits(kind, digest, e)),
            (Some(_), None) => false,
        }
    }

    /// Whether the invitee `user_id` may redeem this invitation: always
    /// unless it is bound to another waitlist applicant.
    pub fn admits_user(&self, user_id: &str) -> bool {
        match (self.binding, &self.binding_digest) {
            (None, _) => true,
            (Some(kind), Some(digest)) => crate::domain::email::admits_user(kind, digest, user_id),
            (Some(_), None) => false,
        }
    }

    /// Bound to the applicant of a waitlist entry (admitted from the waitlist).
    pub fn bound_to_applicant(&self) -> bool {
        self.binding == Some(crate::domain::email::BindingKind::Applicant)
    }
}

/// A member node of the invite graph, as stored.
#[derive(Debug, Clone)]
pub struct Member {
    /// The internal numeric id (never shown); `path` is made of these.
    pub id: i64,
    pub user_id: String,
    pub inviter_id: Option<String>,
    /// Unset: known only as the owner of minted invitations.
    pub join_time: Option<OffsetDateTime>,
    pub invitation_id: Option<Uuid>,
    /// Ids from the root down to this member (itself last).
    pub path: Vec<i64>,
    /// Opted out of the public invite tree.
    pub hidden: bool,
    /// Whether the inviter is hidden (false for roots).
    pub parent_hidden: bool,
    pub privileges: InvitePrivileges,
}

impl Member {
    /// Levels below the member's root (a root is at depth 0).
    pub fn depth(&self) -> u32 {
        self.path.len().saturating_sub(1) as u32
    }

    /// The inviter's numeric id, if the member has an inviter.
    pub fn parent_id(&self) -> Option<i64> {
        self.path.len().checked_sub(2).map(|i| self.path[i])
    }

    pub fn root_id(&self) -> i64 {
        self.path.first().copied().unwrap_or(self.id)
    }
}

/// Whether a member may hand out invitations, and the last change.
/// Stored as the member's `invite_*` columns.
#[derive(Debug, Clone)]
pub struct InvitePrivileges {
    pub enabled: bool,
    pub reason: String,
    pub update_time: Option<OffsetDateTime>,
    pub updated_by: String,
}

/// Where a reservation is in its life, as stored. A `Held` row past its
/// expiry is lapsed whether or not the sweeper has marked it (`status_at`).
/// Stored as the Postgres enum `reservation_status` (store::rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Held,
    Completed,
    Released,
    Lapsed,
}

/// A lease on one use of an invitation. No `Debug`: the id is a bearer handle.
#[derive(Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub invitation_id: Uuid,
    pub status: ReservationStatus,
    pub create_time: OffsetDateTime,
    pub expire_time: OffsetDateTime,
    pub end_time: Option<OffsetDateTime>,
    pub invitee_id: Option<String>,
}

impl Reservation {
    /// The status at `now`: a held lease that ran out is lapsed.
    pub fn status_at(&self, now: OffsetDateTime) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if self.expire_time <= now => ReservationStatus::Lapsed,
            status => status,
        }
    }

    /// When it ended: the stored end time, or the expiry of an unswept lapse.
    pub fn end_time_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match self.status_at(now) {
            ReservationStatus::Held => None,
            ReservationStatus::Lapsed => self.end_time.or(Some(self.expire_time)),
            _ => self.end_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_limits() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(UserId::parse(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse("user:42 ✓").is_ok());
    }

    #[test]
    fn user_ids_that_look_like_others_are_refused() {
        // Right-to-left override, zero-width space and joiner, BOM, soft
        // hyphen, an invisible tag character: all Unicode category Cf.
        for id in ["alice\u{202E}", "al\u{200B}ice", "a\u{200D}b", "\u{FEFF}bob", "bo\u{AD}b", "x\u{E0041}"] {
            let e = UserId::parse(id).expect_err(id);
            assert!(e.contains("format characters"), "{id:?}: {e}");
            assert!(parse_actor(id).is_err(), "{id:?} as an actor");
        }
        assert!(UserId::parse("alice\u{202E}").expect_err("RLO").contains("U+202E"));
        for blank in [" ", "   ", "\u{3000}", "\u{A0}\u{2003}", "\u{3164}", "\u{2800}"] {
            assert_eq!(UserId::parse(blank).expect_err(blank), "must not be only whitespace", "{blank:?}");
            assert!(parse_actor(blank).is_err(), "{blank:?} as an actor");
        }
        // Spaces inside, non-Latin scripts and emoji are fine.
        for ok in ["ana maria", " padded ", "ユーザー", "عمر", "user 🎉"] {
            assert!(UserId::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(parse_actor(""), Ok(String::new()), "an actor is optional");
    }

    #[test]
    fn page_size_rules() {
        assert_eq!(parse_page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(parse_page_size(7), Ok(7));
        assert_eq!(parse_page_size(100_000), Ok(MAX_PAGE_SIZE));
        assert!(parse_page_size(-1).is_err());
    }

    fn invitation(uses: i32, max_uses: i32) -> Invitation {
        let now = OffsetDateTime::now_utc();
        Invitation {
            id: Uuid::now_v7(),
            code: String::new(),
            code_ciphertext: None,
            code_key_id: None,
            inviter_id: None,
            last_invitee_id: None,
            uses,
            max_uses,
            create_time: now,
            expire_time: None,
            last_redeem_time: None,
            batch_id: Uuid::now_v7(),
            label: String::new(),
            note: String::new(),
            minted_by: String::new(),
            revoke_time: None,
            revoke_reason: None,
            revoked_by: None,
            binding: None,
            binding_digest: None,
            abuse_flags: Vec::new(),
            attributes: Attributes::default(),
        }
    }

    #[test]
    fn state_precedence() {
        let now = OffsetDateTime::now_utc();
        let mut inv = invitation(0, 2);
        assert_eq!(inv.state(now), State::Unspent);
        inv.uses = 1;
        assert_eq!(inv.state(now), State::Unspent, "multi-use with uses left");
        inv.expire_time = Some(now);
        assert_eq!(inv.state(now), State::Expired);
        inv.revoke_time = Some(now);
        assert_eq!(inv.state(now), State::Revoked);
        inv.uses = 2;
        assert_eq!(inv.state(now), State::Redeemed, "spent uses win over revoke and expiry");
    }
}
