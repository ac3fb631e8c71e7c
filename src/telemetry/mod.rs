//! Telemetry: logs, traces and metrics, wired the way platform teams expect.
//!
//! - [`init`] installs the process-wide `tracing` subscriber: log lines as
//!   text or JSON on stderr, and, when the standard OpenTelemetry variables
//!   ask for it, an OTLP/gRPC span exporter. The binary calls it once.
//! - [`RpcLayer`] (tower plumbing in `layer`, what is recorded in [`rpc`])
//!   gives every gRPC call its span, access log line and metrics, continuing
//!   the caller's W3C trace.
//! - [`metrics`] holds one meter provider per server: Prometheus on the
//!   admin port ([`admin`]) and OTLP when configured; `health` turns the
//!   gRPC health statuses into a gauge.
//!
//! OTLP is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`) is set, off
//! when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER` /
//! `OTEL_METRICS_EXPORTER` is `none`. The exporter reads the other standard
//! variables itself (headers, timeout, compression); `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` name the resource. Transport: gRPC only.
//!
//! Nothing here records request fields: codes, tokens and IPs stay out of
//! logs, spans and metric labels (see `rpc`).

pub mod admin;
mod health;
mod json;
mod layer;
pub mod metrics;
pub mod rpc;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use layer::RpcLayer;
pub use metrics::{DomainMetrics, Metrics, OutboxMetrics, OutboxStats};
pub use rpc::CallerSlot;

/// How long exit may wait for each telemetry flush (spans, metrics): a slow
/// or unreachable collector must not hold the process past Kubernetes' grace
/// period, which covers shutdown delay + drain + twice this.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Owns the span exporter; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered, waiting at most [`FLUSH_TIMEOUT`].
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            flush_bounded("spans", move || tracer.shutdown_with_timeout(FLUSH_TIMEOUT));
        }
    }
}

/// How log lines are written: human text or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber: `filter` (EnvFilter syntax) over a text or
/// JSON log layer on stderr and, if OTLP traces are configured, the
/// OpenTelemetry layer. Must run inside the Tokio runtime (the OTLP exporter's
/// channel lives there).
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)?;
    let tracer = if otlp_enabled(Signal::Traces) {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        // Batches go out every OTEL_BSP_SCHEDULE_DELAY ms (default 5000).
        Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build())
    } else {
        None
    };
    let otel = tracer.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("invitations")));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json::JsonLines)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(logs).with(otel).try_init()?;
    if tracer.is_some() {
        tracing::info!("exporting spans over OTLP");
    }
    Ok(Telemetry { tracer })
}

/// Runs an exporter's shutdown on its own thread and waits at most
/// [`FLUSH_TIMEOUT`] (plus a little) for it; past that, exit goes on.
pub(crate) fn flush_bounded(what: &'static str, shutdown: impl FnOnce() -> OTelSdkResult + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name(format!("flush-{what}")).spawn(move || {
        let _ = done.send(shutdown());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot flush {what} at exit");
        return;
    }
    match finished.recv_timeout(FLUSH_TIMEOUT + Duration::from_millis(200)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing {what} at exit failed"),
        Err(_) => tracing::warn!("flushing {what} at exit timed out; the rest is dropped"),
    }
}

#[derive(Clone, Copy)]
pub enum Signal {
    Traces,
    Metrics,
}

/// Whether the standard OpenTelemetry variables ask for OTLP export of `signal`.
pub fn otlp_enabled(signal: Signal) -> bool {
    otlp_enabled_in(signal, |name| std::env::var(name).ok())
}

fn otlp_enabled_in(signal: Signal, env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let (exporter_var, endpoint_var) = match signal {
        Signal::Traces => ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        Signal::Metrics => ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
    };
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    if env(exporter_var).is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return false;
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(endpoint_var)
}

/// `service.name` from `OTEL_SERVICE_NAME` (default `invitations`), plus
/// `OTEL_RESOURCE_ATTRIBUTES` and the SDK's own attributes.
pub(crate) fn resource() -> Resource {
    let builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name("invitations").build()
    }
}

/// An error and its causes on one line, outermost first (`applying
/// migrations: connecting to the database at db:5432: Connection refused`).
/// Many errors repeat their cause in their own message (sqlx's "while
/// executing migrations: {cause}", "error communicating with database:
/// {io error}"); a cause already said by the message before it is left out,
/// so each reason appears once.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut said = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !said.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        said = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn otlp_follows_the_standard_variables() {
        assert!(!otlp_enabled_in(Signal::Traces, env(&[])));
        assert!(otlp_enabled_in(Signal::Traces, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])));
        assert!(otlp_enabled_in(Signal::Metrics, env(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4317")])));
        assert!(!otlp_enabled_in(Signal::Traces, env(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4317")])));
        let off = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_SDK_DISABLED", "true")];
        assert!(!otlp_enabled_in(Signal::Metrics, env(&off)));
        let none = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_TRACES_EXPORTER", "none")];
        assert!(!otlp_enabled_in(Signal::Traces, env(&none)));
        assert!(otlp_enabled_in(Signal::Metrics, env(&none)));
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let sqlx = sqlx::Error::Io(io);
        let migrate = sqlx::migrate::MigrateError::Execute(sqlx);
        let e = anyhow::Error::new(migrate).context("applying migrations");
        assert_eq!(
            error_chain(&e),
            "applying migrations: while executing migrations: error communicating with database: Connection refused \
             (os error 111)"
        );
        let plain = anyhow::anyhow!("outer").context("more");
        assert_eq!(error_chain(&plain), "more: outer");
    }
}
