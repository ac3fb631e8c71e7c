//! Conversions on the wire (conversions.proto): request validation into
//! the service's command, and conversions into messages. The handler in
//! `grpc/mod.rs` calls the functions here.

use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::auth::recorded_actor;
use super::convert::timestamp;
use super::idempotent::Key;
use super::members::parse_timestamp;
use super::{caller, status::to_status};
use crate::domain::conversion::ConversionKind;
use crate::domain::error::{Error, Violations};
use crate::domain::{self, UserId};
use crate::pb;
use crate::pb::conversion_reward::State as RewardState;
use crate::service::{ConversionCommand, ConversionOutcome, Invitations, VoidCommand, VoidOutcome};
use crate::service::{MAX_REVIEW_REWARDS, ReviewRewardsCommand};
use crate::store::conversions::ConversionRow;

impl TryFrom<&pb::RecordConversionRequest> for ConversionCommand {
    type Error = Error;

    fn try_from(r: &pb::RecordConversionRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let user = v.check("user_id", UserId::parse(&r.user_id));
        let kind = v.check("kind", ConversionKind::parse(&r.kind));
        let latest = OffsetDateTime::now_utc() + domain::MAX_JOIN_TIME_SKEW;
        let occur_time = match &r.occur_time {
            Some(t) => v.check(
                "occur_time",
                parse_timestamp(t).and_then(|t| {
                    if t > latest { Err("must not be in the future (5 minutes of skew allowed)".into()) } else { Ok(t) }
                }),
            ),
            None => None,
        };
        if r.value.is_some_and(|value| value < 0) {
            v.push("value", "must be at least 0");
        }
        v.into_result()?;
        match (user, kind) {
            (Some(user), Some(kind)) => Ok(ConversionCommand { user, kind, occur_time, value: r.value }),
            _ => Err(Error::invalid("user_id", "is required")),
        }
    }
}

pub fn conversion_pb(c: &ConversionRow) -> pb::Conversion {
    let reward_state = match c.reward_state.as_str() {
        "granted" => RewardState::Granted,
        "pending" => RewardState::Pending,
        "voided" => RewardState::Voided,
        "review" => RewardState::Review,
        "denied" => RewardState::Denied,
        _ => RewardState::None,
    };
    let id = |id: Option<uuid::Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::Conversion {
        id: c.id.to_string(),
        user_id: c.user_id.clone(),
        kind: c.kind.clone(),
        occur_time: Some(timestamp(c.occur_time)),
        value: c.value,
        record_time: Some(timestamp(c.record_time)),
        invitation_id: id(c.invitation_id),
        inviter_id: c.inviter_id.clone().unwrap_or_default(),
        batch_id: id(c.batch_id),
        label: c.label.clone().unwrap_or_default(),
        redeem_time: c.redeem_time.map(timestamp),
        reward: Some(pb::ConversionReward {
            state: reward_state as i32,
            inviter_count: c.inviter_reward.max(0) as u32,
            member_count: c.member_reward.max(0) as u32,
            inviter_capped: c.inviter_capped,
            inviter_batch_id: id(c.inviter_batch_id),
            member_batch_id: id(c.member_batch_id),
            hold_until: c.hold_until.map(timestamp),
            void_time: c.void_time.map(timestamp),
            void_reason: c.void_reason.clone().unwrap_or_default(),
            voided_by: c.voided_by.clone().unwrap_or_default(),
            review_time: c.review_time.map(timestamp),
            reviewed_by: c.reviewed_by.clone().unwrap_or_default(),
            review_reason: c.review_reason.clone().unwrap_or_default(),
        }),
        redemption_flags: c.redemption_flags.clone(),
    }
}

fn record_response(o: &ConversionOutcome) -> pb::RecordConversionResponse {
    pb::RecordConversionResponse { conversion: Some(conversion_pb(&o.conversion)), created: o.created }
}

pub async fn record(
    service: &Invitations,
    request: Request<pb::RecordConversionRequest>,
) -> Result<Response<pb::RecordConversionResponse>, Status> {
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let command = ConversionCommand::try_from(&request).map_err(to_status)?;
    key.call(record_response, async |idem| service.record_conversion(command, idem).await).await.map_err(to_status)
}

impl TryFrom<&pb::VoidConversionRequest> for VoidCommand {
    type Error = Error;

    fn try_from(r: &pb::VoidConversionRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let id = v.check("conversion_id", domain::parse_uuid(&r.conversion_id));
        let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
        if r.reason.trim().is_empty() {
            v.push("reason", "is required (a refund, fraud, ...)");
        }
        let voided_by = v.check("voided_by", domain::parse_actor(&r.voided_by));
        v.into_result()?;
        Ok(VoidCommand {
            conversion_id: id.unwrap_or_default(),
            reason: reason.unwrap_or_default(),
            voided_by: voided_by.unwrap_or_default(),
        })
    }
}

fn void_response(o: &VoidOutcome) -> pb::VoidConversionResponse {
    pb::VoidConversionResponse {
        conversion: Some(conversion_pb(&o.conversion)),
        changed: o.changed,
        revoked_count: o.revoked,
        kept_count: o.kept,
    }
}

pub async fn void(
    service: &Invitations,
    request: Request<pb::VoidConversionRequest>,
) -> Result<Response<pb::VoidConversionResponse>, Status> {
    let caller = caller(&request);
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let mut command = VoidCommand::try_from(&request).map_err(to_status)?;
    command.voided_by = recorded_actor(caller.as_ref(), &command.voided_by);
    key.call(void_response, async |idem| service.void_conversion(command, idem).await).await.map_err(to_status)
}

fn review_command(r: pb::ReviewRewardsRequest) -> Result<ReviewRewardsCommand, Error> {
    let mut v = Violations::default();
    if r.conversion_ids.is_empty() {
        v.push("conversion_ids", "name at least one conversion");
    } else if r.conversion_ids.len() > MAX_REVIEW_REWARDS {
        v.push("conversion_ids", format!("at most {MAX_REVIEW_REWARDS} conversions per call"));
    }
    let mut conversions: Vec<uuid::Uuid> = Vec::with_capacity(r.conversion_ids.len());
    for (i, id) in r.conversion_ids.iter().enumerate() {
        if let Some(id) = v.check(&format!("conversion_ids[{i}]"), domain::parse_uuid(id)) {
            if conversions.contains(&id) {
                v.push(format!("conversion_ids[{i}]"), "names a conversion already named in this call");
            } else {
                conversions.push(id);
            }
        }
    }
    let decision = super::waitlist::Decision::parse(&mut v, r.decision, &r.reason, &r.reviewed_by);
    v.into_result()?;
    let super::waitlist::Decision { approve, reason, reviewed_by } = decision;
    Ok(ReviewRewardsCommand { conversions, approve, reason, reviewed_by })
}

pub async fn review(
    service: &Invitations,
    request: Request<pb::ReviewRewardsRequest>,
) -> Result<Response<pb::ReviewRewardsResponse>, Status> {
    let caller = caller(&request);
    let mut command = review_command(request.into_inner()).map_err(to_status)?;
    command.reviewed_by = recorded_actor(caller.as_ref(), &command.reviewed_by);
    let outcome = service.review_rewards(command).await.map_err(to_status)?;
    Ok(Response::new(pb::ReviewRewardsResponse {
        conversions: outcome.conversions.iter().map(conversion_pb).collect(),
        changed_count: outcome.changed,
    }))
}

/// GetStats' conversions section.
pub fn stats_pb(s: &crate::service::ConversionStats) -> pb::ConversionStats {
    let mut out = pb::ConversionStats::default();
    for g in &s.groups {
        let group = pb::ConversionGroup {
            label: g.label.clone().unwrap_or_default(),
            batch_id: g.batch_id.map(|id| id.to_string()).unwrap_or_default(),
            day: g.day.map(timestamp),
            kind: g.kind.clone().unwrap_or_default(),
            redeemed: g.redeemed,
            converted: g.converted,
            conversion_rate: if g.redeemed > 0 { g.converted as f64 / g.redeemed as f64 } else { 0.0 },
            median_time_to_convert: g.median_seconds.map(|secs| {
                let d = time::Duration::seconds_f64(secs.max(0.0));
                prost_types::Duration { seconds: d.whole_seconds(), nanos: d.subsec_nanoseconds() }
            }),
            value: g.value.unwrap_or_default(),
        };
        match (&g.label, g.batch_id, g.day) {
            (Some(_), _, _) => out.by_label.push(group),
            (None, Some(_), _) => out.by_batch.push(group),
            _ => out.by_day.push(group),
        }
    }
    out.top_converters = s
        .top_converters
        .iter()
        .map(|(inviter_id, conversions)| pb::ConverterCount {
            inviter_id: inviter_id.clone(),
            conversions: *conversions,
        })
        .collect();
    let r = &s.rewards;
    out.rewards = Some(pb::RewardCounts {
        recorded: r.recorded,
        unattributed: r.unattributed,
        pending: r.pending,
        review: r.review,
        granted: r.granted,
        voided: r.voided,
        denied: r.denied,
        invitations_granted: r.invitations_granted,
    });
    out
}
