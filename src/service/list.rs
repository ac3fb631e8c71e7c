//! ListForUser and CheckCode: reading invitations.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::abuse::CheckMode;
use crate::domain::code::InvitationCode;
use crate::domain::error::Error;
use crate::domain::{Invitation, State, UserId};
use crate::service::abuse::Attempt;
use crate::store::common_path;
use crate::store::replicas::{ReadFrom, Source};

use super::{Invitations, bad_page_token, read_statement};

pub struct ListQuery {
    /// None lists the unowned invitations.
    pub owner: Option<UserId>,
    pub state: Option<State>,
    pub page_size: u32,
    pub page_token: String,
}

pub struct ListPage {
    pub invitations: Vec<Invitation>,
    pub next_page_token: String,
    pub inviter_id: Option<String>,
    /// When the owner earns its next invitation (earn policy).
    pub next_grant_time: Option<OffsetDateTime>,
    /// Per invitation (same order): the kinds its invitees converted with.
    pub converted: Vec<Vec<String>>,
}

/// CheckCode: a code and who checks it. A code that does not parse is kept
/// as its refusal: the answer says "check for a typo" without a lookup (but
/// still under the attempt limit), so it is not an error of the call.
pub struct CheckCommand {
    pub code: Result<InvitationCode, Error>,
    pub client_ip: Option<std::net::IpAddr>,
}

/// CheckCode's answer: the invitation when the code exists, and why it
/// cannot be redeemed, if it cannot.
pub struct CodeCheck {
    pub invitation: Option<Invitation>,
    pub refusal: Option<Error>,
    /// Uses held by live reservations.
    pub reserved_uses: u32,
    /// Admitted from the waitlist: only its applicant may redeem it.
    pub bound_to_applicant: bool,
}

impl Invitations {
    #[tracing::instrument(name = "db.list", skip_all, fields(db.system = "postgresql"))]
    pub async fn list(&self, query: ListQuery, read: ReadFrom) -> Result<ListPage, Error> {
        let scope = list_scope(&query);
        let after = if query.page_token.is_empty() {
            None
        } else {
            let cursor = self.page_tokens.decode(&query.page_token, &scope).ok_or_else(bad_page_token)?;
            Some(Uuid::from_slice(&cursor).map_err(|_| bad_page_token())?)
        };
        let owner = query.owner.as_ref().map(UserId::as_str);
        let earn = self.quotas.earn.filter(|_| owner.is_some());
        let limit = i64::from(query.page_size) + 1;
        let earn_secs = earn.map(|e| e.interval.as_secs_f64());
        let conversions_on = !self.conversions.kinds.is_empty();
        let (page, _) = read_statement!(self, read, conn => common_path::owner_page(
            &mut conn, owner, query.state, after, limit, earn_secs, conversions_on
        ));
        let (mut rows, mut converted) = (page.invitations, page.converted);
        let next_page_token = if rows.len() > query.page_size as usize {
            rows.truncate(query.page_size as usize);
            converted.truncate(query.page_size as usize);
            rows.last().map(|r| self.page_tokens.encode(&scope, r.id.as_bytes())).unwrap_or_default()
        } else {
            String::new()
        };
        // Only the rows shown are opened (the extra one only told whether
        // another page follows).
        let rows = self.reveal(rows);
        let next_grant_time = match (earn, page.earn) {
            (Some(earn), Some((Some(next), true, unspent))) if unspent < i64::from(earn.cap) => Some(next),
            _ => None,
        };
        Ok(ListPage { invitations: rows, next_page_token, inviter_id: page.inviter_id, next_grant_time, converted })
    }

    /// CheckCode of a well-formed code in one statement, under the
    /// failed-attempt limit (refused while over it in `block` mode). An
    /// unknown code counts against the limit: a second statement, for
    /// guesses only. From a standby, a miss is looked up again on the
    /// primary: a code minted a moment ago is never "not found".
    #[tracing::instrument(name = "db.check", skip_all, fields(db.system = "postgresql"))]
    pub async fn check(&self, code: &InvitationCode, attempt: &Attempt, read: ReadFrom) -> Result<CodeCheck, Error> {
        // Only the attempt keys: CheckCode makes no IP or e-mail checks.
        let keys = if self.abuse.attempts == CheckMode::Off { Vec::new() } else { self.attempt_keys(attempt) };
        let (window_start, _) = self.abuse.attempt_window_at(OffsetDateTime::now_utc());
        let hashes = self.code_hashes(code);
        let (mut state, source) =
            read_statement!(self, read, conn => common_path::check_code(&mut conn, &hashes, &keys, window_start));
        if state.invitation.is_none() && source != Source::Primary {
            let mut conn = self.statement_conn().await?;
            let again = common_path::check_code(&mut conn, &hashes, &keys, window_start).await;
            state = conn.settled(again)?;
        }
        let limit = i32::try_from(self.abuse.attempt_limit).unwrap_or(i32::MAX);
        if self.abuse.attempts == CheckMode::Block && state.failures >= limit {
            return Err(Error::TooManyAttempts { retry_after: self.attempt_retry_after() });
        }
        if state.invitation.is_none() {
            self.count_failed_attempt(attempt).await;
        }
        let Some(invitation) = state.invitation else {
            let refusal = Some(Error::CodeNotFound);
            return Ok(CodeCheck { invitation: None, refusal, reserved_uses: 0, bound_to_applicant: false });
        };
        let refusal = match invitation.unavailable_reason(OffsetDateTime::now_utc()) {
            Some(reason) => Some(reason),
            None if !state.inviter_enabled => Some(Error::InviterDisabled),
            None if i64::from(invitation.uses) + state.reserved_uses >= i64::from(invitation.max_uses) => {
                Some(Error::Reserved)
            }
            None => None,
        };
        let reserved_uses = u32::try_from(state.reserved_uses).unwrap_or(u32::MAX);
        let bound_to_applicant = invitation.bound_to_applicant();
        Ok(CodeCheck { invitation: Some(invitation), refusal, reserved_uses, bound_to_applicant })
    }
}

fn list_scope(query: &ListQuery) -> Vec<u8> {
    let mut scope = b"list\0".to_vec();
    match &query.owner {
        Some(user) => {
            scope.push(b'u');
            scope.extend_from_slice(user.as_str().as_bytes());
        }
        None => scope.push(b'-'),
    }
    scope.push(0);
    scope.push(match query.state {
        None => b'*',
        Some(State::Unspent) => b'u',
        Some(State::Redeemed) => b'r',
        Some(State::Revoked) => b'v',
        Some(State::Expired) => b'e',
    });
    scope
}
