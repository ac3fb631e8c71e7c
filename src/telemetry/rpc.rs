//! Per-RPC telemetry: what every gRPC call (health and reflection included)
//! records, in its span, its access log line and its metrics. The tower
//! plumbing that calls into this is `layer`.
//!
//! - The span continues the caller's trace: W3C `traceparent` (and
//!   `tracestate`) are read from the request metadata.
//! - The span and the log line carry the method, the gRPC status code, the
//!   caller and the latency; the span's `trace_id` field puts the trace id on
//!   every log line written inside the call.
//! - Nothing from the request body is recorded: codes, tokens and IPs live
//!   there, and never reach a span, log line or metric label.
//!
//! The caller is the authenticated name when an authentication layer sets one
//! through [`CallerSlot`] (the extension point for caller authentication),
//! else the name claimed in the `x-caller` metadata, else `unknown`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::RpcMetrics;

/// Longest caller name recorded; longer claims are cut (names are 1–128 bytes).
const MAX_CALLER_LEN: usize = 128;

/// Where an authentication layer or interceptor records who the caller is.
/// The RPC layer puts one into every request's extensions; the caller name
/// set here (once) wins over the unauthenticated `x-caller` claim:
///
/// ```ignore
/// if let Some(slot) = request.extensions().get::<CallerSlot>() {
///     slot.set(&caller_name);
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallerSlot(Arc<OnceLock<String>>);

impl CallerSlot {
    /// Records the authenticated caller name; later calls are ignored.
    pub fn set(&self, name: &str) {
        let _ = self.0.set(sanitize_caller(name));
    }

    /// The authenticated caller name, once set.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// One call in flight.
pub(super) struct Call {
    pub(super) span: Span,
    pub(super) caller: CallerSlot,
    service: String,
    method: String,
    claimed_caller: Option<String>,
    started: Instant,
    metrics: Arc<RpcMetrics>,
    /// Health and reflection calls: metrics yes, info-level logs no.
    housekeeping: bool,
}

impl Call {
    pub(super) fn start<B>(request: &http::Request<B>, metrics: Arc<RpcMetrics>) -> Self {
        let (service, method) = split_path(request.uri().path());
        let housekeeping = service.starts_with("grpc.");
        let full_name = format!("{service}/{method}");
        let span = if housekeeping {
            tracing::debug_span!("rpc", otel.name = %full_name, otel.kind = "server", rpc.system = "grpc",
                rpc.service = %service, rpc.method = %method, rpc.grpc.status_code = Empty,
                otel.status_code = Empty, caller = Empty, latency_ms = Empty, trace_id = Empty)
        } else {
            tracing::info_span!("rpc", otel.name = %full_name, otel.kind = "server", rpc.system = "grpc",
                rpc.service = %service, rpc.method = %method, rpc.grpc.status_code = Empty,
                otel.status_code = Empty, caller = Empty, latency_ms = Empty, trace_id = Empty)
        };
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let parent_trace = parent.span().span_context().trace_id();
        // Not exporting (no OTLP, or the span is filtered out): the span has
        // no OpenTelemetry context, and the log lines still get a trace id.
        let _ = span.set_parent(parent);
        let own_trace = span.context().span().span_context().trace_id();
        let trace_id =
            [own_trace, parent_trace].into_iter().find(|t| *t != TraceId::INVALID).unwrap_or_else(random_trace_id);
        span.record("trace_id", tracing::field::display(trace_id));
        let claimed_caller = request
            .headers()
            .get("x-caller")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(sanitize_caller);
        Self {
            span,
            service: service.to_owned(),
            method: method.to_owned(),
            claimed_caller,
            caller: CallerSlot::default(),
            started: Instant::now(),
            metrics,
            housekeeping,
        }
    }

    pub(super) fn finish(self, code: Code, headers: Option<&HeaderMap>) {
        let elapsed = self.started.elapsed();
        let caller = self.caller.get().or(self.claimed_caller.as_deref()).unwrap_or("unknown");
        let reason = headers.and_then(error_reason);
        let span = &self.span;
        span.record("rpc.grpc.status_code", code as i64);
        span.record("caller", caller);
        span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
        if is_server_error(code) {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics.record(&self.service, &self.method, code, reason.as_deref(), elapsed);
        let code_name = code_name(code);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let reason = reason.as_deref().unwrap_or("");
        // Entered, not `parent:`, so the log layers see the span's fields.
        let _entered = span.enter();
        if self.housekeeping {
            tracing::debug!(code = code_name, reason, latency_ms, caller, "rpc finished");
        } else {
            tracing::info!(code = code_name, reason, latency_ms, caller, "rpc finished");
        }
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`). Unknown shapes
/// are folded into one bucket so a scanner cannot blow up label cardinality.
fn split_path(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method)) if is_identifier(service) && is_identifier(method) && known_service(service) => {
            (service, method)
        }
        _ => ("unknown", "unknown"),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

/// Services this server answers for; anything else is UNIMPLEMENTED and
/// recorded as `unknown` so label values stay bounded.
fn known_service(service: &str) -> bool {
    service.starts_with("invitations.") || service.starts_with("grpc.")
}

fn sanitize_caller(name: &str) -> String {
    let mut cut = name.len().min(MAX_CALLER_LEN);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

pub(super) fn status_from(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(value))
}

/// The `google.rpc.ErrorInfo` reason of an error answer, if it is one of ours.
fn error_reason(headers: &HeaderMap) -> Option<String> {
    use tonic_types::StatusExt;
    let status = tonic::Status::from_header_map(headers)?;
    let info = status.get_details_error_info()?;
    let well_formed = !info.reason.is_empty()
        && info.reason.len() <= 64
        && info.reason.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (info.domain == crate::domain::error::ERROR_DOMAIN && well_formed).then_some(info.reason)
}

/// Server-side errors per the OpenTelemetry gRPC conventions; the rest are
/// the caller's mistakes and leave the span's status unset.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// `NOT_FOUND`-style names, as grpcurl and the gRPC docs spell them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn random_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/invitations.v1.InvitationService/Redeem"),
            ("invitations.v1.InvitationService", "Redeem")
        );
        assert_eq!(split_path("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
    }

    #[test]
    fn odd_paths_share_one_bucket() {
        for path in ["/", "/x", "/evil.Service/Method", "/invitations.v1.S/K7QM-X2RT", "/invitations.v1.S/a/b"] {
            assert_eq!(split_path(path), ("unknown", "unknown"), "{path}");
        }
    }

    #[test]
    fn caller_names_are_cut_and_cleaned() {
        assert_eq!(sanitize_caller("signup\nfake log line"), "signup?fake log line");
        assert_eq!(sanitize_caller(&"é".repeat(100)).len(), 128);
    }

    #[test]
    fn the_slot_keeps_the_first_name() {
        let slot = CallerSlot::default();
        slot.set("signup-service");
        slot.set("someone-else");
        assert_eq!(slot.get(), Some("signup-service"));
    }

    #[test]
    fn only_our_reasons_become_labels() {
        use tonic_types::{ErrorDetails, StatusExt};
        let ours = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "x",
            ErrorDetails::with_error_info("EXPIRED", "invitations", std::collections::HashMap::new()),
        );
        assert_eq!(error_reason(&headers_of(ours)).as_deref(), Some("EXPIRED"));
        let foreign = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "x",
            ErrorDetails::with_error_info("K7QM-X2RT", "invitations", std::collections::HashMap::new()),
        );
        assert_eq!(error_reason(&headers_of(foreign)), None);
    }

    fn headers_of(status: tonic::Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).expect("status fits in headers");
        headers
    }
}
