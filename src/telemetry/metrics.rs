//! The service's metrics: one OpenTelemetry meter provider per server, read
//! by the Prometheus exporter (served on the admin port, `/metrics`) and, when
//! the standard OTLP variables are set, pushed over OTLP as well.
//!
//! Per server rather than global, so tests running many servers in one
//! process each see their own numbers. Label values are bounded sets (method
//! names, status codes, error reasons); no code, token, user id or IP ever
//! becomes a label.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};
use tonic::Code;

use super::rpc::code_name;

/// Latency buckets in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    pub rpc: Arc<RpcMetrics>,
    pub domain: DomainMetrics,
    pub outbox: OutboxMetrics,
}

impl Metrics {
    /// A Prometheus registry always; an OTLP push reader too when `otlp`.
    pub fn new(otlp: bool) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .context("building the Prometheus exporter")?;
        let mut builder = SdkMeterProvider::builder().with_reader(prometheus).with_resource(super::resource());
        if otlp {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .context("building the OTLP metric exporter")?;
            // Interval: OTEL_METRIC_EXPORT_INTERVAL (ms), default 60 s.
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            tracing::info!("exporting metrics over OTLP");
        }
        let provider = builder.build();
        let meter = provider.meter("invitations");
        let rpc = Arc::new(RpcMetrics::new(&meter));
        let domain = DomainMetrics::new(&meter);
        let outbox = OutboxMetrics::new(&meter);
        let metrics = Self { provider, registry, meter, rpc, domain, outbox: outbox.clone() };
        metrics.observe_outbox(move || outbox.latest());
        Ok(metrics)
    }

    /// For instruments defined elsewhere (e.g. the outbox relay's gauges).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).context("encoding metrics")?;
        String::from_utf8(out).context("metrics are not UTF-8")
    }

    /// Database pool gauges, read at each collection, labelled by pool:
    /// `general` (sqlx's: transactions and background work) and `statements`
    /// (the one-statement common path, `store::statements`).
    /// `statements` tells that pool's open and idle connections and its
    /// maximum.
    pub fn observe_pool(
        &self,
        pool: sqlx::PgPool,
        statements: impl Fn() -> (usize, usize) + Send + Sync + 'static,
        statements_max: usize,
    ) {
        let max = u64::from(pool.options().get_max_connections());
        let statements_max = statements_max as u64;
        self.meter
            .u64_observable_gauge("invitations.db.pool.connections")
            .with_description("Open database connections by pool (general, statements) and state (idle, used)")
            .with_callback(move |observer| {
                let size = u64::from(pool.size());
                let idle = pool.num_idle() as u64;
                let (statements_size, statements_idle) = statements();
                let (statements_size, statements_idle) = (statements_size as u64, statements_idle as u64);
                for (name, idle, used) in [
                    ("general", idle, size.saturating_sub(idle)),
                    ("statements", statements_idle, statements_size.saturating_sub(statements_idle)),
                ] {
                    observer.observe(idle, &[KeyValue::new("pool", name), KeyValue::new("state", "idle")]);
                    observer.observe(used, &[KeyValue::new("pool", name), KeyValue::new("state", "used")]);
                }
            })
            .build();
        self.meter
            .u64_observable_gauge("invitations.db.pool.max")
            .with_description("Most database connections this process opens, by pool")
            .with_callback(move |observer| {
                observer.observe(max, &[KeyValue::new("pool", "general")]);
                observer.observe(statements_max, &[KeyValue::new("pool", "statements")]);
            })
            .build();
    }

    /// Standby gauges, read at each collection from `status` (each standby's
    /// lag in seconds, None when unreachable, and whether it serves reads),
    /// labelled by the standby's position in `--database-read-url` (never
    /// its address).
    pub fn observe_replicas(&self, status: impl Fn() -> Vec<(Option<f64>, bool)> + Send + Sync + 'static) {
        let status = Arc::new(status);
        let lag = status.clone();
        self.meter
            .f64_observable_gauge("invitations.db.replica.lag")
            .with_unit("s")
            .with_description("How far each standby is behind the primary (absent while unreachable)")
            .with_callback(move |observer| {
                for (index, (seconds, _)) in lag().into_iter().enumerate() {
                    if let Some(seconds) = seconds {
                        observer.observe(seconds, &[KeyValue::new("standby", index.to_string())]);
                    }
                }
            })
            .build();
        self.meter
            .u64_observable_gauge("invitations.db.replica.serving")
            .with_description("1 while a standby serves reads, 0 while lagging or unreachable")
            .with_callback(move |observer| {
                for (index, (_, usable)) in status().into_iter().enumerate() {
                    observer.observe(u64::from(usable), &[KeyValue::new("standby", index.to_string())]);
                }
            })
            .build();
    }

    /// The health gauge (`invitations_health_serving{service}`) for `names`,
    /// read from `reporter`; the returned task keeps it current, run it with
    /// the server's background work.
    pub fn observe_health(
        &self,
        reporter: tonic_health::server::HealthReporter,
        names: &[&'static str],
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        super::health::observe(&self.meter, reporter, names)
    }

    /// The outbox gauges (backlog size and age of the oldest pending event).
    /// `stats` is called at each collection and should be cheap: return the
    /// relay's latest numbers, not a fresh query. `None` reports nothing.
    ///
    /// `new` wires this to [`OutboxMetrics::latest`], which the outbox's
    /// maintenance task refreshes.
    fn observe_outbox(&self, stats: impl Fn() -> Option<OutboxStats> + Send + Sync + 'static) {
        let stats = Arc::new(stats);
        let backlog = stats.clone();
        self.meter
            .u64_observable_gauge("invitations.outbox.backlog")
            .with_description("Events waiting in the outbox")
            .with_callback(move |observer| {
                if let Some(s) = backlog() {
                    observer.observe(s.pending, &[]);
                }
            })
            .build();
        self.meter
            .f64_observable_gauge("invitations.outbox.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest pending outbox event (0 when empty)")
            .with_callback(move |observer| {
                if let Some(s) = stats() {
                    observer.observe(s.oldest_age.as_secs_f64(), &[]);
                }
            })
            .build();
    }

    /// Pushes what is left over OTLP (waiting at most
    /// [`FLUSH_TIMEOUT`](super::FLUSH_TIMEOUT)) and stops the readers.
    pub fn shutdown(&self) {
        let provider = self.provider.clone();
        super::flush_bounded("metrics", move || provider.shutdown());
    }
}

/// What the outbox gauges report.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxStats {
    pub pending: u64,
    pub oldest_age: Duration,
}

/// The outbox's instruments: the backlog gauges (reading the latest numbers
/// the maintenance task measured) and the relay's counters.
#[derive(Clone)]
pub struct OutboxMetrics {
    latest: Arc<Mutex<Option<OutboxStats>>>,
    sent: Counter<u64>,
    duplicates: Counter<u64>,
}

impl OutboxMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            latest: Arc::new(Mutex::new(None)),
            sent: meter
                .u64_counter("invitations.outbox.sent")
                .with_description("Events published to JetStream and marked sent")
                .build(),
            duplicates: meter
                .u64_counter("invitations.outbox.duplicates")
                .with_description("Publishes JetStream dropped as duplicates (an event published again after a crash)")
                .build(),
        }
    }

    /// Records nothing (and reports no backlog).
    pub fn disabled() -> Self {
        Self::new(&opentelemetry::metrics::noop::NoopMeterProvider::new().meter("invitations"))
    }

    /// The backlog as last measured, if it was.
    pub fn latest(&self) -> Option<OutboxStats> {
        *self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record_backlog(&self, stats: OutboxStats) {
        *self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(stats);
    }

    pub fn sent(&self, count: u64) {
        self.sent.add(count, &[]);
    }

    pub fn published(&self, duplicates: u64) {
        if duplicates > 0 {
            self.duplicates.add(duplicates, &[]);
        }
    }
}

/// Per-RPC instruments, recorded by the RPC layer.
pub struct RpcMetrics {
    requests: Counter<u64>,
    errors: Counter<u64>,
    rejections: Counter<u64>,
    duration: Histogram<f64>,
}

impl RpcMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            requests: meter.u64_counter("invitations.rpc.requests").with_description("gRPC calls handled").build(),
            errors: meter
                .u64_counter("invitations.rpc.errors")
                .with_description("gRPC calls that ended with a status other than OK, by code")
                .build(),
            rejections: meter
                .u64_counter("invitations.rejections")
                .with_description("Refused calls by google.rpc.ErrorInfo reason (EXPIRED, CODE_NOT_FOUND, ...)")
                .build(),
            duration: meter
                .f64_histogram("invitations.rpc.duration")
                .with_unit("s")
                .with_description("gRPC call latency, from request headers to the status")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
        }
    }

    pub(crate) fn record(&self, service: &str, method: &str, code: Code, reason: Option<&str>, elapsed: Duration) {
        let labels = [
            KeyValue::new("rpc_service", service.to_owned()),
            KeyValue::new("rpc_method", method.to_owned()),
            KeyValue::new("code", code_name(code)),
        ];
        self.requests.add(1, &labels);
        self.duration.record(elapsed.as_secs_f64(), &labels);
        if code != Code::Ok {
            self.errors.add(1, &labels);
        }
        if let Some(reason) = reason {
            self.rejections.add(1, &[labels[1].clone(), KeyValue::new("reason", reason.to_owned())]);
        }
    }
}

/// Domain counters, recorded by the service after a change commits.
#[derive(Clone)]
pub struct DomainMetrics {
    minted: Counter<u64>,
    redeemed: Counter<u64>,
}

impl DomainMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            minted: meter.u64_counter("invitations.minted").with_description("Invitations minted").build(),
            redeemed: meter
                .u64_counter("invitations.redeemed")
                .with_description("Uses of invitations spent by Redeem (retries not counted)")
                .build(),
        }
    }

    /// Records nothing: for an `Invitations` built without a server (tools, tests).
    pub fn disabled() -> Self {
        Self::new(&opentelemetry::metrics::noop::NoopMeterProvider::new().meter("invitations"))
    }

    pub fn minted(&self, count: u64) {
        self.minted.add(count, &[]);
    }

    pub fn redeemed(&self) {
        self.redeemed.add(1, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_gauges_appear_when_the_relay_reports() {
        let metrics = Metrics::new(false).expect("metrics");
        let before = metrics.render().expect("render");
        assert!(!before.contains("invitations_outbox_backlog"), "nothing before the first measurement: {before}");
        metrics.outbox.record_backlog(OutboxStats { pending: 42, oldest_age: Duration::from_millis(1500) });
        let text = metrics.render().expect("render");
        assert!(text.lines().any(|l| l.starts_with("invitations_outbox_backlog") && l.ends_with(" 42")), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("invitations_outbox_oldest_age_seconds") && l.ends_with(" 1.5")),
            "{text}"
        );
    }

    #[test]
    fn rpc_metrics_use_code_names_and_reasons() {
        let metrics = Metrics::new(false).expect("metrics");
        metrics.rpc.record(
            "invitations.v1.InvitationService",
            "Redeem",
            Code::FailedPrecondition,
            Some("EXPIRED"),
            Duration::from_millis(3),
        );
        let text = metrics.render().expect("render");
        assert!(text.contains(r#"invitations_rejections_total{reason="EXPIRED",rpc_method="Redeem"} 1"#), "{text}");
        assert!(text.contains(r#"code="FAILED_PRECONDITION""#), "{text}");
    }
}
