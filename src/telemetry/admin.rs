//! The admin HTTP endpoint on its own port (`--admin-listen`): `GET /metrics`
//! in the Prometheus text format, for the Kubernetes scrape convention. Kept
//! off the gRPC port so metrics can be scraped (and firewalled) separately.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::Metrics;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let app = Router::new().route("/metrics", get(move || scrape(metrics.clone())));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn scrape(metrics: Arc<Metrics>) -> Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        Err(e) => {
            tracing::error!(error = ?e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
