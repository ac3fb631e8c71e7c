//! Proto messages to domain commands (validation: every bad field is named)
//! and domain results back to proto messages.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::domain::attributes::Attributes;
use crate::domain::code::{CodeError, InvitationCode, display_form};
use crate::domain::email::{self, Binding, BindingKind, Email};
use crate::domain::error::{Error, Violations};
use crate::domain::{self, Invitation, State, UserId};
use crate::pb;
use crate::service::{
    CheckCommand, CodeCheck, ListPage, ListQuery, MintCommand, MintOutcome, RedeemCommand, RedeemTarget, Redemption,
    RevokeCommand, RevokeOutcome, RevokeTarget, Selector, Wave,
};

/// How codes are shown and parsed, and how links are built.
#[derive(Debug, Clone)]
pub struct View {
    pub code_prefix: String,
    pub link_template: String,
    /// Vanity codes are on (`--vanity-codes`).
    pub vanity_codes: bool,
}

pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

fn state_pb(state: State) -> pb::invitation::State {
    match state {
        State::Unspent => pb::invitation::State::Unspent,
        State::Redeemed => pb::invitation::State::Redeemed,
        State::Revoked => pb::invitation::State::Revoked,
        State::Expired => pb::invitation::State::Expired,
    }
}

impl View {
    pub fn parse_code(&self, field: &'static str, input: &str) -> Result<InvitationCode, Error> {
        if input.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        match InvitationCode::parse(input, &self.code_prefix) {
            Ok(code) => Ok(code),
            // Not a generated code: it may be a vanity code (they never look
            // like generated ones, so a typo still fails the check symbol).
            Err(CodeError::InvalidFormat) if self.vanity_codes => {
                InvitationCode::parse_vanity(input).map_err(|_| Error::InvalidCodeFormat { field })
            }
            Err(CodeError::InvalidFormat) => Err(Error::InvalidCodeFormat { field }),
            Err(CodeError::ChecksumMismatch) => Err(Error::CodeChecksumMismatch { field }),
        }
    }

    pub fn invitation(&self, inv: &Invitation, now: OffsetDateTime) -> pb::Invitation {
        let code = display_form(&inv.code, &self.code_prefix);
        pb::Invitation {
            id: inv.id.to_string(),
            link: self.link_template.replace("{code}", &code),
            code,
            inviter_id: inv.inviter_id.clone().unwrap_or_default(),
            invitee_id: inv.last_invitee_id.clone().unwrap_or_default(),
            state: state_pb(inv.state(now)) as i32,
            create_time: Some(timestamp(inv.create_time)),
            expire_time: inv.expire_time.map(timestamp),
            redeem_time: inv.last_redeem_time.map(timestamp),
            batch_id: inv.batch_id.to_string(),
            label: inv.label.clone(),
            note: inv.note.clone(),
            uses: inv.uses as u32,
            max_uses: inv.max_uses as u32,
            revoke_time: inv.revoke_time.map(timestamp),
            revoke_reason: inv.revoke_reason.clone().unwrap_or_default(),
            revoked_by: inv.revoked_by.clone().unwrap_or_default(),
            minted_by: inv.minted_by.clone(),
            binding: binding_pb(inv.binding) as i32,
            abuse_flags: inv.abuse_flags.clone(),
            attributes: inv.attributes.to_map(),
            // Set by ListForUser only (list_response).
            converted_kinds: Vec::new(),
        }
    }

    pub fn mint_response(&self, outcome: &MintOutcome) -> pb::MintResponse {
        let now = OffsetDateTime::now_utc();
        pb::MintResponse {
            invitations: outcome.invitations.iter().map(|i| self.invitation(i, now)).collect(),
            batch_id: outcome.batch_id.map(|b| b.to_string()).unwrap_or_default(),
            minted_count: outcome.count,
            dry_run: outcome.dry_run,
            matched_count: outcome.matched,
            recipient_ids: outcome.recipients.clone(),
            invitations_truncated: outcome.truncated,
        }
    }

    pub fn list_response(&self, page: ListPage) -> pb::ListForUserResponse {
        let now = OffsetDateTime::now_utc();
        pb::ListForUserResponse {
            invitations: page
                .invitations
                .iter()
                .zip(page.converted.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(i, kinds)| pb::Invitation {
                    converted_kinds: kinds.cloned().unwrap_or_default(),
                    ..self.invitation(i, now)
                })
                .collect(),
            next_page_token: page.next_page_token,
            inviter_id: page.inviter_id.unwrap_or_default(),
            next_grant_time: page.next_grant_time.map(timestamp),
        }
    }

    /// The invitation as this invitee redeemed it (for multi-use invitations
    /// the last redeemer may since be someone else).
    pub fn redeem_response(&self, r: &Redemption) -> pb::RedeemResponse {
        let mut invitation = self.invitation(&r.invitation, OffsetDateTime::now_utc());
        invitation.invitee_id = r.invitee_id.clone();
        invitation.redeem_time = Some(timestamp(r.redeem_time));
        invitation.abuse_flags = r.flags.clone();
        pb::RedeemResponse { invitation: Some(invitation) }
    }

    pub fn revoke_response(&self, outcome: &RevokeOutcome) -> pb::RevokeResponse {
        let now = OffsetDateTime::now_utc();
        pb::RevokeResponse {
            invitations: outcome.invitations.iter().map(|i| self.invitation(i, now)).collect(),
            revoked_count: outcome.revoked_count,
        }
    }
}

pub fn binding_pb(binding: Option<BindingKind>) -> pb::Binding {
    match binding {
        None => pb::Binding::Unbound,
        Some(BindingKind::Email) => pb::Binding::Email,
        Some(BindingKind::Domain) => pb::Binding::Domain,
        Some(BindingKind::Applicant) => pb::Binding::Applicant,
    }
}

/// At most one of `bound_email` and `bound_domain` (a leading `@` is allowed).
fn parse_binding(v: &mut Violations, bound_email: &str, bound_domain: &str) -> Option<Binding> {
    match (bound_email.is_empty(), bound_domain.is_empty()) {
        (true, true) => None,
        (false, true) => v.check("bound_email", Email::parse(bound_email)).map(|e| Binding::email(&e)),
        (true, false) => {
            let domain = bound_domain.trim().trim_start_matches('@');
            v.check("bound_domain", email::parse_domain(domain)).map(Binding::domain)
        }
        (false, false) => {
            v.push("bound_domain", "set bound_email or bound_domain, not both");
            None
        }
    }
}

/// A request's attributes; each broken limit is a violation naming its key
/// (`attributes.<key>`, under `prefix`).
pub(crate) fn parse_attributes(v: &mut Violations, prefix: &str, map: &BTreeMap<String, String>) -> Attributes {
    match Attributes::parse(map) {
        Ok(attributes) => attributes,
        Err(errors) => {
            for e in errors {
                v.push(format!("{prefix}{}", e.field), e.description);
            }
            Attributes::default()
        }
    }
}

/// A positive duration with its nanos in range.
pub(crate) fn parse_positive_duration(d: &prost_types::Duration) -> Result<time::Duration, String> {
    if !(0..1_000_000_000).contains(&d.nanos) {
        return Err("nanos must be between 0 and 999,999,999".into());
    }
    let d = time::Duration::new(d.seconds, d.nanos);
    if d <= time::Duration::ZERO {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// An invitation's `ttl`: positive, at most `MAX_TTL` (longer is refused: an
/// expiry ten years out is a unit mistake, not a wish).
pub(crate) fn parse_ttl(ttl: &prost_types::Duration) -> Result<time::Duration, String> {
    let d = parse_positive_duration(ttl)?;
    if d > domain::MAX_TTL {
        return Err("must be at most 3650 days".into());
    }
    Ok(d)
}

fn parse_state(value: i32) -> Result<Option<State>, String> {
    match pb::invitation::State::try_from(value) {
        Ok(pb::invitation::State::Unspecified) => Ok(None),
        Ok(pb::invitation::State::Unspent) => Ok(Some(State::Unspent)),
        Ok(pb::invitation::State::Redeemed) => Ok(Some(State::Redeemed)),
        Ok(pb::invitation::State::Revoked) => Ok(Some(State::Revoked)),
        Ok(pb::invitation::State::Expired) => Ok(Some(State::Expired)),
        Err(_) => Err(format!("{value} is not a known state")),
    }
}

impl TryFrom<pb::MintRequest> for MintCommand {
    type Error = Error;

    fn try_from(r: pb::MintRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let wave = match &r.selector {
            Some(selector) => parse_wave(&mut v, &r, selector),
            None => {
                if r.count != 0 {
                    v.push("count", "is only for a wave (set selector, or use user_ids/unowned_count)");
                }
                None
            }
        };
        let mut owners = Vec::with_capacity(r.user_ids.len().min(domain::MAX_MINT_PER_CALL as usize));
        if r.user_ids.len() > domain::MAX_MINT_PER_CALL as usize {
            v.push("user_ids", format!("at most {} users per call", domain::MAX_MINT_PER_CALL));
        } else {
            for (i, id) in r.user_ids.iter().enumerate() {
                if let Some(u) = v.check(&format!("user_ids[{i}]"), UserId::parse(id)) {
                    owners.push(u);
                }
            }
            owners.sort();
            if owners.windows(2).any(|w| w[0] == w[1]) {
                v.push("user_ids", "must not repeat a user (use per_user for several each)");
            }
        }
        let per_user = if r.per_user == 0 { 1 } else { r.per_user };
        let max_uses = if r.max_uses == 0 { 1 } else { r.max_uses };
        if max_uses > domain::MAX_USES {
            v.push("max_uses", format!("must be at most {}", domain::MAX_USES));
        }
        let total = (r.user_ids.len() as u64) * u64::from(per_user) + u64::from(r.unowned_count);
        if wave.is_some() || r.selector.is_some() {
            // A wave's own checks are in parse_wave.
        } else if total == 0 {
            v.push("user_ids", "name at least one user, or set unowned_count");
        } else if total > u64::from(domain::MAX_MINT_PER_CALL) {
            let field = if r.unowned_count > domain::MAX_MINT_PER_CALL { "unowned_count" } else { "per_user" };
            v.push(field, format!("at most {} invitations per call in all", domain::MAX_MINT_PER_CALL));
        }
        let ttl = match &r.ttl {
            Some(ttl) => v.check("ttl", parse_ttl(ttl)),
            None => None,
        };
        let label = v.check("label", domain::parse_text(&r.label, domain::MAX_LABEL_LEN));
        let note = v.check("note", domain::parse_text(&r.note, domain::MAX_NOTE_LEN));
        let minted_by = v.check("minted_by", domain::parse_actor(&r.minted_by));
        v.check("request_id", domain::RequestId::parse_optional(&r.request_id));
        let binding = parse_binding(&mut v, &r.bound_email, &r.bound_domain);
        let attributes = parse_attributes(&mut v, "", &r.attributes);
        let custom_code = if r.custom_code.is_empty() {
            None
        } else {
            check_custom_code(&mut v, &r, total);
            v.check("custom_code", InvitationCode::parse_vanity(&r.custom_code))
        };
        v.into_result()?;
        Ok(MintCommand {
            owners,
            per_user,
            unowned: r.unowned_count,
            ttl,
            max_uses,
            label: label.unwrap_or_default(),
            note: note.unwrap_or_default(),
            minted_by: minted_by.unwrap_or_default(),
            dry_run: r.dry_run,
            binding,
            wave,
            attributes,
            custom_code,
        })
    }
}

/// A vanity code names one invitation that must end: exactly one (one user
/// or one unowned, not a wave), with max_uses and ttl set.
fn check_custom_code(v: &mut Violations, r: &pb::MintRequest, total: u64) {
    if r.selector.is_some() || total != 1 {
        v.push("custom_code", "names one invitation: one user_id (per_user 1) or unowned_count 1, not a wave");
    }
    if r.max_uses == 0 {
        v.push("max_uses", "is required with custom_code");
    }
    if r.ttl.is_none() {
        v.push("ttl", "is required with custom_code");
    }
}

/// A wave: a selector with one criterion and a count, and neither named
/// users nor unowned invitations.
fn parse_wave(v: &mut Violations, r: &pb::MintRequest, selector: &pb::Selector) -> Option<Wave> {
    use pb::selector::Criterion;
    if !r.user_ids.is_empty() {
        v.push("user_ids", "must be empty with a selector (a wave chooses its members)");
    }
    if r.unowned_count != 0 {
        v.push("unowned_count", "must be 0 with a selector (a wave mints for members)");
    }
    if r.per_user > 1 {
        v.push("per_user", "must be 0 or 1 with a selector (a wave gives one invitation per member)");
    }
    if !r.bound_email.is_empty() {
        v.push("bound_email", "cannot be used with a selector (every member's invitation would need that one address)");
    }
    if r.count == 0 {
        v.push("count", "is required with a selector (how many invitations the wave mints)");
    } else if r.count > domain::MAX_WAVE {
        v.push("count", format!("must be at most {}", domain::MAX_WAVE));
    }
    let selector = match &selector.criterion {
        None => {
            v.push("selector", "set one criterion: no_unspent_invitation, never_issued or last_redeemed");
            None
        }
        Some(Criterion::NoUnspentInvitation(_)) => Some(Selector::NoUnspentInvitation),
        Some(Criterion::NeverIssued(c)) => v
            .check("selector.never_issued.joined_at_least", parse_age(c.joined_at_least.as_ref()))
            .map(|joined_at_least| Selector::NeverIssued { joined_at_least }),
        Some(Criterion::LastRedeemed(c)) => v
            .check("selector.last_redeemed.at_least", parse_age(c.at_least.as_ref()))
            .map(|at_least| Selector::LastRedeemed { at_least }),
    };
    Some(Wave { selector: selector?, count: r.count })
}

/// A selector's age: zero or more (unset is zero), at most `MAX_TTL`.
fn parse_age(age: Option<&prost_types::Duration>) -> Result<time::Duration, String> {
    let Some(age) = age else { return Ok(time::Duration::ZERO) };
    if !(0..1_000_000_000).contains(&age.nanos) {
        return Err("nanos must be between 0 and 999,999,999".into());
    }
    let d = time::Duration::new(age.seconds, age.nanos);
    if d < time::Duration::ZERO {
        return Err("must not be negative".into());
    }
    if d > domain::MAX_TTL {
        return Err("must be at most 3650 days".into());
    }
    Ok(d)
}

impl TryFrom<pb::ListForUserRequest> for ListQuery {
    type Error = Error;

    fn try_from(r: pb::ListForUserRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let owner = if r.unowned {
            if !r.user_id.is_empty() {
                v.push("user_id", "must be empty when unowned is set");
            }
            None
        } else {
            v.check("user_id", UserId::parse(&r.user_id))
        };
        let state = v.check("state", parse_state(r.state)).flatten();
        let page_size = v.check("page_size", domain::parse_page_size(r.page_size));
        v.into_result()?;
        Ok(ListQuery { owner, state, page_size: page_size.unwrap_or_default(), page_token: r.page_token })
    }
}

impl View {
    pub fn check_command(&self, r: &pb::CheckCodeRequest) -> Result<CheckCommand, Error> {
        let client_ip = domain::parse_client_ip(&r.client_ip).map_err(|d| Error::invalid("client_ip", d))?;
        if r.code.is_empty() {
            return Err(Error::invalid("code", "is required"));
        }
        Ok(CheckCommand { code: self.parse_code("code", &r.code), client_ip })
    }

    /// The answer for a code that parsed and was looked up.
    pub fn check_response(&self, code: &InvitationCode, check: CodeCheck) -> pb::CheckCodeResponse {
        let CodeCheck { invitation, refusal, reserved_uses, bound_to_applicant } = check;
        let mut response = pb::CheckCodeResponse {
            redeemable: refusal.is_none(),
            reserved: matches!(refusal, Some(Error::Reserved)),
            reserved_uses,
            bound_to_applicant,
            reason: refusal.map(|e| e.reason().to_owned()).unwrap_or_default(),
            normalized_code: code.display(&self.code_prefix),
            ..Default::default()
        };
        if let Some(inv) = invitation {
            response.inviter_id = inv.inviter_id.clone().unwrap_or_default();
            response.expire_time = inv.expire_time.map(timestamp);
            response.remaining_uses = (inv.max_uses - inv.uses).max(0) as u32;
            response.binding = binding_pb(inv.binding) as i32;
            response.attributes = inv.attributes.to_map();
        }
        response
    }

    pub fn redeem_command(&self, r: &pb::RedeemRequest) -> Result<RedeemCommand, Error> {
        let mut v = Violations::default();
        let invitee = v.check("invitee_id", UserId::parse(&r.invitee_id));
        v.check("request_id", domain::RequestId::parse_optional(&r.request_id));
        let client_ip = v.check("client_ip", domain::parse_client_ip(&r.client_ip)).flatten();
        let email = v.check("email", domain::parse_email(&r.email)).flatten();
        let reservation = match (r.code.is_empty(), r.reservation_id.is_empty()) {
            (true, true) => {
                v.push("code", "is required (or set reservation_id)");
                None
            }
            (false, false) => {
                v.push("reservation_id", "set code or reservation_id, not both");
                None
            }
            (true, false) => v.check("reservation_id", domain::parse_uuid(&r.reservation_id)),
            (false, true) => None,
        };
        v.into_result()?;
        let target = match reservation {
            Some(id) => RedeemTarget::Reservation(id),
            None => RedeemTarget::Code(self.parse_code("code", &r.code)?),
        };
        match invitee {
            Some(invitee) => Ok(RedeemCommand { target, invitee, email, client_ip, over_attempt_limit: false }),
            None => Err(Error::invalid("invitee_id", "is required")),
        }
    }
}

impl TryFrom<pb::RevokeRequest> for RevokeCommand {
    type Error = Error;

    fn try_from(r: pb::RevokeRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let target = match (r.invitation_ids.is_empty(), r.user_id.is_empty()) {
            (false, true) if r.invitation_ids.len() > domain::MAX_REVOKE_IDS => {
                v.push("invitation_ids", format!("at most {} ids per call", domain::MAX_REVOKE_IDS));
                None
            }
            (false, true) => {
                let mut ids = Vec::with_capacity(r.invitation_ids.len());
                for (i, id) in r.invitation_ids.iter().enumerate() {
                    if let Some(id) = v.check(&format!("invitation_ids[{i}]"), domain::parse_uuid(id)) {
                        ids.push(id);
                    }
                }
                ids.sort();
                ids.dedup();
                Some(RevokeTarget::Ids(ids))
            }
            (true, false) => v.check("user_id", UserId::parse(&r.user_id)).map(RevokeTarget::UnspentOf),
            (false, false) => {
                v.push("user_id", "set either invitation_ids or user_id, not both");
                None
            }
            (true, true) => {
                v.push("invitation_ids", "set invitation_ids or user_id");
                None
            }
        };
        let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
        let revoked_by = v.check("revoked_by", domain::parse_actor(&r.revoked_by));
        v.check("request_id", domain::RequestId::parse_optional(&r.request_id));
        v.into_result()?;
        match target {
            Some(target) => Ok(RevokeCommand {
                target,
                reason: reason.unwrap_or_default(),
                revoked_by: revoked_by.unwrap_or_default(),
            }),
            None => Err(Error::invalid("invitation_ids", "set invitation_ids or user_id")),
        }
    }
}
