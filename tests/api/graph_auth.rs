//! The graph and member RPCs under caller authentication: reading the graph
//! needs `read`, changing members needs `admin`, and the caller is recorded
//! as who changed privileges or reparented.

use invitations::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, assert_error, bearer, member};

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";

#[tokio::test]
async fn graph_rpcs_need_read_and_member_changes_need_admin() {
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!("ops:admin:{}, dashboard:read:{}", hash(ADMIN), hash(READER));
    let app = TestApp::spawn_with(&["--caller-tokens", &tokens]).await;
    let mut c = app.client.clone();
    let register = pb::RegisterMembersRequest { members: vec![member("ana", None, None), member("bo", None, None)] };
    c.register_members(bearer(register.clone(), ADMIN)).await.expect("admin registers");

    let graph = pb::GetInviteGraphRequest { user_id: "ana".into(), ..Default::default() };
    c.get_invite_graph(bearer(graph, READER)).await.expect("reader reads the graph");
    let mut walk = c.walk_invite_forest(bearer(pb::WalkInviteForestRequest::default(), READER)).await.expect("walk");
    assert!(walk.get_mut().message().await.expect("stream").is_some());

    let reparent = pb::ReparentRequest {
        user_id: "bo".into(),
        new_inviter_id: "ana".into(),
        reparented_by: "lee".into(),
        ..Default::default()
    };
    let privileges = pb::SetInvitePrivilegesRequest { user_id: "ana".into(), ..Default::default() };
    let refusals = [
        c.register_members(bearer(register, READER)).await.map(|_| ()),
        c.reparent(bearer(reparent.clone(), READER)).await.map(|_| ()),
        c.set_invite_privileges(bearer(privileges.clone(), READER)).await.map(|_| ()),
    ];
    for refusal in refusals {
        let err = refusal.expect_err("reader cannot change members");
        assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);
        let scope = err.get_details_error_info().expect("info").metadata.get("scope").cloned();
        assert_eq!(scope.as_deref(), Some("admin"));
    }

    c.reparent(bearer(reparent, ADMIN)).await.expect("admin reparents");
    let changed = c.set_invite_privileges(bearer(privileges, ADMIN)).await.expect("admin disables").into_inner();
    assert_eq!(changed.privileges.expect("privileges").updated_by, "ops");
    let pool = app.pool().await;
    let by: String = sqlx::query_scalar("SELECT reparented_by FROM reparents").fetch_one(&pool).await.expect("record");
    assert_eq!(by, "ops for lee");
    pool.close().await;
}
