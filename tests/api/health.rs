use prost::Message as _;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{DbProxy, Options, TestApp, connect};

#[tokio::test]
async fn health_follows_the_database() {
    let proxy = DbProxy::start().await;
    // The server reaches its database only through the proxy.
    let placeholder = crate::helpers::TestDb::create().await;
    let url =
        crate::helpers::with_database(&format!("postgres://postgres@127.0.0.1:{}/x", proxy.port), &placeholder.name);
    let extra_args = vec!["--db-acquire-timeout".to_string(), "300ms".to_string()];
    let app = TestApp::spawn_opts(Options { extra_args, database_url: Some(url) }).await;
    assert_eq!(app.health_status(invitations::app::SERVICE_NAME).await.expect("health"), ServingStatus::Serving);
    app.mint_one("alice").await;
    proxy.cut();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(app.health_status(invitations::app::SERVICE_NAME).await.expect("health"), ServingStatus::NotServing);
    // Calls fail as retryable UNAVAILABLE, not INTERNAL, while the database is away.
    let err =
        app.mint(invitations::pb::MintRequest { unowned_count: 1, ..Default::default() }).await.expect_err("no db");
    crate::helpers::assert_error(&err, tonic::Code::Unavailable, "UNAVAILABLE", None);
}

#[tokio::test]
async fn shutdown_reports_not_serving_then_exits_cleanly() {
    let mut app = TestApp::spawn_with(&["--shutdown-delay", "3s"]).await;
    app.begin_shutdown();
    app.wait_for_health(ServingStatus::NotServing).await;
    app.stop().await.expect("clean exit");
}

#[tokio::test]
async fn reflection_lists_the_service() {
    let app = TestApp::spawn().await;
    let mut client = ServerReflectionClient::new(connect(app.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream =
        client.server_reflection_info(futures::stream::iter([request])).await.expect("reflection").into_inner();
    let response = stream.message().await.expect("message").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"invitations.v1.InvitationService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
}

#[tokio::test]
async fn reflection_serves_the_event_schema() {
    let app = TestApp::spawn().await;
    let mut client = ServerReflectionClient::new(connect(app.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("invitations.v1.InvitationEvent".into())),
    };
    let mut stream =
        client.server_reflection_info(futures::stream::iter([request])).await.expect("reflection").into_inner();
    let response = stream.message().await.expect("message").expect("one response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("the event schema is not served: {response:?}");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).expect("decodes");
    assert_eq!(file.name(), "invitations/v1/events.proto");
    let messages: Vec<&str> = file.message_type.iter().map(|m| m.name()).collect();
    assert!(messages.contains(&"InvitationEvent") && messages.contains(&"Minted"), "{messages:?}");
}

/// The database ends every connection of the service (a failover, a restart,
/// an operator's pg_terminate_backend). A pooled connection used moments ago
/// is not pinged again before use, so a call may meet a dead one: it fails
/// as retryable UNAVAILABLE, never INTERNAL, and the connection is replaced:
/// within one retry per pooled connection, calls succeed again.
#[tokio::test]
async fn connections_the_database_ended_fail_as_unavailable_and_are_replaced() {
    let app = TestApp::spawn().await;
    app.mint_for("alice", 3).await;
    let db = app.pool().await;
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'invitations'",
    )
    .fetch_all(&db)
    .await
    .expect("terminate the service's connections");
    assert!(!ended.is_empty() && ended.iter().all(|e| *e), "the service had connections, now ended: {ended:?}");

    let request =
        || invitations::pb::ListForUserRequest { user_id: "alice".into(), page_size: 10, ..Default::default() };
    let max_connections = 8; // --db-max-connections' default
    let mut failures = Vec::new();
    let mut listed = None;
    for _ in 0..=max_connections {
        match app.list(request()).await {
            Ok(page) => {
                listed = Some(page);
                break;
            }
            Err(status) => failures.push(status),
        }
    }
    for status in &failures {
        crate::helpers::assert_error(status, tonic::Code::Unavailable, "UNAVAILABLE", None);
    }
    let page = listed.unwrap_or_else(|| panic!("no call succeeded after {} failures", failures.len()));
    assert_eq!(page.invitations.len(), 3);
}
