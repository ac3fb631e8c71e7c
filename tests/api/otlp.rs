//! OpenTelemetry export of the real binary: an OTLP collector started inside
//! the test (a tonic server implementing the collector's trace and metrics
//! services) receives the Redeem span, child of the caller's `traceparent`,
//! and the RPC metrics. The logs carry the trace id and never a code.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use invitations::pb;
use invitations::pb::invitation_service_client::InvitationServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::helpers::{connect, wait_until};
use crate::process::Process;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().expect("lock").push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().expect("lock").push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves on a port-0 listener; returns its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let traces = self.traces.lock().expect("lock");
        let mut spans = Vec::new();
        for request in traces.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans.resource.clone().map(|r| r.attributes).unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    spans.extend(scope.spans.iter().map(|s| (resource.clone(), s.clone())));
                }
            }
        }
        spans
    }

    fn metric_names(&self) -> Vec<String> {
        let metrics = self.metrics.lock().expect("lock");
        metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn string(value: &str) -> Value {
    Value::StringValue(value.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeem_span_reaches_the_collector_under_the_callers_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "invitations-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    let process = Process::spawn(&[], &env).await;
    let client = InvitationServiceClient::new(connect(process.addr).await);
    let mint = pb::MintRequest { user_ids: vec!["ayo".into()], per_user: 1, ..Default::default() };
    let code = client.clone().mint(mint).await.expect("mint").into_inner().invitations[0].code.clone();

    let mut redeem = Request::new(pb::RedeemRequest {
        code: code.clone(),
        invitee_id: "omid".into(),
        client_ip: "203.0.113.77".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    redeem.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    redeem.metadata_mut().insert("x-caller", "signup-web".parse().expect("ascii"));
    client.clone().redeem(redeem).await.expect("redeem");

    let method = "invitations.v1.InvitationService/Redeem";
    wait_until(Duration::from_secs(20), "the Redeem span at the collector", || async {
        collector.spans().iter().any(|(_, s)| s.name == method)
    })
    .await;
    let spans = collector.spans();
    let (resource, span) = spans.iter().find(|(_, s)| s.name == method).expect("the Redeem span");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "continues the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN_ID, "child of the caller's span");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attribute(resource, "service.name"), Some(&string("invitations-under-test")));
    let attrs = &span.attributes;
    assert_eq!(attribute(attrs, "rpc.system"), Some(&string("grpc")));
    assert_eq!(attribute(attrs, "rpc.service"), Some(&string("invitations.v1.InvitationService")));
    assert_eq!(attribute(attrs, "rpc.method"), Some(&string("Redeem")));
    assert_eq!(attribute(attrs, "rpc.grpc.status_code"), Some(&Value::IntValue(0)));
    assert_eq!(attribute(attrs, "caller"), Some(&string("signup-web")));
    assert!(matches!(attribute(attrs, "latency_ms"), Some(Value::DoubleValue(ms)) if *ms > 0.0), "{attrs:?}");

    // The database work is a child span of the RPC.
    let db = spans.iter().map(|(_, s)| s).find(|s| s.name == "db.redeem").expect("a db.redeem span");
    assert_eq!(db.parent_span_id, span.span_id);
    assert_eq!(db.trace_id, span.trace_id);

    // No span carries the code or the client's IP, in any attribute.
    let everything = format!("{spans:?}");
    assert!(!everything.contains(&code) && !everything.contains(&code.replace('-', "")), "a code reached a span");
    assert!(!everything.contains("203.0.113.77"), "an IP reached a span");

    wait_until(Duration::from_secs(20), "RPC metrics at the collector", || async {
        let names = collector.metric_names();
        names.iter().any(|n| n == "invitations.rpc.requests") && names.iter().any(|n| n == "invitations.rpc.duration")
    })
    .await;
}

#[tokio::test]
async fn logs_carry_the_trace_id_and_never_a_code() {
    // Debug level: the most the service itself writes, sqlx statements included.
    let process = Process::spawn(&["--log", "debug,h2=info,hyper=info,tower=info"], &[]).await;
    let client = InvitationServiceClient::new(connect(process.addr).await);
    let mint = pb::MintRequest { user_ids: vec!["ayo".into()], per_user: 2, ..Default::default() };
    let invitations = client.clone().mint(mint).await.expect("mint").into_inner().invitations;
    let (code, other) = (&invitations[0].code, &invitations[1].code);

    #[allow(clippy::needless_update)] // the request may grow fields
    let check =
        pb::CheckCodeRequest { code: code.to_lowercase(), client_ip: "203.0.113.77".into(), ..Default::default() };
    client.clone().check_code(check).await.expect("check");
    let mut redeem = Request::new(pb::RedeemRequest {
        code: code.clone(),
        invitee_id: "omid".into(),
        client_ip: "203.0.113.77".into(),
        ..Default::default()
    });
    redeem.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01").parse().expect("ascii"));
    client.clone().redeem(redeem).await.expect("redeem");
    // Refusals: spent, mistyped, unknown.
    let again = pb::RedeemRequest { code: code.clone(), invitee_id: "ines".into(), ..Default::default() };
    client.clone().redeem(again).await.expect_err("spent");
    let typo = swap_neighbours(other);
    let mistyped = pb::RedeemRequest { code: typo.clone(), invitee_id: "ines".into(), ..Default::default() };
    client.clone().redeem(mistyped).await.expect_err("mistyped");

    wait_until(Duration::from_secs(10), "the access log of the refused redeem", || async {
        process.logs().iter().filter(|l| l["fields"]["message"] == "rpc finished").count() >= 5
    })
    .await;
    let logs = process.logs();
    let finished: Vec<_> = logs.iter().filter(|l| l["fields"]["message"] == "rpc finished").collect();
    let redeemed = finished
        .iter()
        .find(|l| l["spans"][0]["rpc.method"] == "Redeem" && l["fields"]["code"] == "OK")
        .expect("the access log line of the Redeem");
    assert_eq!(redeemed["trace_id"], TRACE_ID);
    let inside = logs.iter().find(|l| l["fields"]["message"] == "redeemed invitation").expect("the service's own line");
    assert_eq!(inside["trace_id"], TRACE_ID, "lines inside the call carry the trace id");
    assert_eq!(inside["spans"][1]["name"], "db.redeem");
    assert!(
        finished
            .iter()
            .any(|l| l["fields"]["code"] == "FAILED_PRECONDITION" && l["fields"]["reason"] == "ALREADY_REDEEMED")
    );

    let raw = process.raw_logs();
    for secret in
        [code.clone(), code.replace('-', ""), code.to_lowercase(), other.clone(), other.replace('-', ""), typo]
    {
        assert!(!raw.contains(&secret), "{secret} appears in the logs");
    }
    assert!(!raw.contains("203.0.113.77"), "a client IP appears in the logs");
}

/// The code with its first two different neighbouring symbols swapped.
fn swap_neighbours(code: &str) -> String {
    let mut bytes = code.as_bytes().to_vec();
    let i = (0..bytes.len() - 1)
        .find(|&i| bytes[i] != bytes[i + 1] && bytes[i] != b'-' && bytes[i + 1] != b'-')
        .expect("a code has two different neighbours");
    bytes.swap(i, i + 1);
    String::from_utf8(bytes).expect("ascii")
}
