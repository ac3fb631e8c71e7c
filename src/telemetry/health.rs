//! The health gauge: `invitations_health_serving{service}` is 1 while a
//! health name reports SERVING and 0 while it reports NOT_SERVING, so alerts
//! see what the probes see (readiness failing, a relay that stopped
//! publishing) without a blackbox prober. A name the server does not report
//! (the relay without `NATS_URL`) has no sample.
//!
//! The statuses live in tonic-health's reporter, which has only async
//! readers, and gauge callbacks are synchronous: a task copies them into the
//! gauge's state every [`POLL_INTERVAL`]. Reading them is a map lookup each.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::server::{HealthReporter, HealthService};

/// How stale the gauge may be: well under a scrape interval.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type Latest = Arc<Mutex<Vec<(&'static str, u64)>>>;

/// Registers the gauge on `meter` and returns the task that keeps it current
/// (it never ends; run it with the server's background work).
pub(super) fn observe(
    meter: &Meter,
    reporter: HealthReporter,
    names: &[&'static str],
) -> impl Future<Output = ()> + Send + 'static {
    let latest: Latest = Arc::default();
    let read = latest.clone();
    meter
        .u64_observable_gauge("invitations.health.serving")
        .with_description("1 while the health name in label service reports SERVING, 0 while NOT_SERVING")
        .with_callback(move |observer| {
            for (name, value) in lock(&read).iter() {
                observer.observe(*value, &[KeyValue::new("service", *name)]);
            }
        })
        .build();
    let names = names.to_vec();
    let health = HealthService::from_health_reporter(reporter);
    async move {
        loop {
            let now = statuses(&health, &names).await;
            *lock(&latest) = now;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

async fn statuses(health: &HealthService, names: &[&'static str]) -> Vec<(&'static str, u64)> {
    let mut now = Vec::with_capacity(names.len());
    for name in names {
        let request = tonic::Request::new(HealthCheckRequest { service: (*name).to_owned() });
        // NOT_FOUND: the name is not reported (yet); leave it out.
        let Ok(response) = health.check(request).await else { continue };
        match response.into_inner().status() {
            ServingStatus::Serving => now.push((*name, 1)),
            ServingStatus::NotServing => now.push((*name, 0)),
            ServingStatus::Unknown | ServingStatus::ServiceUnknown => {}
        }
    }
    now
}

fn lock(latest: &Latest) -> std::sync::MutexGuard<'_, Vec<(&'static str, u64)>> {
    latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;
    use tonic_health::ServingStatus as Set;

    #[tokio::test]
    async fn the_gauge_follows_the_reporter() {
        let metrics = Metrics::new(false).expect("metrics");
        let (reporter, _server) = tonic_health::server::health_reporter();
        reporter.set_service_status("api", Set::Serving).await;
        reporter.set_service_status("relay", Set::NotServing).await;
        let poll = observe(metrics.meter(), reporter.clone(), &["api", "relay", "absent"]);
        let task = tokio::spawn(poll);
        let sample = |text: &str, name: &str| {
            let prefix = format!("invitations_health_serving{{service=\"{name}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = metrics.render().expect("render");
            if sample(&text, "api").as_deref() == Some("1") && sample(&text, "relay").as_deref() == Some("0") {
                assert_eq!(sample(&text, "absent"), None, "{text}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "gauge never matched: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reporter.set_service_status("relay", Set::Serving).await;
        loop {
            let text = metrics.render().expect("render");
            if sample(&text, "relay").as_deref() == Some("1") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the change never showed: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
