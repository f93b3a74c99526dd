//! Jaeger spans to OTLP, with the mapping the OpenTelemetry Collector documents for its Jaeger
//! receiver:
//!
//! - the process becomes the resource: `serviceName` -> `service.name`, process tags -> resource
//!   attributes;
//! - `otel.scope.name`/`otel.scope.version` (or the older `otel.library.*`) tags -> the
//!   instrumentation scope, spans grouped by it;
//! - `span.kind` tag (`client`, `server`, `producer`, `consumer`, `internal`) -> span kind;
//! - status: `otel.status_code` (`OK`/`ERROR`) and `otel.status_description` when present;
//!   otherwise an `error` tag that is true (bool, or the string `true`) -> ERROR;
//! - `w3c.tracestate` -> trace state;
//! - the tags used above are removed from the attributes; every other tag stays, typed;
//! - logs -> events, named by their `event` field, else their `message` field (which the
//!   OpenTelemetry SDKs' Jaeger exporters use), that field removed from the event's attributes;
//! - the parent: Thrift's `parentSpanId` when not zero, else the first `CHILD_OF` reference in
//!   the same trace; every other reference -> a link with `opentracing.ref_type` (`child_of` or
//!   `follows_from`);
//! - 128-bit trace ids from `traceIdHigh`/`traceIdLow`; microseconds -> nanoseconds.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::model::{self, Batch, Process, RefType, Tag, TagValue};

/// One OTLP request for a Jaeger batch: one resource per distinct process, one scope per
/// distinct instrumentation scope within it, spans in their order.
pub fn to_otlp(batch: Batch) -> ExportTraceServiceRequest {
    let Batch { process, spans } = batch;
    // `None`: the batch's process (every Thrift span's); a span's own process (protobuf) is
    // compared once, not cloned and compared for every span.
    let mut resources: Vec<(Option<Process>, Vec<ScopeSpans>)> = Vec::new();
    for mut span in spans {
        let span_process = span.process.take().filter(|p| *p != process);
        let (scope, otlp) = span_to_otlp(span);
        let idx = match resources.iter().position(|(p, _)| *p == span_process) {
            Some(i) => i,
            None => {
                resources.push((span_process, Vec::new()));
                resources.len() - 1
            }
        };
        let scopes = &mut resources[idx].1;
        match scopes.iter_mut().find(|s| s.scope.as_ref() == Some(&scope)) {
            Some(s) => s.spans.push(otlp),
            None => scopes.push(ScopeSpans { scope: Some(scope), spans: vec![otlp], schema_url: String::new() }),
        }
    }
    let mut process = Some(process);
    let resource_spans = resources
        .into_iter()
        .map(|(p, scope_spans)| {
            // The batch's process appears once, so it is moved, not cloned.
            let p = p.or_else(|| process.take()).unwrap_or_default();
            ResourceSpans { resource: Some(resource(p)), scope_spans, schema_url: String::new() }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn resource(p: Process) -> Resource {
    let mut attributes = Vec::with_capacity(p.tags.len() + 1);
    if !p.service_name.is_empty() {
        attributes.push(kv("service.name", Value::StringValue(p.service_name)));
    }
    attributes.extend(p.tags.into_iter().filter(|t| t.key != "service.name").map(attribute));
    Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
}

fn span_to_otlp(s: model::Span) -> (InstrumentationScope, Span) {
    let mut kind = SpanKind::Unspecified;
    let mut scope = InstrumentationScope::default();
    let mut trace_state = String::new();
    let mut status_code: Option<StatusCode> = None;
    let mut status_message = String::new();
    let mut error_tag = false;
    let mut attributes = Vec::with_capacity(s.tags.len());
    for tag in s.tags {
        match tag.key.as_str() {
            "span.kind" => {
                kind = match &tag.value {
                    // Every span has one: read in place rather than copied and lowercased.
                    TagValue::Str(v) => span_kind(v),
                    other => span_kind(&text(other)),
                }
            }
            "otel.scope.name" | "otel.library.name" => scope.name = text(&tag.value),
            "otel.scope.version" | "otel.library.version" => scope.version = text(&tag.value),
            "w3c.tracestate" => trace_state = text(&tag.value),
            "otel.status_code" => {
                status_code = match text(&tag.value).to_ascii_uppercase().as_str() {
                    "ERROR" | "2" => Some(StatusCode::Error),
                    "OK" | "1" => Some(StatusCode::Ok),
                    _ => Some(StatusCode::Unset),
                }
            }
            "otel.status_description" => status_message = text(&tag.value),
            "error" if is_true(&tag.value) => error_tag = true,
            _ => attributes.push(attribute(tag)),
        }
    }
    let code = match status_code {
        Some(code) => code,
        None if error_tag => StatusCode::Error,
        None => StatusCode::Unset,
    };
    if code != StatusCode::Error {
        status_message.clear();
    }
    let status = (code != StatusCode::Unset || !status_message.is_empty())
        .then_some(Status { message: status_message, code: code as i32 });

    let (parent, links) = parent_and_links(&s.trace_id, s.parent_span_id, s.references);
    let events = s
        .logs
        .into_iter()
        .map(|log| {
            // The name: the `event` field, else a `message` field (what OpenTelemetry's Jaeger
            // exporters write the event name into).
            let key = if log.fields.iter().any(|f| f.key == "event") { "event" } else { "message" };
            let mut name = String::new();
            let mut attributes = Vec::with_capacity(log.fields.len());
            for f in log.fields {
                if f.key == key && name.is_empty() {
                    name = text(&f.value);
                } else {
                    attributes.push(attribute(f));
                }
            }
            Event { time_unix_nano: log.time_unix_nano, name, attributes, dropped_attributes_count: 0 }
        })
        .collect();
    let span = Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state,
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0,
        name: s.operation_name,
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.start_unix_nano.saturating_add(s.duration_nano),
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status,
    };
    (scope, span)
}

fn parent_and_links(
    trace_id: &[u8; 16],
    parent_span_id: [u8; 8],
    references: Vec<model::SpanRef>,
) -> (Option<[u8; 8]>, Vec<Link>) {
    let mut links = Vec::new();
    let parent = split_references(trace_id, parent_span_id, &references, |r| {
        let ref_type = match r.ref_type {
            RefType::ChildOf => "child_of",
            RefType::FollowsFrom => "follows_from",
        };
        links.push(Link {
            trace_id: r.trace_id.to_vec(),
            span_id: r.span_id.to_vec(),
            trace_state: String::new(),
            attributes: vec![kv("opentracing.ref_type", Value::StringValue(ref_type.into()))],
            dropped_attributes_count: 0,
            flags: 0,
        });
    });
    (parent, links)
}

/// The parent of a span (Thrift's `parentSpanId` when not zero, else the first `CHILD_OF`
/// reference in the same trace), with `link` called for every other reference, in order. Both
/// readers (this one and `direct`) decide so.
pub(super) fn split_references(
    trace_id: &[u8; 16],
    parent_span_id: [u8; 8],
    references: &[model::SpanRef],
    mut link: impl FnMut(&model::SpanRef),
) -> Option<[u8; 8]> {
    let mut parent = (parent_span_id != [0; 8]).then_some(parent_span_id);
    let mut parent_seen = false;
    for r in references {
        let same_trace = r.trace_id == *trace_id;
        if r.ref_type == RefType::ChildOf && same_trace && !parent_seen {
            match parent {
                None => {
                    parent = Some(r.span_id);
                    parent_seen = true;
                    continue;
                }
                // Thrift clients also list the parent as a reference: not a link as well.
                Some(p) if p == r.span_id => {
                    parent_seen = true;
                    continue;
                }
                Some(_) => {}
            }
        }
        link(r);
    }
    parent
}

fn span_kind(v: &str) -> SpanKind {
    const KINDS: [(&str, SpanKind); 5] = [
        ("client", SpanKind::Client),
        ("server", SpanKind::Server),
        ("producer", SpanKind::Producer),
        ("consumer", SpanKind::Consumer),
        ("internal", SpanKind::Internal),
    ];
    KINDS.iter().find(|(name, _)| v.eq_ignore_ascii_case(name)).map_or(SpanKind::Unspecified, |(_, kind)| *kind)
}

fn is_true(v: &TagValue) -> bool {
    match v {
        TagValue::Bool(b) => *b,
        TagValue::Str(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn text(v: &TagValue) -> String {
    match v {
        TagValue::Str(s) => s.clone(),
        TagValue::Double(d) => d.to_string(),
        TagValue::Bool(b) => b.to_string(),
        TagValue::Long(l) => l.to_string(),
        TagValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn attribute(t: Tag) -> KeyValue {
    let value = match t.value {
        TagValue::Str(s) => Value::StringValue(s),
        TagValue::Double(d) => Value::DoubleValue(d),
        TagValue::Bool(b) => Value::BoolValue(b),
        TagValue::Long(l) => Value::IntValue(l),
        TagValue::Binary(b) => Value::BytesValue(b),
    };
    KeyValue { key: t.key, value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}
