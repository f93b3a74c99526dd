use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use proptest::prelude::*;
use prost::Message;

use super::model::{trace_id, Batch, Log, Process, RefType, Span, SpanRef, Tag, TagValue};
use super::{direct, encode, thrift, translate};

fn sample() -> Batch {
    let tid = trace_id(0x0102030405060708, 0x1112131415161718);
    let other = trace_id(0, 42);
    Batch {
        process: Process {
            service_name: "tns-app".into(),
            tags: vec![
                Tag::new("hostname", TagValue::Str("node-1".into())),
                Tag::new("jaeger.version", TagValue::Str("Go-2.30.0".into())),
                Tag::new("ip", TagValue::Long(167772161)),
            ],
        },
        spans: vec![
            Span {
                trace_id: tid,
                span_id: 7i64.to_be_bytes(),
                parent_span_id: 5i64.to_be_bytes(),
                operation_name: "GET /".into(),
                references: vec![
                    SpanRef { ref_type: RefType::ChildOf, trace_id: tid, span_id: 5i64.to_be_bytes() },
                    SpanRef { ref_type: RefType::FollowsFrom, trace_id: other, span_id: 9i64.to_be_bytes() },
                ],
                flags: 1,
                start_unix_nano: 1_700_000_000_123_456_000,
                duration_nano: 2_500_000,
                tags: vec![
                    Tag::new("span.kind", TagValue::Str("server".into())),
                    Tag::new("error", TagValue::Bool(true)),
                    Tag::new("http.status_code", TagValue::Long(500)),
                    Tag::new("ratio", TagValue::Double(0.5)),
                    Tag::new("sampled", TagValue::Bool(false)),
                    Tag::new("blob", TagValue::Binary(vec![0, 1, 2])),
                    Tag::new("otel.library.name", TagValue::Str("tns".into())),
                ],
                logs: vec![Log {
                    time_unix_nano: 1_700_000_000_124_000_000,
                    fields: vec![
                        Tag::new("event", TagValue::Str("retry".into())),
                        Tag::new("attempt", TagValue::Long(2)),
                    ],
                }],
                process: None,
            },
            Span {
                trace_id: tid,
                span_id: 8i64.to_be_bytes(),
                operation_name: "db".into(),
                references: vec![SpanRef { ref_type: RefType::ChildOf, trace_id: tid, span_id: 7i64.to_be_bytes() }],
                start_unix_nano: 1_700_000_000_124_000_000,
                duration_nano: 1_000,
                tags: vec![
                    Tag::new("span.kind", TagValue::Str("client".into())),
                    Tag::new("otel.status_code", TagValue::Str("ERROR".into())),
                    Tag::new("otel.status_description", TagValue::Str("timeout".into())),
                ],
                ..Span::default()
            },
        ],
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

#[test]
fn compact_and_binary_emit_batch_decode_to_what_was_encoded() {
    let batch = sample();
    assert_eq!(thrift::decode_compact_emit_batch(&encode::compact_emit_batch(&batch)).unwrap(), batch);
    assert_eq!(thrift::decode_binary_emit_batch(&encode::binary_emit_batch(&batch)).unwrap(), batch);
    assert_eq!(thrift::decode_binary_batch(&encode::binary_batch(&batch)).unwrap(), batch);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let batch = sample();
    for bytes in [encode::compact_emit_batch(&batch), encode::binary_emit_batch(&batch)] {
        for cut in 0..bytes.len() {
            let compact = thrift::decode_compact_emit_batch(&bytes[..cut]);
            let binary = thrift::decode_binary_emit_batch(&bytes[..cut]);
            assert!(compact.is_err() || binary.is_err(), "a prefix of {cut} bytes decoded in both protocols");
        }
    }
}

#[test]
fn a_huge_declared_length_is_refused_without_allocating() {
    // Binary protocol: a string claiming 2 GiB.
    let mut bytes = (0x8001_0000u32 | 4).to_be_bytes().to_vec();
    bytes.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    assert!(thrift::decode_binary_emit_batch(&bytes).is_err());
    // Compact: a list claiming 2^40 elements.
    let mut bytes = vec![0x82, 0x81, 0x00, 0x09];
    bytes.extend_from_slice(b"emitBatch");
    bytes.extend_from_slice(&[0x1c, 0x1c, 0x18, 0x01, b'a', 0x00, 0x19, 0xfc, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    assert!(thrift::decode_compact_emit_batch(&bytes).is_err());
}

#[test]
fn another_call_than_emit_batch_is_refused() {
    let mut bytes = vec![0x82, 0x81, 0x00, 0x0e];
    bytes.extend_from_slice(b"emitZipkinBatch");
    assert!(thrift::decode_compact_emit_batch(&bytes).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = thrift::decode_compact_emit_batch(&bytes);
        let _ = thrift::decode_binary_emit_batch(&bytes);
        let _ = thrift::decode_binary_batch(&bytes);
    }

    #[test]
    fn flipped_bytes_of_a_valid_datagram_never_panic(i in 0usize..4096, b in any::<u8>()) {
        let mut bytes = encode::compact_emit_batch(&sample());
        let n = bytes.len();
        bytes[i % n] = b;
        let _ = thrift::decode_compact_emit_batch(&bytes);
    }
}

#[test]
fn process_becomes_the_resource_with_service_name() {
    let req = translate::to_otlp(sample());
    assert_eq!(req.resource_spans.len(), 1);
    let resource = req.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(attr(&resource.attributes, "service.name"), Some(&Value::StringValue("tns-app".into())));
    assert_eq!(attr(&resource.attributes, "hostname"), Some(&Value::StringValue("node-1".into())));
    assert_eq!(attr(&resource.attributes, "ip"), Some(&Value::IntValue(167772161)));
}

#[test]
fn spans_carry_ids_kind_status_times_attributes_events_parent_and_links() {
    let req = translate::to_otlp(sample());
    let scopes = &req.resource_spans[0].scope_spans;
    assert_eq!(scopes.len(), 2, "grouped by instrumentation scope");
    let server = &scopes[0].spans[0];
    assert_eq!(scopes[0].scope.as_ref().unwrap().name, "tns");
    assert_eq!(server.trace_id, [1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    assert_eq!(server.span_id, 7i64.to_be_bytes());
    assert_eq!(server.parent_span_id, 5i64.to_be_bytes());
    assert_eq!(server.kind, 2);
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_123_456_000);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_125_956_000);
    let status = server.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, ""), "error=true is ERROR");
    assert_eq!(attr(&server.attributes, "http.status_code"), Some(&Value::IntValue(500)));
    assert_eq!(attr(&server.attributes, "ratio"), Some(&Value::DoubleValue(0.5)));
    assert_eq!(attr(&server.attributes, "sampled"), Some(&Value::BoolValue(false)));
    assert_eq!(attr(&server.attributes, "blob"), Some(&Value::BytesValue(vec![0, 1, 2])));
    for gone in ["span.kind", "error", "otel.library.name"] {
        assert!(attr(&server.attributes, gone).is_none(), "{gone}");
    }
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].name, "retry");
    assert_eq!(server.events[0].time_unix_nano, 1_700_000_000_124_000_000);
    assert_eq!(attr(&server.events[0].attributes, "attempt"), Some(&Value::IntValue(2)));
    assert_eq!(server.links.len(), 1, "the parent reference is not also a link");
    assert_eq!(server.links[0].span_id, 9i64.to_be_bytes());
    assert_eq!(
        attr(&server.links[0].attributes, "opentracing.ref_type"),
        Some(&Value::StringValue("follows_from".into()))
    );

    let client = &scopes[1].spans[0];
    assert_eq!(client.parent_span_id, 7i64.to_be_bytes(), "first CHILD_OF reference is the parent");
    assert!(client.links.is_empty());
    assert_eq!(client.kind, 3);
    let status = client.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "timeout"));
}

#[test]
fn a_root_span_has_no_parent_and_no_status() {
    let mut batch = sample();
    batch.spans.truncate(1);
    let s = &mut batch.spans[0];
    s.parent_span_id = [0; 8];
    s.references.clear();
    s.tags.clear();
    let req = translate::to_otlp(batch);
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert!(span.parent_span_id.is_empty());
    assert!(span.status.is_none());
    assert_eq!(span.kind, 0);
}

#[test]
fn a_body_read_in_parts_gives_every_span_once_in_order_and_refuses_what_the_whole_read_does() {
    let one = sample();
    let mut batch = Batch { process: one.process.clone(), spans: Vec::new() };
    for i in 0..50u8 {
        let mut span = one.spans[0].clone();
        span.span_id = [i; 8];
        batch.spans.push(span);
    }
    let body = encode::binary_batch(&batch);
    for part_bytes in [0, 100, 1000, usize::MAX] {
        let mut parts = Vec::new();
        thrift::binary_batch_in_parts(&body, part_bytes, |process, spans| {
            assert_eq!(*process, batch.process);
            parts.push(spans);
            true
        })
        .unwrap();
        let expected_parts = match part_bytes {
            0 => 50,
            usize::MAX => 1,
            _ => parts.len(),
        };
        assert_eq!(parts.len(), expected_parts, "{part_bytes}");
        assert!(part_bytes == usize::MAX || parts.len() > 1, "{part_bytes}: {}", parts.len());
        assert_eq!(parts.concat(), batch.spans, "{part_bytes}");
    }
    // Stopping after the first part reads no further.
    let mut calls = 0;
    thrift::binary_batch_in_parts(&body, 0, |_, _| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(calls, 1);
    // Every truncation (of a 3-span body) is refused as by the whole read.
    let body = encode::binary_batch(&Batch { process: batch.process.clone(), spans: batch.spans[..3].to_vec() });
    for cut in 0..body.len() {
        assert_eq!(
            thrift::binary_batch_in_parts(&body[..cut], 0, |_, _| true).is_err(),
            thrift::decode_binary_batch(&body[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn spans_with_their_own_process_are_grouped_by_it_in_order_of_first_appearance() {
    let own = |name: &str| Some(Process { service_name: name.into(), tags: vec![] });
    let span = |id: i64, process| Span {
        trace_id: trace_id(0, 1),
        span_id: id.to_be_bytes(),
        operation_name: format!("op-{id}"),
        process,
        ..Span::default()
    };
    let batch = Batch {
        process: Process { service_name: "batch".into(), tags: vec![] },
        spans: vec![span(1, own("p1")), span(2, None), span(3, own("batch")), span(4, own("p1")), span(5, own("p2"))],
    };
    let got: Vec<(String, Vec<String>)> = translate::to_otlp(batch)
        .resource_spans
        .iter()
        .map(|rs| {
            let service = attr(&rs.resource.as_ref().unwrap().attributes, "service.name").cloned();
            let Some(Value::StringValue(service)) = service else { panic!("no service.name") };
            (service, rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(|s| s.name.clone()).collect())
        })
        .collect();
    let want = |s: &str, names: &[&str]| (s.to_string(), names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(got, [want("p1", &["op-1", "op-4"]), want("batch", &["op-2", "op-3"]), want("p2", &["op-5"])]);
}

#[test]
fn span_kind_is_read_whatever_its_case_and_unknown_kinds_are_unspecified() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let kinds = ["Producer", "CONSUMER", "internal", "bogus", ""];
    let batch = Batch {
        process: Process { service_name: "svc".into(), tags: vec![] },
        spans: kinds
            .iter()
            .enumerate()
            .map(|(i, k)| Span {
                trace_id: trace_id(0, 1),
                span_id: (i as i64 + 1).to_be_bytes(),
                tags: vec![Tag::new("span.kind", TagValue::Str(k.to_string()))],
                ..Span::default()
            })
            .collect(),
    };
    let got: Vec<i32> =
        translate::to_otlp(batch).resource_spans[0].scope_spans[0].spans.iter().map(|s| s.kind).collect();
    let want =
        [SpanKind::Producer, SpanKind::Consumer, SpanKind::Internal, SpanKind::Unspecified, SpanKind::Unspecified];
    assert_eq!(got, want.map(|k| k as i32));
    let long = Batch {
        process: Process::default(),
        spans: vec![Span { tags: vec![Tag::new("span.kind", TagValue::Long(1))], ..Span::default() }],
    };
    assert_eq!(translate::to_otlp(long).resource_spans[0].scope_spans[0].spans[0].kind, SpanKind::Unspecified as i32);
}

/// What the UDP readers handed on before [`super::direct`]: each datagram decoded and converted
/// on its own, then merged into one request (a resource already there, or a scope in it, takes
/// the spans).
fn merged_by_structs(datagrams: &[Vec<u8>], compact: bool) -> (ExportTraceServiceRequest, usize) {
    let mut request = ExportTraceServiceRequest::default();
    let mut spans = 0;
    for d in datagrams {
        let decoded = if compact { thrift::decode_compact_emit_batch(d) } else { thrift::decode_binary_emit_batch(d) };
        let Ok(batch) = decoded else { continue };
        spans += batch.spans.len();
        for rs in translate::to_otlp(batch).resource_spans {
            let same = request
                .resource_spans
                .iter_mut()
                .rev()
                .find(|have| have.resource == rs.resource && have.schema_url == rs.schema_url);
            match same {
                Some(have) => {
                    for ss in rs.scope_spans {
                        match have.scope_spans.iter_mut().rev().find(|s| s.scope == ss.scope) {
                            Some(s) => s.spans.extend(ss.spans),
                            None => have.scope_spans.push(ss),
                        }
                    }
                }
                None => request.resource_spans.push(rs),
            }
        }
    }
    (request, spans)
}

/// The datagrams through [`direct::RequestBuilder`]: the request, its span count, and which
/// datagrams were refused.
fn merged_directly(datagrams: &[Vec<u8>], compact: bool) -> (Vec<u8>, usize, Vec<bool>) {
    let protocol = if compact { direct::Thrift::Compact } else { direct::Thrift::Binary };
    let mut builder = direct::RequestBuilder::new();
    let refused = datagrams.iter().map(|d| builder.add(d, protocol).is_err()).collect();
    let (bytes, spans) = builder.finish();
    (bytes, spans, refused)
}

/// Both paths agree on `datagrams`: the same datagrams refused, and the request encoded by
/// prost from the structs is the request written directly, byte for byte.
fn assert_same_request(datagrams: &[Vec<u8>], compact: bool) {
    let (want, want_spans) = merged_by_structs(datagrams, compact);
    let (got, got_spans, refused) = merged_directly(datagrams, compact);
    for (d, refused) in datagrams.iter().zip(refused) {
        let decoded = if compact { thrift::decode_compact_emit_batch(d) } else { thrift::decode_binary_emit_batch(d) };
        assert_eq!(refused, decoded.is_err(), "refused by one path only: {decoded:?}");
    }
    assert_eq!(got_spans, want_spans);
    if got != want.encode_to_vec() {
        // Decoded, the difference reads better.
        assert_eq!(ExportTraceServiceRequest::decode(&got[..]).unwrap(), want);
        panic!("same request, different bytes");
    }
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("server".to_string()),
        Just("CLIENT".to_string()),
        Just("producer".to_string()),
        Just("true".to_string()),
        Just("True".to_string()),
        Just("ERROR".to_string()),
        Just("ok".to_string()),
        Just("2".to_string()),
        Just("1".to_string()),
        "[a-zé€ ]{0,12}",
        ".{0,300}",
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("span.kind".to_string()),
        Just("otel.scope.name".to_string()),
        Just("otel.library.name".to_string()),
        Just("otel.scope.version".to_string()),
        Just("otel.library.version".to_string()),
        Just("w3c.tracestate".to_string()),
        Just("otel.status_code".to_string()),
        Just("otel.status_description".to_string()),
        Just("error".to_string()),
        Just("event".to_string()),
        Just("message".to_string()),
        Just("service.name".to_string()),
        Just(String::new()),
        "[a-z.]{1,20}",
    ]
}

fn any_tag() -> impl Strategy<Value = Tag> {
    let value = prop_oneof![
        any_text().prop_map(TagValue::Str),
        // Finite, and 0.0 for -0.0: resources are merged by their encoding (see `direct`).
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| TagValue::Double(x + 0.0)),
        any::<bool>().prop_map(TagValue::Bool),
        prop_oneof![Just(1i64), Just(2), any::<i64>()].prop_map(TagValue::Long),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(TagValue::Binary),
    ];
    (any_key(), value).prop_map(|(key, value)| Tag { key, value })
}

fn any_process() -> impl Strategy<Value = Process> {
    (prop_oneof![Just(String::new()), "[a-z-]{1,10}"], proptest::collection::vec(any_tag(), 0..4))
        .prop_map(|(service_name, tags)| Process { service_name, tags })
}

fn any_span() -> impl Strategy<Value = Span> {
    let ids = (
        any::<i64>(),
        prop_oneof![Just(0i64), any::<i64>()],
        any::<i64>(),
        prop_oneof![Just(0i64), Just(5), any::<i64>()],
    );
    let reference = (any::<bool>(), any::<bool>(), prop_oneof![Just(5i64), any::<i64>()])
        .prop_map(|(child_of, same, id)| (child_of, same, id));
    let log = ((0u64..1 << 60), proptest::collection::vec(any_tag(), 0..4))
        .prop_map(|(t, fields)| Log { time_unix_nano: t / 1000 * 1000, fields });
    (
        ids,
        any_text(),
        proptest::collection::vec(reference, 0..3),
        any::<u32>(),
        (0u64..1 << 60, prop_oneof![Just(0u64), 0u64..1 << 40]),
        proptest::collection::vec(any_tag(), 0..8),
        proptest::collection::vec(log, 0..3),
    )
        .prop_map(|((low, high, id, parent), operation_name, refs, flags, (start, duration), tags, logs)| {
            let tid = trace_id(high, low);
            Span {
                trace_id: tid,
                span_id: id.to_be_bytes(),
                parent_span_id: parent.to_be_bytes(),
                operation_name,
                references: refs
                    .into_iter()
                    .map(|(child_of, same, id)| SpanRef {
                        ref_type: if child_of { RefType::ChildOf } else { RefType::FollowsFrom },
                        trace_id: if same { tid } else { trace_id(0, 7) },
                        span_id: id.to_be_bytes(),
                    })
                    .collect(),
                flags,
                start_unix_nano: start / 1000 * 1000,
                duration_nano: duration / 1000 * 1000,
                tags,
                logs,
                process: None,
            }
        })
}

/// Up to 6 datagrams whose processes come from a pool of 2, so that some share one.
fn any_datagrams() -> impl Strategy<Value = Vec<Batch>> {
    (
        proptest::collection::vec(any_process(), 2),
        proptest::collection::vec((0usize..2, proptest::collection::vec(any_span(), 0..6)), 1..6),
    )
        .prop_map(|(processes, batches)| {
            batches.into_iter().map(|(p, spans)| Batch { process: processes[p].clone(), spans }).collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The direct path writes, byte for byte, what prost encodes for the struct path's request,
    /// in both protocols.
    #[test]
    fn datagrams_read_directly_are_the_struct_path_request(batches in any_datagrams()) {
        let compact: Vec<Vec<u8>> = batches.iter().map(encode::compact_emit_batch).collect();
        assert_same_request(&compact, true);
        let binary: Vec<Vec<u8>> = batches.iter().map(encode::binary_emit_batch).collect();
        assert_same_request(&binary, false);
    }

    /// A damaged datagram between good ones: refused by both paths or read the same by both,
    /// and a refused one leaves nothing in the request.
    #[test]
    fn damaged_datagrams_are_refused_or_read_as_the_struct_path_does(
        batches in any_datagrams(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
        compact in any::<bool>(),
    ) {
        let mut datagrams: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| if compact { encode::compact_emit_batch(b) } else { encode::binary_emit_batch(b) })
            .collect();
        let victim = cut % datagrams.len();
        let d = &mut datagrams[victim];
        for (at, byte) in flips {
            let n = d.len();
            d[at % n] = byte;
        }
        if cut % 3 == 0 {
            let n = d.len();
            d.truncate(cut % n);
        }
        assert_same_request(&datagrams, compact);
    }

    #[test]
    fn random_bytes_are_refused_or_read_as_the_struct_path_does(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        assert_same_request(std::slice::from_ref(&bytes), true);
        assert_same_request(std::slice::from_ref(&bytes), false);
    }
}

#[test]
fn a_datagram_with_invalid_utf8_in_a_tag_value_is_read_as_the_struct_path_does() {
    let mut batch = sample();
    batch.spans[0].tags.push(Tag::new("bad", TagValue::Str("\u{7f}XX".into())));
    batch.spans[0].tags.push(Tag::new("span.kind", TagValue::Str("XXrver".into())));
    for compact in [true, false] {
        let mut d = if compact { encode::compact_emit_batch(&batch) } else { encode::binary_emit_batch(&batch) };
        // "XX" -> two bytes that are not UTF-8, in both values.
        let mut i = 0;
        while let Some(at) = d[i..].windows(2).position(|w| w == b"XX") {
            d[i + at] = 0xff;
            d[i + at + 1] = 0xfe;
            i += at + 2;
        }
        assert!(i > 0);
        assert_same_request(&[d.clone(), d], compact);
    }
}

#[test]
fn the_builder_is_empty_after_finish_and_reuses_its_buffers() {
    let d = encode::compact_emit_batch(&sample());
    let mut builder = direct::RequestBuilder::new();
    builder.add(&d, direct::Thrift::Compact).unwrap();
    builder.add(&d, direct::Thrift::Compact).unwrap();
    let (first, spans) = builder.finish();
    assert_eq!(spans, 4);
    assert_eq!(builder.finish(), (Vec::new(), 0), "empty after finish");
    builder.add(&d, direct::Thrift::Compact).unwrap();
    builder.add(&d, direct::Thrift::Compact).unwrap();
    assert_eq!(builder.finish(), (first, 4));
}
