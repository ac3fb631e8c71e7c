//! JSON log lines with the trace id at the top level, where log pipelines
//! (Loki, Elasticsearch, Cloud Logging) look for it to link a line to its
//! trace:
//!
//! ```json
//! {"timestamp":"…","level":"INFO","trace_id":"4bf9…4736","target":"invitations::service::redeem",
//!  "fields":{"message":"redeemed invitation","invitation_id":"…"},
//!  "spans":[{"name":"rpc","rpc.method":"Redeem",…},{"name":"db.redeem",…}]}
//! ```
//!
//! The shape is tracing-subscriber's own JSON format (with the span list)
//! plus `trace_id`, taken from the outermost enclosing span that has one (the
//! RPC span, see `rpc`). Lines outside a call have no `trace_id`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format: `fmt::layer().fmt_fields(JsonFields::new()).event_format(JsonLines)`.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Map::new();
        event.record(&mut FieldsToJson(&mut fields));

        let mut trace_id = None;
        let mut spans = Vec::new();
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let extensions = span.extensions();
            let mut object = extensions
                .get::<FormattedFields<JsonFields>>()
                .and_then(|f| serde_json::from_str::<Map<String, Value>>(f).ok())
                .unwrap_or_default();
            if trace_id.is_none() {
                trace_id = object.get("trace_id").cloned();
            }
            object.insert("name".into(), span.name().into());
            spans.push(Value::Object(object));
        }

        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        if let Some(trace_id) = trace_id {
            line.insert("trace_id".into(), trace_id);
        }
        line.insert("target".into(), event.metadata().target().into());
        line.insert("fields".into(), Value::Object(fields));
        line.insert("spans".into(), Value::Array(spans));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct FieldsToJson<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsToJson<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn lines_carry_the_outermost_trace_id_at_the_top() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let rpc = tracing::info_span!("rpc", rpc.method = "Redeem", trace_id = tracing::field::Empty);
            rpc.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            let _rpc = rpc.enter();
            let _db = tracing::info_span!("db.redeem", db.system = "postgresql").entered();
            tracing::warn!(attempt = 2, ok = false, "inside");
        });
        let text = String::from_utf8(buffer.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["fields"]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none());
        let inside = &lines[1];
        assert_eq!(inside["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["fields"]["message"], "inside");
        assert_eq!(inside["fields"]["attempt"], 2);
        assert_eq!(inside["fields"]["ok"], false);
        assert_eq!(inside["spans"][0]["name"], "rpc");
        assert_eq!(inside["spans"][0]["rpc.method"], "Redeem");
        assert_eq!(inside["spans"][1]["name"], "db.redeem");
        assert!(inside["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{inside}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
