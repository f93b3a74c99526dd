//! The walker against prost: same acceptance, same span count, and the byte-level rewrite equal to
//! decode + add the attribute + encode, on arbitrary requests encoded in the unusual ways the
//! wire format allows (a resource split over several occurrences, fields out of order, unknown
//! fields, a `KeyValue` whose key comes twice).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;

use super::*;

const CLUSTER_KEY: &str = "k8s.cluster.name";

/// What `TracesSink` did before this module: decode, add where missing, encode.
fn decode_modify(bytes: &[u8], value: &str) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::decode(bytes).expect("valid");
    add_resource_attribute(&mut req, CLUSTER_KEY, value);
    req
}

fn field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    put_field(out, tag, body.len());
    out.extend_from_slice(body);
}

/// How one `ResourceSpans` is encoded.
#[derive(Debug, Clone)]
struct Quirks {
    /// Split the resource's attributes into two occurrences of field 1 at this index.
    split_resource: Option<usize>,
    /// One more resource occurrence with an attribute whose key field comes twice; `true`: the
    /// cluster key last (it counts), `false`: first (it does not).
    key_twice: Option<bool>,
    /// The resource after the scope spans.
    resource_last: bool,
    unknown_field: bool,
}

fn quirks() -> impl Strategy<Value = Quirks> {
    (proptest::option::of(0usize..5), proptest::option::of(any::<bool>()), any::<bool>(), any::<bool>()).prop_map(
        |(split_resource, key_twice, resource_last, unknown_field)| Quirks {
            split_resource,
            key_twice,
            resource_last,
            unknown_field,
        },
    )
}

fn encode_unusually(req: &ExportTraceServiceRequest, quirks: &[Quirks], top_unknown: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (rs, q) in req.resource_spans.iter().zip(quirks.iter().cycle()) {
        let mut resource = Vec::new();
        match (&rs.resource, q.split_resource) {
            (Some(res), Some(at)) => {
                let at = at.min(res.attributes.len());
                let first = Resource { attributes: res.attributes[..at].to_vec(), ..Default::default() };
                let rest = Resource { attributes: res.attributes[at..].to_vec(), ..res.clone() };
                field(&mut resource, 1, &first.encode_to_vec());
                field(&mut resource, 1, &rest.encode_to_vec());
            }
            (Some(res), None) => field(&mut resource, 1, &res.encode_to_vec()),
            (None, _) => {}
        }
        if let Some(cluster_last) = q.key_twice {
            let (first, last) = if cluster_last { ("other", CLUSTER_KEY) } else { (CLUSTER_KEY, "other") };
            let mut kv = Vec::new();
            field(&mut kv, 1, first.as_bytes());
            field(&mut kv, 1, last.as_bytes());
            let mut res = Vec::new();
            field(&mut res, 1, &kv);
            field(&mut resource, 1, &res);
        }
        let mut rest = Vec::new();
        for ss in &rs.scope_spans {
            field(&mut rest, 2, &ss.encode_to_vec());
        }
        if !rs.schema_url.is_empty() {
            field(&mut rest, 3, rs.schema_url.as_bytes());
        }
        if q.unknown_field {
            // Field 99, varint 5.
            rest.extend_from_slice(&[0x98, 0x06, 0x05]);
        }
        let body = if q.resource_last { [rest, resource].concat() } else { [resource, rest].concat() };
        field(&mut out, 1, &body);
    }
    if top_unknown {
        // Field 7, length-delimited, 2 bytes.
        out.extend_from_slice(&[0x3a, 0x02, 0xff, 0x00]);
    }
    out
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        ".{0,8}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()).prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) }),
            proptest::collection::vec(("[a-z]{0,4}", inner), 0..3).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, v)| KeyValue { key, value: Some(v), ..Default::default() })
                        .collect(),
                })),
            }),
        ]
    })
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    let key = prop_oneof![Just(CLUSTER_KEY.to_string()), Just("service.name".to_string()), "[a-z.]{0,10}"];
    (key, proptest::option::of(any_value())).prop_map(|(key, value)| KeyValue { key, value, ..Default::default() })
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(key_value(), 0..max)
}

fn span() -> impl Strategy<Value = Span> {
    (
        proptest::collection::vec(any::<u8>(), 0..17),
        proptest::collection::vec(any::<u8>(), 0..9),
        ".{0,8}",
        0i32..6,
        any::<(u64, u64, u32)>(),
        attributes(3),
        proptest::collection::vec((any::<u64>(), "[a-z]{0,5}", attributes(2)), 0..2),
        proptest::collection::vec((proptest::collection::vec(any::<u8>(), 16), attributes(2)), 0..2),
        proptest::option::of((".{0,5}", 0i32..3)),
    )
        .prop_map(|(trace_id, span_id, name, kind, (start, end, flags), attributes, events, links, status)| Span {
            trace_id,
            span_id,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            flags,
            attributes,
            events: events
                .into_iter()
                .map(|(time_unix_nano, name, attributes)| Event {
                    time_unix_nano,
                    name,
                    attributes,
                    ..Default::default()
                })
                .collect(),
            links: links
                .into_iter()
                .map(|(trace_id, attributes)| Link { trace_id, attributes, ..Default::default() })
                .collect(),
            status: status.map(|(message, code)| Status { message, code }),
            ..Default::default()
        })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope =
        proptest::option::of(("[a-z]{0,6}", "[0-9.]{0,4}", attributes(2)).prop_map(|(name, version, attributes)| {
            InstrumentationScope { name, version, attributes, dropped_attributes_count: 0 }
        }));
    let scope_spans = (scope, proptest::collection::vec(span(), 0..4), "[a-z:/]{0,6}")
        .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
    let resource = proptest::option::of((attributes(4), 0u32..3).prop_map(|(attributes, dropped)| Resource {
        attributes,
        dropped_attributes_count: dropped,
        ..Default::default()
    }));
    let resource_spans = (resource, proptest::collection::vec(scope_spans, 0..3), "[a-z:/]{0,6}")
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
    proptest::collection::vec(resource_spans, 0..4)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// An encoding of an arbitrary request, possibly unusual.
fn encoded_request() -> impl Strategy<Value = Vec<u8>> {
    (request(), proptest::collection::vec(quirks(), 1..4), any::<bool>(), any::<bool>()).prop_map(
        |(req, quirks, plain, top_unknown)| {
            if plain {
                req.encode_to_vec()
            } else {
                encode_unusually(&req, &quirks, top_unknown)
            }
        },
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Set(at, b) if !bytes.is_empty() => bytes[at % n] = b,
            Mutation::Truncate(at) => bytes.truncate(at % n),
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Remove(at) if !bytes.is_empty() => drop(bytes.remove(at % n)),
            _ => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

/// Parse and prost agree on `bytes`: both refuse, or both take it with the same number of spans.
fn assert_same_acceptance(bytes: &[u8]) {
    let ours = ValidTraces::parse(Bytes::copy_from_slice(bytes));
    let prost = ExportTraceServiceRequest::decode(bytes);
    match (&ours, &prost) {
        (Ok(valid), Ok(req)) => assert_eq!(valid.spans(), crate::receiver::span_count(req)),
        (Err(_), Err(_)) => {}
        _ => panic!("parse: {ours:?}\nprost: {prost:?}\nbytes: {bytes:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rewrite_decodes_as_decode_add_encode(bytes in encoded_request(), value in ".{0,12}") {
        let valid = ValidTraces::parse(Bytes::from(bytes.clone())).expect("prost's own encoding is valid");
        prop_assert_eq!(valid.spans(), crate::receiver::span_count(&ExportTraceServiceRequest::decode(&bytes[..]).unwrap()));
        let rewritten = valid.with_resource_attribute(&EncodedAttribute::string(CLUSTER_KEY, &value));
        let ours = ExportTraceServiceRequest::decode(&rewritten[..]).expect("the rewrite decodes");
        prop_assert_eq!(ours, decode_modify(&bytes, &value));
        // Still valid, and a second pass adds nothing and copies nothing.
        let again = ValidTraces::parse(rewritten.clone()).expect("the rewrite is valid");
        let twice = again.with_resource_attribute(&EncodedAttribute::string(CLUSTER_KEY, "x"));
        prop_assert_eq!(&twice, &rewritten);
        prop_assert_eq!(twice.as_ptr(), rewritten.as_ptr());
    }

    /// The parts the Tempo exporter sends are the rewrite without copying the request: every
    /// part is a slice of it, the attribute, or a new length prefix (two at most, 12 bytes);
    /// their length is what `resource_attribute_growth` says.
    #[test]
    fn attribute_parts_are_the_rewrite_and_copy_nothing(bytes in encoded_request(), value in ".{0,12}") {
        let request = Bytes::from(bytes.clone());
        let attribute = EncodedAttribute::string(CLUSTER_KEY, &value);
        let mut parts = vec![Bytes::from_static(b"before")];
        let len = resource_attribute_parts(&request, &attribute, &mut parts);
        prop_assert_eq!(&parts[0][..], b"before", "parts are appended");
        let parts = &parts[1..];
        prop_assert_eq!(len, parts.iter().map(Bytes::len).sum::<usize>());
        prop_assert_eq!(len, request.len() + resource_attribute_growth(&request, &attribute));
        let joined = parts.concat();
        let ours = ExportTraceServiceRequest::decode(&joined[..]).expect("the parts decode");
        prop_assert_eq!(ours, decode_modify(&bytes, &value));
        let inside = |p: &Bytes| {
            let (start, end) = (request.as_ptr() as usize, request.as_ptr() as usize + request.len());
            p.as_ptr() as usize >= start && p.as_ptr() as usize + p.len() <= end
        };
        for p in parts {
            prop_assert!(
                inside(p) || p.as_ptr() == attribute.field.as_ptr() || p.len() <= 12,
                "a part of {} bytes is a copy", p.len()
            );
        }
        // Every resource with the key: the request itself, one part.
        let mut again = Vec::new();
        let joined = Bytes::from(joined);
        resource_attribute_parts(&joined, &EncodedAttribute::string(CLUSTER_KEY, "x"), &mut again);
        prop_assert_eq!(again.len(), 1);
        prop_assert_eq!(again[0].as_ptr(), joined.as_ptr());
        prop_assert_eq!(resource_attribute_growth(&joined, &attribute), 0);
    }

    /// The fields walker reads a checked request whole: its fields' bytes, one after the other,
    /// are the message, down to every span; and each span's fields give prost's trace ID and times.
    #[test]
    fn fields_cover_every_byte_down_to_the_spans(bytes in encoded_request()) {
        use super::fields::{fields, Value};
        fn covers(message: &[u8]) -> bool {
            fields(message).map(|f| f.raw.len()).sum::<usize>() == message.len()
        }
        let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let decoded_spans = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans);
        let mut spans = Vec::new();
        prop_assert!(covers(&bytes));
        for rs in fields(&bytes) {
            let (1, Value::LengthDelimited(rs)) = (rs.tag, rs.value) else { continue };
            prop_assert!(covers(rs));
            for ss in fields(rs) {
                let (2, Value::LengthDelimited(ss)) = (ss.tag, ss.value) else { continue };
                prop_assert!(covers(ss));
                for span in fields(ss) {
                    let (2, Value::LengthDelimited(span)) = (span.tag, span.value) else { continue };
                    prop_assert!(covers(span));
                    let (mut id, mut start, mut end): (&[u8], u64, u64) = (&[], 0, 0);
                    for f in fields(span) {
                        match (f.tag, f.value) {
                            (1, Value::LengthDelimited(v)) => id = v,
                            (7, Value::Fixed64(v)) => start = v,
                            (8, Value::Fixed64(v)) => end = v,
                            _ => {}
                        }
                    }
                    spans.push((id.to_vec(), start, end));
                }
            }
        }
        let want: Vec<_> =
            decoded_spans.map(|s| (s.trace_id.clone(), s.start_time_unix_nano, s.end_time_unix_nano)).collect();
        prop_assert_eq!(spans, want);
    }

    #[test]
    fn parse_refuses_exactly_what_prost_refuses(
        bytes in encoded_request(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        assert_same_acceptance(&mutate(bytes, &mutations));
    }

    #[test]
    fn parse_agrees_with_prost_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        assert_same_acceptance(&bytes);
    }
}

/// An attribute whose value is `depth` arrays nested in each other.
fn nested(depth: usize) -> Vec<u8> {
    let mut value = AnyValue { value: Some(any_value::Value::IntValue(1)) };
    for _ in 0..depth {
        value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
    }
    let span = Span {
        attributes: vec![KeyValue { key: "k".into(), value: Some(value), ..Default::default() }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn nesting_is_refused_where_prost_refuses_it() {
    let mut refused_from = None;
    for depth in 40..60 {
        let bytes = nested(depth);
        assert_same_acceptance(&bytes);
        if refused_from.is_none() && ExportTraceServiceRequest::decode(&bytes[..]).is_err() {
            refused_from = Some(depth);
        }
    }
    assert!(refused_from.is_some(), "the range crosses prost's recursion limit");
}

#[test]
fn an_error_says_where() {
    let mut bytes = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { name: "ok".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let at = bytes.windows(2).position(|w| w == b"ok").unwrap();
    bytes[at] = 0xff;
    let err = ValidTraces::parse(Bytes::from(bytes)).unwrap_err().to_string();
    assert!(err.contains("ExportTraceServiceRequest.1") && err.contains("Span.5") && err.contains("UTF-8"), "{err}");
}

#[test]
fn the_clients_attribute_wins() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: CLUSTER_KEY.into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue("theirs".into())) }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ResourceSpans::default(),
        ],
    };
    let valid = ValidTraces::parse(Bytes::from(req.encode_to_vec())).unwrap();
    let out = ExportTraceServiceRequest::decode(
        &valid.with_resource_attribute(&EncodedAttribute::string(CLUSTER_KEY, "ours"))[..],
    )
    .unwrap();
    let cluster = |rs: &ResourceSpans| -> Vec<String> {
        rs.resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .filter(|kv| kv.key == CLUSTER_KEY)
            .map(|kv| format!("{:?}", kv.value))
            .collect()
    };
    assert_eq!(cluster(&out.resource_spans[0]).len(), 1);
    assert!(cluster(&out.resource_spans[0])[0].contains("theirs"));
    assert!(cluster(&out.resource_spans[1])[0].contains("ours"));
}
