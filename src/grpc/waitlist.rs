//! The waitlist on the wire (waitlist.proto): request validation into the
//! service's commands, and entries into messages. The handlers in
//! `grpc/mod.rs` call the functions here.

use std::collections::HashSet;

use tonic::{Request, Response, Status};

use super::auth::recorded_actor;
use super::convert::{View, parse_ttl, timestamp};
use super::{attempt, caller, status::to_status};
use crate::domain::code::display_form;
use crate::domain::error::{Error, Violations};
use crate::domain::{self, UserId};
use crate::pb;
use crate::service::waitlist::{MAX_ADMIT, MAX_REVIEW};
use crate::service::{AdmitCommand, AdmitOutcome, Entry, EntryState, Invitations, JoinCommand, Order};
use crate::service::{ReviewCommand, ReviewOutcome};
use crate::store::waitlist::EntryKey;

fn join_command(r: &pb::JoinWaitlistRequest) -> Result<JoinCommand, Error> {
    let mut v = Violations::default();
    let applicant = v.check("applicant_id", UserId::parse(&r.applicant_id));
    let referrer = if r.referrer.is_empty() {
        None
    } else {
        v.check("referrer", UserId::parse(&r.referrer)).map(UserId::into_string)
    };
    let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
    v.check("client_ip", domain::parse_client_ip(&r.client_ip));
    let email = v.check("email", domain::parse_email(&r.email));
    v.into_result()?;
    let applicant = applicant.ok_or_else(|| Error::invalid("applicant_id", "is required"))?;
    Ok(JoinCommand {
        attempt: attempt(&r.client_ip, None),
        applicant,
        referrer,
        reason: reason.unwrap_or_default(),
        email: email.flatten(),
    })
}

fn entry_key(r: &pb::GetWaitlistEntryRequest) -> Result<EntryKey<'_>, Error> {
    match (r.entry_id.is_empty(), r.applicant_id.is_empty()) {
        (false, true) => domain::parse_uuid(&r.entry_id).map(EntryKey::Id).map_err(|d| Error::invalid("entry_id", d)),
        (true, false) => UserId::parse(&r.applicant_id)
            .map(|_| EntryKey::Applicant(&r.applicant_id))
            .map_err(|d| Error::invalid("applicant_id", d)),
        (true, true) => Err(Error::invalid("entry_id", "name the entry by entry_id or applicant_id")),
        (false, false) => Err(Error::invalid("applicant_id", "give entry_id or applicant_id, not both")),
    }
}

fn review_command(r: pb::ReviewWaitlistEntriesRequest) -> Result<ReviewCommand, Error> {
    let mut v = Violations::default();
    if r.entry_ids.is_empty() {
        v.push("entry_ids", "name at least one entry");
    } else if r.entry_ids.len() > MAX_REVIEW {
        v.push("entry_ids", format!("at most {MAX_REVIEW} entries per call"));
    }
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(r.entry_ids.len());
    for (i, id) in r.entry_ids.iter().enumerate() {
        if let Some(id) = v.check(&format!("entry_ids[{i}]"), domain::parse_uuid(id)) {
            if seen.insert(id) {
                entries.push(id);
            } else {
                v.push(format!("entry_ids[{i}]"), "names an entry already named in this call");
            }
        }
    }
    let decision = Decision::parse(&mut v, r.decision, &r.reason, &r.reviewed_by);
    v.into_result()?;
    let Decision { approve, reason, reviewed_by } = decision;
    Ok(ReviewCommand { entries, approve, reason, reviewed_by })
}

fn admit_command(r: pb::AdmitFromWaitlistRequest) -> Result<AdmitCommand, Error> {
    let mut v = Violations::default();
    if r.count == 0 || r.count > MAX_ADMIT {
        v.push("count", format!("must be between 1 and {MAX_ADMIT}"));
    }
    let order = match pb::AdmissionOrder::try_from(r.order) {
        Ok(pb::AdmissionOrder::Unspecified | pb::AdmissionOrder::Position) => Some(Order::Position),
        Ok(pb::AdmissionOrder::Oldest) => Some(Order::Oldest),
        Ok(pb::AdmissionOrder::Random) => Some(Order::Random),
        Err(_) => {
            v.push("order", "is not an AdmissionOrder");
            None
        }
    };
    let ttl = match &r.ttl {
        Some(ttl) => v.check("ttl", parse_ttl(ttl)),
        None => None,
    };
    let label = v.check("label", domain::parse_text(&r.label, domain::MAX_LABEL_LEN));
    let note = v.check("note", domain::parse_text(&r.note, domain::MAX_NOTE_LEN));
    let admitted_by = v.check("admitted_by", domain::parse_actor(&r.admitted_by));
    v.into_result()?;
    Ok(AdmitCommand {
        count: r.count,
        order: order.unwrap_or(Order::Position),
        ttl,
        label: label.unwrap_or_default(),
        note: note.unwrap_or_default(),
        admitted_by: admitted_by.unwrap_or_default(),
        dry_run: r.dry_run,
    })
}

fn state_pb(state: EntryState) -> pb::waitlist_entry::State {
    match state {
        EntryState::Waiting => pb::waitlist_entry::State::Waiting,
        EntryState::Approved => pb::waitlist_entry::State::Approved,
        EntryState::Rejected => pb::waitlist_entry::State::Rejected,
        EntryState::Admitted => pb::waitlist_entry::State::Admitted,
    }
}

pub fn entry_pb(view: &View, e: &Entry) -> pb::WaitlistEntry {
    let r = &e.row;
    let invitation = r.invitation_id.map(|id| {
        let code = if e.code.is_empty() { String::new() } else { display_form(&e.code, &view.code_prefix) };
        pb::AdmittedInvitation {
            id: id.to_string(),
            link: if code.is_empty() { String::new() } else { view.link_template.replace("{code}", &code) },
            code,
            inviter_id: r.inviter_id.clone().unwrap_or_default(),
            expire_time: r.expire_time.map(timestamp),
            redeem_time: r.redeem_time.map(timestamp),
        }
    });
    pb::WaitlistEntry {
        id: r.id.to_string(),
        applicant_id: r.applicant_id.clone(),
        referral_handle: r.referral_handle.clone(),
        state: state_pb(e.state) as i32,
        position: r.position.unwrap_or(0).max(0) as u64,
        referrals: r.referrals.max(0) as u32,
        redeemed_referrals: r.redeemed_referrals.max(0) as u32,
        bump: r.bump.max(0) as u64,
        reason: r.reason.clone(),
        join_time: Some(timestamp(r.join_time)),
        abuse_flags: r.abuse_flags.clone(),
        review_time: r.review_time.map(timestamp),
        reviewed_by: r.reviewed_by.clone().unwrap_or_default(),
        review_reason: r.review_reason.clone().unwrap_or_default(),
        reapply_time: e.reapply_time.map(timestamp),
        admit_time: r.admit_time.map(timestamp),
        invitation,
    }
}

fn review_response(view: &View, o: &ReviewOutcome) -> pb::ReviewWaitlistEntriesResponse {
    pb::ReviewWaitlistEntriesResponse {
        entries: o.entries.iter().map(|e| entry_pb(view, e)).collect(),
        changed_count: o.changed,
    }
}

fn admit_response(view: &View, o: &AdmitOutcome) -> pb::AdmitFromWaitlistResponse {
    pb::AdmitFromWaitlistResponse {
        entries: o.entries.iter().map(|e| entry_pb(view, e)).collect(),
        admitted_count: if o.dry_run { 0 } else { o.entries.len() as u32 },
        exhausted: o.exhausted,
        batch_id: o.batch_id.map(|id| id.to_string()).unwrap_or_default(),
        dry_run: o.dry_run,
    }
}

pub async fn join(
    service: &Invitations,
    view: &View,
    request: Request<pb::JoinWaitlistRequest>,
) -> Result<Response<pb::JoinWaitlistResponse>, Status> {
    let command = join_command(request.get_ref()).map_err(to_status)?;
    let outcome = service.join_waitlist(command).await.map_err(to_status)?;
    Ok(Response::new(pb::JoinWaitlistResponse {
        entry: Some(entry_pb(view, &outcome.entry)),
        created: outcome.created,
    }))
}

pub async fn get(
    service: &Invitations,
    view: &View,
    request: Request<pb::GetWaitlistEntryRequest>,
) -> Result<Response<pb::GetWaitlistEntryResponse>, Status> {
    let read = super::read_from(&request)?;
    let key = entry_key(request.get_ref()).map_err(to_status)?;
    let entry = service.waitlist_entry(key, read).await.map_err(to_status)?;
    Ok(Response::new(pb::GetWaitlistEntryResponse { entry: Some(entry_pb(view, &entry)) }))
}

pub async fn review(
    service: &Invitations,
    view: &View,
    request: Request<pb::ReviewWaitlistEntriesRequest>,
) -> Result<Response<pb::ReviewWaitlistEntriesResponse>, Status> {
    let caller = caller(&request);
    let mut command = review_command(request.into_inner()).map_err(to_status)?;
    command.reviewed_by = recorded_actor(caller.as_ref(), &command.reviewed_by);
    let outcome = service.review_waitlist(command).await.map_err(to_status)?;
    Ok(Response::new(review_response(view, &outcome)))
}

pub async fn admit(
    service: &Invitations,
    view: &View,
    request: Request<pb::AdmitFromWaitlistRequest>,
) -> Result<Response<pb::AdmitFromWaitlistResponse>, Status> {
    let caller = caller(&request);
    let mut command = admit_command(request.into_inner()).map_err(to_status)?;
    command.admitted_by = recorded_actor(caller.as_ref(), &command.admitted_by);
    let outcome = service.admit_from_waitlist(command).await.map_err(to_status)?;
    Ok(Response::new(admit_response(view, &outcome)))
}

/// GetStats' waitlist section.
pub fn stats_pb(w: &crate::service::WaitlistStats) -> pb::WaitlistStats {
    let c = &w.counts;
    let share = |part: i64, whole: i64| if whole > 0 { part as f64 / whole as f64 } else { 0.0 };
    pb::WaitlistStats {
        waiting: c.waiting,
        joined: c.joined,
        admitted: c.admitted,
        by_day: w
            .by_day
            .iter()
            .map(|&(day, joined, admitted)| pb::DailyWaitlist { day: Some(timestamp(day)), joined, admitted })
            .collect(),
        reviewed: c.reviewed,
        approval_rate: share(c.approved, c.reviewed),
        median_wait: c.median_wait_seconds.map(|s| {
            let d = time::Duration::seconds_f64(s);
            prost_types::Duration { seconds: d.whole_seconds(), nanos: d.subsec_nanoseconds() }
        }),
        admitted_redeemed: c.admitted_redeemed,
        admitted_redeemed_rate: share(c.admitted_redeemed, c.admitted),
        top_referrers: w
            .top_referrers
            .iter()
            .map(|(referrer, referrals)| pb::ReferrerCount { referrer: referrer.clone(), referrals: *referrals })
            .collect(),
    }
}

/// A review's decision, reason and reviewer (ReviewWaitlistEntries and
/// ReviewRewards), each problem a violation naming its field. The values are
/// meaningful only once the violations are empty.
pub(super) struct Decision {
    pub approve: bool,
    pub reason: String,
    pub reviewed_by: String,
}

impl Decision {
    pub(super) fn parse(v: &mut Violations, decision: i32, reason: &str, reviewed_by: &str) -> Self {
        let approve = match pb::ReviewDecision::try_from(decision) {
            Ok(pb::ReviewDecision::Approve) => true,
            Ok(pb::ReviewDecision::Reject) => false,
            _ => {
                v.push("decision", "must be REVIEW_DECISION_APPROVE or REVIEW_DECISION_REJECT");
                false
            }
        };
        let reason = v.check("reason", domain::parse_text(reason, domain::MAX_NOTE_LEN)).unwrap_or_default();
        let reviewed_by = v.check("reviewed_by", domain::parse_actor(reviewed_by)).unwrap_or_default();
        Self { approve, reason, reviewed_by }
    }
}
