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
    assert_eq!(app.health_status(invitations::server::SERVICE_NAME).await.expect("health"), ServingStatus::Serving);
    app.mint_one("alice").await;
    proxy.cut();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(app.health_status(invitations::server::SERVICE_NAME).await.expect("health"), ServingStatus::NotServing);
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
