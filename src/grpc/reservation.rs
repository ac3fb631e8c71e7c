//! Reserve and Release on the wire: request validation and the Reservation
//! message. The handlers themselves sit with the others in `grpc/mod.rs`.

use time::OffsetDateTime;
use uuid::Uuid;

use super::convert::{View, parse_positive_duration, timestamp};
use crate::domain::error::{Error, Violations};
use crate::domain::{self, ReservationStatus};
use crate::pb;
use crate::service::{ReserveCommand, Reserved};

fn state_pb(status: ReservationStatus) -> pb::reservation::State {
    match status {
        ReservationStatus::Held => pb::reservation::State::Held,
        ReservationStatus::Completed => pb::reservation::State::Completed,
        ReservationStatus::Released => pb::reservation::State::Released,
        ReservationStatus::Lapsed => pb::reservation::State::Lapsed,
    }
}

impl View {
    pub fn reserve_command(&self, r: &pb::ReserveRequest) -> Result<ReserveCommand, Error> {
        let mut v = Violations::default();
        v.check("request_id", domain::RequestId::parse_optional(&r.request_id));
        let client_ip = v.check("client_ip", domain::parse_client_ip(&r.client_ip)).flatten();
        let email = v.check("email", domain::parse_email(&r.email)).flatten();
        let invitee = match r.invitee_id.as_str() {
            "" => None,
            id => v.check("invitee_id", domain::UserId::parse(id)),
        };
        let ttl = match &r.ttl {
            // Zero, negative or malformed is an error; any positive length
            // is taken and the service clamps it to --reservation-max-ttl
            // (the answer's expire_time tells the real lease). No 3650-day
            // ceiling as for an invitation's ttl: the server caps it anyway.
            Some(ttl) => v.check("ttl", parse_positive_duration(ttl)),
            None => None,
        };
        if r.code.is_empty() {
            v.push("code", "is required");
        }
        v.into_result()?;
        let code = self.parse_code("code", &r.code)?;
        Ok(ReserveCommand { code, ttl, email, invitee, client_ip })
    }
}

pub fn release_id(r: &pb::ReleaseRequest) -> Result<Uuid, Error> {
    domain::parse_uuid(&r.reservation_id).map_err(|d| Error::invalid("reservation_id", d))
}

pub fn reservation_pb(r: &Reserved) -> pb::Reservation {
    let now = OffsetDateTime::now_utc();
    let res = &r.reservation;
    pb::Reservation {
        id: res.id.to_string(),
        invitation_id: res.invitation_id.to_string(),
        inviter_id: r.inviter_id.clone().unwrap_or_default(),
        state: state_pb(res.status_at(now)) as i32,
        create_time: Some(timestamp(res.create_time)),
        expire_time: Some(timestamp(res.expire_time)),
        end_time: res.end_time_at(now).map(timestamp),
        invitee_id: res.invitee_id.clone().unwrap_or_default(),
    }
}

pub fn reserve_response(r: &Reserved) -> pb::ReserveResponse {
    pb::ReserveResponse { reservation: Some(reservation_pb(r)) }
}

pub fn release_response(r: &Reserved) -> pb::ReleaseResponse {
    pb::ReleaseResponse { reservation: Some(reservation_pb(r)) }
}
