//! Zipkin v2 spans to OTLP, with the mapping the OpenTelemetry Collector documents for its Zipkin
//! receiver:
//!
//! - `localEndpoint.serviceName` -> the resource's `service.name` (spans grouped by it);
//!   `localEndpoint` address and port -> `net.host.ip`/`net.host.port`; `remoteEndpoint` ->
//!   `peer.service`, `net.peer.ip`, `net.peer.port`;
//! - `kind` -> span kind; `parentId` -> parent span id; 64-bit trace ids are left-padded;
//! - tags -> string attributes, except: `otel.scope.name`/`otel.library.name` (and `.version`)
//!   -> the scope; `otel.status_code` and `otel.status_description` -> status; an `error` tag ->
//!   status ERROR, its value the message unless a description is given (the tags used are
//!   removed);
//! - annotations -> events named by their value (a value `{"<name>": {<attributes>}}`, which the
//!   OpenTelemetry SDKs' Zipkin exporters write, is read back as name and attributes);
//!   microseconds -> nanoseconds;
//! - `shared` (a server span that reuses its client's id) is kept as sent: the ids are not
//!   rewritten, as in the Collector.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::model::{self, Kind};

pub fn to_otlp(spans: Vec<model::Span>) -> ExportTraceServiceRequest {
    let mut builder = OtlpBuilder::default();
    for s in spans {
        builder.push(s);
    }
    builder.finish()
}

/// Builds the OTLP request span by span (as the decoders read them), grouping by service and
/// scope through an index (a request with many services costs no quadratic search), and keeping
/// an estimate of the heap the converted spans take ([`OtlpBuilder::decoded_bytes`]) so that the
/// receiver can refuse a request whose converted form would be too large before it is.
#[derive(Default)]
pub struct OtlpBuilder {
    resources: Vec<(String, Vec<ScopeSpans>)>,
    by_service: HashMap<String, usize>,
    /// (resource index, scope name, scope version) -> index in that resource's scopes.
    by_scope: HashMap<(usize, String, String), usize>,
    decoded_bytes: usize,
    spans: usize,
}

impl OtlpBuilder {
    pub fn push(&mut self, s: model::Span) {
        let service = s.local_endpoint.as_ref().map(|e| e.service_name.clone()).unwrap_or_default();
        let (scope, span) = span(s);
        self.decoded_bytes += span_heap_bytes(&span);
        self.spans += 1;
        let idx = match self.by_service.get(&service) {
            Some(&i) => i,
            None => {
                self.decoded_bytes += std::mem::size_of::<ResourceSpans>() + 2 * service.len();
                self.resources.push((service.clone(), Vec::new()));
                self.by_service.insert(service, self.resources.len() - 1);
                self.resources.len() - 1
            }
        };
        let scopes = &mut self.resources[idx].1;
        let key = (idx, scope.name.clone(), scope.version.clone());
        match self.by_scope.get(&key) {
            Some(&i) => scopes[i].spans.push(span),
            None => {
                self.decoded_bytes += std::mem::size_of::<ScopeSpans>() + 2 * (key.1.len() + key.2.len());
                scopes.push(ScopeSpans { scope: Some(scope), spans: vec![span], schema_url: String::new() });
                self.by_scope.insert(key, scopes.len() - 1);
            }
        }
    }

    /// About the heap taken by what was pushed so far (spans, their strings and vectors, the
    /// grouping), in bytes.
    pub fn decoded_bytes(&self) -> usize {
        self.decoded_bytes
    }

    pub fn spans(&self) -> usize {
        self.spans
    }

    pub fn finish(self) -> ExportTraceServiceRequest {
        let resource_spans = self
            .resources
            .into_iter()
            .map(|(service, scope_spans)| {
                let attributes =
                    if service.is_empty() { Vec::new() } else { vec![kv("service.name", string(service))] };
                ResourceSpans {
                    resource: Some(Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }),
                    scope_spans,
                    schema_url: String::new(),
                }
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }
}

/// Bytes an allocator hands out for `n` requested: at least 16, rounded up to 16 (glibc and
/// jemalloc size classes are close to this for small blocks).
fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.max(16).div_ceil(16) * 16
    }
}

fn value_heap_bytes(v: &Option<AnyValue>) -> usize {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => block(s.capacity()) + std::mem::size_of::<AnyValue>(),
        Some(_) => std::mem::size_of::<AnyValue>(),
        None => 0,
    }
}

fn attributes_heap_bytes(attributes: &[KeyValue]) -> usize {
    block(std::mem::size_of_val(attributes))
        + attributes.iter().map(|kv| block(kv.key.capacity()) + value_heap_bytes(&kv.value)).sum::<usize>()
}

/// The heap one converted span takes, its own slot in the spans vector included (twice: a
/// vector may hold up to double its length while growing).
fn span_heap_bytes(span: &Span) -> usize {
    2 * std::mem::size_of::<Span>()
        + block(span.trace_id.capacity())
        + block(span.span_id.capacity())
        + block(span.parent_span_id.capacity())
        + block(span.name.capacity())
        + attributes_heap_bytes(&span.attributes)
        + block(span.events.len() * std::mem::size_of::<Event>())
        + span.events.iter().map(|e| block(e.name.capacity()) + attributes_heap_bytes(&e.attributes)).sum::<usize>()
        + span.status.as_ref().map_or(0, |s| block(s.message.capacity()))
}

fn span(s: model::Span) -> (InstrumentationScope, Span) {
    let mut scope = InstrumentationScope::default();
    let mut code: Option<StatusCode> = None;
    let mut description: Option<String> = None;
    let mut error: Option<String> = None;
    let mut attributes = Vec::with_capacity(s.tags.len() + 4);
    for (k, v) in s.tags {
        match k.as_str() {
            "otel.scope.name" | "otel.library.name" => scope.name = v,
            "otel.scope.version" | "otel.library.version" => scope.version = v,
            "otel.status_code" => {
                code = Some(match v.to_ascii_uppercase().as_str() {
                    "ERROR" => StatusCode::Error,
                    "OK" => StatusCode::Ok,
                    _ => StatusCode::Unset,
                })
            }
            "otel.status_description" => description = Some(v),
            "error" => error = Some(v),
            _ => attributes.push(kv(&k, string(v))),
        }
    }
    let code = code.unwrap_or(if error.is_some() { StatusCode::Error } else { StatusCode::Unset });
    let status = match code {
        StatusCode::Unset => None,
        StatusCode::Ok => Some(Status { message: String::new(), code: code as i32 }),
        StatusCode::Error => {
            let from_error = error.filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("true"));
            Some(Status { message: description.or(from_error).unwrap_or_default(), code: code as i32 })
        }
    };
    if let Some(e) = &s.local_endpoint {
        if !e.ip.is_empty() {
            attributes.push(kv("net.host.ip", string(e.ip.clone())));
        }
        if e.port != 0 {
            attributes.push(kv("net.host.port", Value::IntValue(i64::from(e.port))));
        }
    }
    if let Some(e) = s.remote_endpoint {
        if !e.service_name.is_empty() {
            attributes.push(kv("peer.service", string(e.service_name)));
        }
        if !e.ip.is_empty() {
            attributes.push(kv("net.peer.ip", string(e.ip)));
        }
        if e.port != 0 {
            attributes.push(kv("net.peer.port", Value::IntValue(i64::from(e.port))));
        }
    }
    let kind = match s.kind {
        Kind::Unspecified => SpanKind::Unspecified,
        Kind::Client => SpanKind::Client,
        Kind::Server => SpanKind::Server,
        Kind::Producer => SpanKind::Producer,
        Kind::Consumer => SpanKind::Consumer,
    };
    let start = s.timestamp_us.saturating_mul(1000);
    let span = Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.id.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0,
        name: s.name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(s.duration_us.saturating_mul(1000)),
        attributes,
        dropped_attributes_count: 0,
        events: s
            .annotations
            .into_iter()
            .map(|a| {
                let (name, attributes) = annotation(a.value);
                Event {
                    time_unix_nano: a.timestamp_us.saturating_mul(1000),
                    name,
                    attributes,
                    dropped_attributes_count: 0,
                }
            })
            .collect(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status,
    };
    (scope, span)
}

/// An annotation's value is the event's name, unless it is what the OpenTelemetry SDKs' Zipkin
/// exporters write for an event with attributes, `{"<name>": {<attributes>}}`: then it is read back.
fn annotation(value: String) -> (String, Vec<KeyValue>) {
    if value.starts_with('{') {
        if let Ok(serde_json::Value::Object(outer)) = serde_json::from_str::<serde_json::Value>(&value) {
            if let Some((name, serde_json::Value::Object(inner))) = outer.iter().next().filter(|_| outer.len() == 1) {
                let attributes = inner
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => Value::StringValue(s.clone()),
                            serde_json::Value::Bool(b) => Value::BoolValue(*b),
                            serde_json::Value::Number(n) => match n.as_i64() {
                                Some(i) => Value::IntValue(i),
                                None => Value::DoubleValue(n.as_f64().unwrap_or_default()),
                            },
                            other => Value::StringValue(other.to_string()),
                        };
                        kv(k, v)
                    })
                    .collect();
                return (name.clone(), attributes);
            }
        }
    }
    (value, Vec::new())
}

fn string(s: String) -> Value {
    Value::StringValue(s)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}
