//! UpdateInvitation and RestoreInvitation on the wire: the field mask
//! (AIP-134) and validation, and the handlers' bodies (the trait methods in
//! `grpc/mod.rs` call these).

use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use super::auth::recorded_actor;
use super::convert::{View, parse_attributes, parse_ttl};
use super::idempotent::Key;
use super::members::parse_timestamp;
use super::{caller, status::to_status};
use crate::domain::UserId;
use crate::domain::error::{Error, Violations};
use crate::domain::{self, Invitation};
use crate::pb;
use crate::service::{Invitations, MemberMintCommand, RestoreCommand, UpdateCommand};

/// The paths UpdateInvitation takes ("*" is all of them).
pub const UPDATABLE: [&str; 5] = ["expire_time", "max_uses", "label", "note", "attributes"];

fn update_command(r: &pb::UpdateInvitationRequest) -> Result<UpdateCommand, Error> {
    let mut v = Violations::default();
    let id = v.check("invitation_id", domain::parse_uuid(&r.invitation_id));
    let paths: Vec<&str> = match &r.update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
        _ => {
            v.push("update_mask", format!("is required: name the fields to change ({})", UPDATABLE.join(", ")));
            Vec::new()
        }
    };
    let all = paths.contains(&"*");
    for path in &paths {
        if *path != "*" && !UPDATABLE.contains(path) {
            v.push("update_mask", format!("{path:?} is not an updatable field ({})", UPDATABLE.join(", ")));
        }
    }
    let wants = |field: &str| all || paths.contains(&field);
    let update = r.invitation.clone().unwrap_or_default();
    let mut cmd = UpdateCommand { updated_by: String::new(), ..UpdateCommand::default() };
    if wants("expire_time") {
        cmd.expire_time = Some(match &update.expire_time {
            None => None,
            Some(t) => match parse_timestamp(t) {
                Ok(t) if t > OffsetDateTime::now_utc() + domain::MAX_TTL => {
                    v.push("invitation.expire_time", "must be at most 3650 days ahead");
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    v.push("invitation.expire_time", e);
                    None
                }
            },
        });
    }
    if wants("max_uses") {
        if update.max_uses == 0 || update.max_uses > domain::MAX_USES {
            v.push("invitation.max_uses", format!("must be 1 to {}", domain::MAX_USES));
        }
        cmd.max_uses = Some(update.max_uses);
    }
    if wants("label") {
        cmd.label = v.check("invitation.label", domain::parse_text(&update.label, domain::MAX_LABEL_LEN));
    }
    if wants("note") {
        cmd.note = v.check("invitation.note", domain::parse_text(&update.note, domain::MAX_NOTE_LEN));
    }
    if wants("attributes") {
        cmd.attributes = Some(parse_attributes(&mut v, "invitation.", &update.attributes));
    }
    cmd.updated_by = v.check("updated_by", domain::parse_actor(&r.updated_by)).unwrap_or_default();
    v.into_result()?;
    cmd.id = id.unwrap_or_default();
    Ok(cmd)
}

fn restore_command(r: &pb::RestoreInvitationRequest) -> Result<RestoreCommand, Error> {
    let mut v = Violations::default();
    let id = v.check("invitation_id", domain::parse_uuid(&r.invitation_id));
    let reason = v.check("reason", domain::parse_text(&r.reason, domain::MAX_NOTE_LEN));
    let restored_by = v.check("restored_by", domain::parse_actor(&r.restored_by));
    v.into_result()?;
    Ok(RestoreCommand {
        id: id.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
        restored_by: restored_by.unwrap_or_default(),
    })
}

fn member_command(r: &pb::CreateMemberInvitationRequest) -> Result<MemberMintCommand, Error> {
    let mut v = Violations::default();
    let user_id = v.check("user_id", UserId::parse(&r.user_id));
    let ttl = r.ttl.as_ref().and_then(|ttl| v.check("ttl", parse_ttl(ttl)));
    let label = v.check("label", domain::parse_text(&r.label, domain::MAX_LABEL_LEN));
    let attributes = parse_attributes(&mut v, "", &r.attributes);
    v.check("request_id", domain::RequestId::parse_optional(&r.request_id));
    v.into_result()?;
    Ok(MemberMintCommand {
        user_id: user_id.ok_or_else(|| Error::invalid("user_id", "is required"))?,
        max_uses: r.max_uses.max(1),
        ttl,
        label: label.unwrap_or_default(),
        attributes,
    })
}

fn invitation_pb(view: &View, inv: &Invitation) -> pb::Invitation {
    view.invitation(inv, OffsetDateTime::now_utc())
}

fn update_pb(view: &View, inv: &Invitation) -> pb::UpdateInvitationResponse {
    pb::UpdateInvitationResponse { invitation: Some(invitation_pb(view, inv)) }
}

fn restore_pb(view: &View, inv: &Invitation) -> pb::RestoreInvitationResponse {
    pb::RestoreInvitationResponse { invitation: Some(invitation_pb(view, inv)) }
}

fn created_pb(view: &View, inv: &Invitation) -> pb::CreateMemberInvitationResponse {
    pb::CreateMemberInvitationResponse { invitation: Some(invitation_pb(view, inv)) }
}

pub async fn update(
    service: &Invitations,
    view: &View,
    request: Request<pb::UpdateInvitationRequest>,
) -> Result<Response<pb::UpdateInvitationResponse>, Status> {
    let caller = caller(&request);
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let mut command = update_command(&request).map_err(to_status)?;
    command.updated_by = recorded_actor(caller.as_ref(), &command.updated_by);
    key.call(|inv| update_pb(view, inv), async |idem| service.update_invitation(command, idem).await)
        .await
        .map_err(to_status)
}

pub async fn restore(
    service: &Invitations,
    view: &View,
    request: Request<pb::RestoreInvitationRequest>,
) -> Result<Response<pb::RestoreInvitationResponse>, Status> {
    let caller = caller(&request);
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let mut command = restore_command(&request).map_err(to_status)?;
    command.restored_by = recorded_actor(caller.as_ref(), &command.restored_by);
    key.call(|inv| restore_pb(view, inv), async |idem| service.restore_invitation(command, idem).await)
        .await
        .map_err(to_status)
}

pub async fn create_for_member(
    service: &Invitations,
    view: &View,
    request: Request<pb::CreateMemberInvitationRequest>,
) -> Result<Response<pb::CreateMemberInvitationResponse>, Status> {
    let request = request.into_inner();
    let key = Key::of(&request).map_err(to_status)?;
    let command = member_command(&request).map_err(to_status)?;
    key.call(|inv| created_pb(view, inv), async |idem| service.create_member_invitation(command, idem).await)
        .await
        .map_err(to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(paths: &[&str], update: pb::InvitationUpdate) -> pb::UpdateInvitationRequest {
        pb::UpdateInvitationRequest {
            invitation_id: uuid::Uuid::now_v7().to_string(),
            invitation: Some(update),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
            ..Default::default()
        }
    }

    #[test]
    fn the_mask_picks_the_fields() {
        let update = pb::InvitationUpdate { max_uses: 3, label: "x".into(), ..Default::default() };
        let cmd = update_command(&request(&["label"], update.clone())).expect("valid");
        assert_eq!((cmd.label.as_deref(), cmd.max_uses, cmd.expire_time.is_none()), (Some("x"), None, true));
        let cmd = update_command(&request(&["*"], update.clone())).expect("valid");
        assert_eq!(cmd.max_uses, Some(3));
        assert_eq!(cmd.expire_time, Some(None), "unset expire_time under * clears the expiry");
        assert!(update_command(&request(&[], update.clone())).is_err(), "a mask is required");
        assert!(update_command(&request(&["uses"], update.clone())).is_err(), "not updatable");
        assert!(update_command(&request(&["max_uses"], pb::InvitationUpdate::default())).is_err(), "max_uses 0");
    }
}
