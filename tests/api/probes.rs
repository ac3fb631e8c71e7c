//! What the Kubernetes probes see: readiness follows the database, liveness
//! only asks whether the process answers.

use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{DbProxy, Options, TestApp, TestDb, with_database};

#[tokio::test]
async fn liveness_stays_serving_while_the_database_is_down() {
    let proxy = DbProxy::start().await;
    let db = TestDb::create().await;
    let url = with_database(&format!("postgres://postgres@127.0.0.1:{}/x", proxy.port), &db.name);
    let app = TestApp::spawn_opts(Options { extra_args: vec![], database_url: Some(url) }).await;
    assert_eq!(app.health_status(invitations::app::LIVENESS_NAME).await.expect("health"), ServingStatus::Serving);

    proxy.cut();
    app.wait_for_health(ServingStatus::NotServing).await;
    let readiness = app.health_status(invitations::app::SERVICE_NAME).await.expect("health");
    assert_eq!(readiness, ServingStatus::NotServing);
    assert_eq!(app.health_status(invitations::app::LIVENESS_NAME).await.expect("health"), ServingStatus::Serving);

    // And through shutdown, while readiness says NOT_SERVING.
    let mut app = TestApp::spawn_with(&["--shutdown-delay", "1s"]).await;
    app.begin_shutdown();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(app.health_status(invitations::app::LIVENESS_NAME).await.expect("health"), ServingStatus::Serving);
    app.stop().await.expect("clean exit");
}
