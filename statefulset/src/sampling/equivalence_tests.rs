//! The encoded buffer against the decoding one it replaced ([`super::buffer_reference`]): the
//! same requests at the same times, under the same policies and limits, give the same decisions,
//! the same late spans, the same buffered counts, and kept spans that decode (prost) to exactly
//! the request the decoding buffer built. Requests are also encoded in the unusual ways the wire
//! format allows (a resource or scope split over two occurrences or after the spans, unknown
//! fields, a span's status or an attribute's value given twice), which prost merges.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_config::{PolicyConfig, TailSamplingConfig};
use lgtm_pipeline::trace_wire::ValidTraces;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::buffer::{Buffer, Limits, Outcome};
use super::buffer_reference::{RefBuffer, RefOutcome};
use super::policy::Policies;

const WAIT: Duration = Duration::from_millis(1000);

fn policy(kind: &str) -> PolicyConfig {
    PolicyConfig { kind: kind.into(), ..PolicyConfig::default() }
}

/// Policy sets covering every condition kind.
fn policy_sets() -> Vec<Vec<PolicyConfig>> {
    let string_attr = |key: &str, values: &[&str]| PolicyConfig {
        key: Some(key.into()),
        values: values.iter().map(|v| v.to_string()).collect(),
        ..policy("string_attribute")
    };
    let numeric_attr = |key: &str, min: i64, max: i64| PolicyConfig {
        key: Some(key.into()),
        min_value: Some(min),
        max_value: Some(max),
        ..policy("numeric_attribute")
    };
    let status = |codes: &[&str]| PolicyConfig {
        status_codes: codes.iter().map(|c| c.to_string()).collect(),
        ..policy("status_code")
    };
    vec![
        TailSamplingConfig::default().policies,
        vec![
            string_attr("http.route", &["/a"]),
            numeric_attr("code", 500, 599),
            PolicyConfig {
                and: vec![PolicyConfig { threshold_ms: Some(100), ..policy("latency") }, status(&["OK", "UNSET"])],
                ..policy("and")
            },
        ],
        vec![
            PolicyConfig { spans_per_second: Some(5), ..policy("rate_limiting") },
            PolicyConfig { percentage: Some(50.0), ..policy("probabilistic") },
        ],
        vec![
            PolicyConfig { not: Some(Box::new(string_attr("env", &["prod"]))), ..policy("not") },
            PolicyConfig { or: vec![numeric_attr("ratio", 1, 2), status(&["ERROR"])], ..policy("or") },
        ],
    ]
}

fn trace_ids() -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = (0..10u8).map(|n| vec![n.wrapping_mul(37) ^ 0x5a; 16]).collect();
    // Invalid lengths group too (padded / cut).
    ids.push(vec![7; 8]);
    ids.push(vec![9; 20]);
    ids
}

fn value() -> impl Strategy<Value = Option<AnyValue>> {
    use any_value::Value as V;
    let v = prop_oneof![
        prop::sample::select(vec!["/a", "/b", "prod", "dev"]).prop_map(|s| V::StringValue(s.into())),
        prop::sample::select(vec![-1i64, 1, 2, 499, 500, 503, 600]).prop_map(V::IntValue),
        prop::sample::select(vec![0.5f64, 1.0, 1.5, 2.5, 550.0]).prop_map(V::DoubleValue),
        any::<bool>().prop_map(V::BoolValue),
    ];
    prop_oneof![1 => Just(None), 8 => v.prop_map(|v| Some(AnyValue { value: Some(v) }))]
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (prop::sample::select(vec!["http.route", "code", "ratio", "env", "service.name"]), value())
        .prop_map(|(key, value)| KeyValue { key: key.into(), value, ..Default::default() })
}

fn span() -> impl Strategy<Value = Span> {
    (
        0..trace_ids().len(),
        any::<u8>(),
        0u64..300,
        0u64..300,
        prop::option::of(prop::sample::select(vec![-1i32, 0, 1, 2, 3])),
        prop::collection::vec(key_value(), 0..3),
    )
        .prop_map(|(trace, span_no, start_ms, ms, code, attributes)| {
            let start = 1_700_000_000_000_000_000u64 + start_ms * 1_000_000;
            Span {
                trace_id: trace_ids()[trace].clone(),
                span_id: vec![span_no; 8],
                name: format!("op-{span_no}"),
                start_time_unix_nano: if start_ms == 0 { 0 } else { start },
                end_time_unix_nano: start + ms * 1_000_000,
                attributes,
                status: code.map(|code| Status { code, message: String::new() }),
                ..Default::default()
            }
        })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = prop::option::of((prop::sample::select(vec!["lib", "http"]), prop::sample::select(vec!["", "1.0"])))
        .prop_map(|s| {
            s.map(|(name, version)| InstrumentationScope {
                name: name.into(),
                version: version.into(),
                ..Default::default()
            })
        });
    let scope_spans = (scope, prop::collection::vec(span(), 0..6), prop::sample::select(vec!["", "s1"]))
        .prop_map(|(scope, spans, url)| ScopeSpans { scope, spans, schema_url: url.into() });
    let resource = prop::option::of(prop::collection::vec(
        (prop::sample::select(vec!["service.name", "env"]), prop::sample::select(vec!["cart", "prod"])),
        0..3,
    ))
    .prop_map(|attrs| {
        attrs.map(|attrs| Resource {
            attributes: attrs
                .into_iter()
                .map(|(k, v)| KeyValue {
                    key: k.into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    });
    let resource_spans = (resource, prop::collection::vec(scope_spans, 0..3), prop::sample::select(vec!["", "r1"]))
        .prop_map(|(resource, scope_spans, url)| ResourceSpans { resource, scope_spans, schema_url: url.into() });
    prop::collection::vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn field(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Field 99 (unknown everywhere), varint 5.
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x05];

/// The request encoded unusually; `span_quirks`: spans too (their encoded length then differs
/// from prost's, so byte limits count differently: those cases run without byte limits).
fn encode_unusually(req: &ExportTraceServiceRequest, span_quirks: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, rs) in req.resource_spans.iter().enumerate() {
        let mut resource = Vec::new();
        if let Some(res) = &rs.resource {
            let at = res.attributes.len() / 2;
            let first = Resource { attributes: res.attributes[..at].to_vec(), ..Default::default() };
            let rest = Resource { attributes: res.attributes[at..].to_vec(), ..res.clone() };
            field(&mut resource, 1, &first.encode_to_vec());
            field(&mut resource, 1, &rest.encode_to_vec());
        }
        let mut rest = Vec::new();
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            let mut body = Vec::new();
            for (k, span) in ss.spans.iter().enumerate() {
                let mut s = span.encode_to_vec();
                if span_quirks {
                    match k % 4 {
                        0 => s.extend_from_slice(&UNKNOWN),
                        1 => {
                            // A second status: its code wins, the message merges.
                            let status = Status { code: 2, message: String::new() };
                            field(&mut s, 15, &status.encode_to_vec());
                        }
                        2 => {
                            // An attribute whose value comes twice: the int wins.
                            let mut kv = Vec::new();
                            field(&mut kv, 1, b"code");
                            let first = AnyValue { value: Some(any_value::Value::StringValue("/a".into())) };
                            field(&mut kv, 2, &first.encode_to_vec());
                            let second = AnyValue { value: Some(any_value::Value::IntValue(503)) };
                            field(&mut kv, 2, &second.encode_to_vec());
                            field(&mut s, 9, &kv);
                        }
                        _ => {}
                    }
                }
                field(&mut body, 2, &s);
            }
            if let Some(scope) = &ss.scope {
                // The scope after the spans, split in two.
                let first = InstrumentationScope { name: scope.name.clone(), ..Default::default() };
                let rest = InstrumentationScope { name: String::new(), ..scope.clone() };
                field(&mut body, 1, &first.encode_to_vec());
                field(&mut body, 1, &rest.encode_to_vec());
            }
            if !ss.schema_url.is_empty() {
                field(&mut body, 3, ss.schema_url.as_bytes());
            }
            if j % 2 == 1 {
                body.extend_from_slice(&UNKNOWN);
            }
            field(&mut rest, 2, &body);
        }
        if !rs.schema_url.is_empty() {
            field(&mut rest, 3, rs.schema_url.as_bytes());
        }
        let body = if i % 2 == 0 { [rest, resource].concat() } else { [resource, rest].concat() };
        field(&mut out, 1, &body);
    }
    out
}

#[derive(Debug, Clone)]
struct Step {
    request: ExportTraceServiceRequest,
    unusual: bool,
    /// Time passed before the request.
    advance_ms: u64,
    decide_due: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (request(), any::<bool>(), 0u64..700, any::<bool>()).prop_map(|(request, unusual, advance_ms, decide_due)| Step {
        request,
        unusual,
        advance_ms,
        decide_due,
    })
}

fn decoded(out: &Outcome) -> Option<ExportTraceServiceRequest> {
    out.export.as_ref().map(|r| {
        let req = ExportTraceServiceRequest::decode(r.as_bytes().clone()).expect("kept spans decode");
        assert_eq!(r.spans(), lgtm_pipeline::receiver::span_count(&req));
        // What the exporter does next: check and rewrite in the wire format.
        ValidTraces::parse(r.as_bytes().clone()).expect("kept spans check");
        req
    })
}

fn assert_same(ours: &Outcome, theirs: RefOutcome, what: &str) {
    assert_eq!(ours.decided, theirs.decided, "{what}: decisions");
    assert_eq!(ours.late, theirs.late, "{what}: late spans");
    assert_eq!(decoded(ours), theirs.export, "{what}: kept spans");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kept_spans_decode_to_what_the_decoding_buffer_kept(
        steps in prop::collection::vec(step(), 1..8),
        set in 0..policy_sets().len(),
        max_traces in 1usize..12,
        max_buffer in prop::option::of(300usize..3000),
        max_trace_spans in 1u64..10,
        decision_cache in 1usize..16,
        span_quirks in any::<bool>(),
    ) {
        let policies = &policy_sets()[set];
        let byte_limited = max_buffer.filter(|_| !span_quirks);
        let limits = Limits {
            decision_wait: WAIT,
            max_traces,
            max_buffer_bytes: byte_limited.unwrap_or(usize::MAX),
            max_trace_spans,
            max_trace_bytes: byte_limited.map_or(usize::MAX, |b| b / 2),
            decision_cache,
        };
        let mut ours = Buffer::new(Policies::compile(policies).unwrap(), limits.clone());
        let mut theirs = RefBuffer::new(Policies::compile(policies).unwrap(), limits);
        let mut now = Instant::now();
        // Spans encoded unusually count their own length, not prost's.
        let mut quirky = false;
        for (i, step) in steps.iter().enumerate() {
            now += Duration::from_millis(step.advance_ms);
            if step.decide_due {
                assert_same(&ours.decide_due(now), theirs.decide_due(now), &format!("step {i} decide_due"));
            }
            let bytes = if step.unusual {
                encode_unusually(&step.request, span_quirks)
            } else {
                step.request.encode_to_vec()
            };
            let theirs_request = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            let valid = ValidTraces::parse(Bytes::from(bytes)).expect("checks");
            assert_same(&ours.ingest(valid, now), theirs.ingest(theirs_request, now), &format!("step {i} ingest"));
            let counts = (ours.buffered_traces(), ours.buffered_spans(), ours.buffered_bytes());
            let (t, s, b) = theirs.buffered();
            prop_assert_eq!((counts.0, counts.1), (t, s));
            quirky |= span_quirks && step.unusual;
            if !quirky {
                prop_assert_eq!(counts.2, b);
            }
        }
        assert_same(&ours.decide_all(now), theirs.decide_all(now), "decide_all");
    }

    /// The span read from the wire is the decoded span's trace ID, times and conditions.
    #[test]
    fn read_span_agrees_with_the_decoded_span(span in span(), set in 0..policy_sets().len(), quirk in 0usize..4) {
        let p = Policies::compile(&policy_sets()[set]).unwrap();
        let mut bytes = span.encode_to_vec();
        let mut quirky = span.clone();
        match quirk {
            0 => bytes.extend_from_slice(&UNKNOWN),
            1 => {
                // A status after the first one merges into it.
                field(&mut bytes, 15, &Status { code: 1, message: "m".into() }.encode_to_vec());
                quirky = Span::decode(&bytes[..]).unwrap();
            }
            2 => {
                // The trace ID twice: the last wins.
                field(&mut bytes, 1, &[3; 16]);
                quirky = Span::decode(&bytes[..]).unwrap();
            }
            _ => {}
        }
        let read = p.read_span(&bytes);
        prop_assert_eq!(read.trace_id, &quirky.trace_id[..]);
        prop_assert_eq!((read.start, read.end), (quirky.start_time_unix_nano, quirky.end_time_unix_nano));
        prop_assert_eq!(read.matched, p.span_mask(&quirky));
    }
}
