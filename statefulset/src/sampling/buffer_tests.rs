use std::time::{Duration, Instant};

use lgtm_config::TailSamplingConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::{Rng, SeedableRng};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn limits() -> Limits {
    Limits {
        decision_wait: WAIT,
        max_traces: 1000,
        max_buffer_bytes: 64 << 20,
        max_trace_spans: 10_000,
        max_trace_bytes: 4 << 20,
        decision_cache: 10_000,
    }
}

fn buffer(limits: Limits) -> Buffer {
    Buffer::new(Policies::compile(&TailSamplingConfig::default().policies).unwrap(), limits)
}

fn id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id[0] = 0xab;
    id
}

/// A span of trace `trace`, `ms` long, with an ERROR status when `error`.
fn span(trace: [u8; 16], span_no: u8, ms: u64, error: bool) -> Span {
    let start = 1_700_000_000_000_000_000u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![span_no; 8],
        name: format!("op-{span_no}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        status: error.then(|| Status { code: 2, ..Default::default() }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ValidTraces {
    encoded(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("checkout".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn encoded(request: ExportTraceServiceRequest) -> ValidTraces {
    ValidTraces::parse(request.encode_to_vec().into()).expect("prost's encoding checks")
}

/// The kept spans, decoded.
fn exported(out: &Outcome) -> Option<ExportTraceServiceRequest> {
    out.export.as_ref().map(|r| ExportTraceServiceRequest::decode(r.as_bytes().clone()).expect("decodes"))
}

fn exported_ids(out: &Outcome) -> Vec<(Vec<u8>, Vec<u8>)> {
    exported(out)
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect::<Vec<_>>()
}

#[test]
fn a_trace_is_decided_decision_wait_after_its_first_span_and_exported_whole() {
    let mut b = buffer(limits());
    let t0 = Instant::now();
    assert!(b.ingest(request(vec![span(id(1), 1, 5, false)]), t0).decided.is_empty());
    assert!(b.ingest(request(vec![span(id(1), 2, 5, true)]), t0 + Duration::from_secs(3)).decided.is_empty());
    assert_eq!((b.buffered_traces(), b.buffered_spans()), (1, 2));
    assert!(b.decide_due(t0 + WAIT - Duration::from_millis(1)).decided.is_empty());
    let out = b.decide_due(t0 + WAIT);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].policy.as_deref(), Some("errors"));
    assert_eq!(out.decided[0].early, None);
    assert_eq!(out.decided[0].spans, 2);
    assert_eq!(exported_ids(&out), vec![(id(1).to_vec(), vec![1; 8]), (id(1).to_vec(), vec![2; 8])]);
    let req = exported(&out).unwrap();
    assert_eq!(req.resource_spans.len(), 1, "spans of one resource are grouped again");
    assert_eq!(req.resource_spans[0].resource.as_ref().unwrap().attributes[0].key, "service.name");
    assert_eq!(req.resource_spans[0].scope_spans[0].scope.as_ref().unwrap().name, "lib");
    assert_eq!(req.resource_spans[0].scope_spans[0].spans[1].status.as_ref().unwrap().code, 2);
    assert_eq!((b.buffered_traces(), b.buffered_spans(), b.buffered_bytes()), (0, 0, 0));
}

#[test]
fn a_request_with_several_traces_is_split_by_trace() {
    let mut b = buffer(limits());
    let t0 = Instant::now();
    b.ingest(request(vec![span(id(1), 1, 1, true), span(id(2), 1, 1, false), span(id(1), 2, 1, false)]), t0);
    assert_eq!(b.buffered_traces(), 2);
    let out = b.decide_due(t0 + WAIT);
    assert_eq!(out.decided.len(), 2);
    let ids = exported_ids(&out);
    assert_eq!(ids.len(), 2, "only the error trace, both its spans");
    assert!(ids.iter().all(|(t, _)| *t == id(1).to_vec()));
}

#[test]
fn late_spans_follow_the_decision_already_made() {
    let mut b = buffer(limits());
    let t0 = Instant::now();
    b.ingest(request(vec![span(id(1), 1, 1, true), span(id(2), 1, 1, false)]), t0);
    b.decide_due(t0 + WAIT);
    let t1 = t0 + WAIT + Duration::from_secs(1);
    let out = b.ingest(request(vec![span(id(1), 9, 1, false), span(id(2), 9, 500, true)]), t1);
    assert_eq!(exported_ids(&out), vec![(id(1).to_vec(), vec![9; 8])], "kept trace's late span forwarded at once");
    assert!(out.late.contains(&(Late::Kept, 1)));
    assert!(out.late.contains(&(Late::Dropped, 1)), "a dropped trace stays dropped, even with an error");
    assert_eq!(b.buffered_traces(), 0);
}

#[test]
fn late_spans_beyond_the_decision_cache_start_a_new_buffer() {
    let mut b = buffer(Limits { decision_cache: 2, ..limits() });
    let t0 = Instant::now();
    b.ingest(request((1..=3).map(|n| span(id(n), 1, 1, false)).collect()), t0);
    b.decide_due(t0 + WAIT);
    let out = b.ingest(request(vec![span(id(1), 2, 1, false)]), t0 + WAIT);
    assert!(out.late.is_empty());
    assert_eq!(b.buffered_traces(), 1);
}

#[test]
fn reaching_max_traces_decides_the_oldest_early() {
    let mut b = buffer(Limits { max_traces: 100, ..limits() });
    let t0 = Instant::now();
    let mut early = 0;
    for n in 0..1000u64 {
        let out = b.ingest(request(vec![span(id(n), 1, 1, n.is_multiple_of(10))]), t0 + Duration::from_millis(n));
        assert!(b.buffered_traces() <= 100);
        for d in &out.decided {
            assert_eq!(d.early, Some(Early::MaxTraces));
            early += 1;
        }
        if n >= 100 {
            assert_eq!(out.decided.len(), 1, "one in, the oldest out");
        }
    }
    assert_eq!(early, 900);
    assert_eq!(b.decide_all(t0).decided.len(), 100);
}

#[test]
fn the_buffer_stays_under_max_buffer_bytes() {
    let max = 64 * 1024;
    let mut b = buffer(Limits { max_buffer_bytes: max, max_trace_bytes: max, ..limits() });
    let t0 = Instant::now();
    let mut decided = 0;
    for n in 0..5000u64 {
        let spans = (0..5).map(|s| span(id(n), s, 100, false)).collect();
        let out = b.ingest(request(spans), t0);
        decided += out.decided.len();
        assert!(out.decided.iter().all(|d| d.early == Some(Early::MaxBuffer)));
        assert!(b.buffered_bytes() <= max, "{} > {max}", b.buffered_bytes());
    }
    assert!(decided > 4000, "{decided}");
    assert_eq!(decided + b.decide_all(t0).decided.len(), 5000, "every trace decided, none lost");
}

#[test]
fn a_trace_over_its_size_cap_is_decided_early_and_its_later_spans_follow() {
    let mut b = buffer(Limits { max_trace_spans: 10, ..limits() });
    let t0 = Instant::now();
    let out = b.ingest(request((0..10).map(|s| span(id(1), s, 1, s == 0)).collect()), t0);
    assert_eq!(out.decided.len(), 1);
    assert_eq!(out.decided[0].early, Some(Early::TraceTooLarge));
    assert_eq!(exported_ids(&out).len(), 10);
    let out = b.ingest(request(vec![span(id(1), 20, 1, false)]), t0);
    assert_eq!(exported_ids(&out).len(), 1);
}

#[test]
fn shutdown_decides_everything_buffered() {
    let mut b = buffer(limits());
    let t0 = Instant::now();
    b.ingest(request((0..50).map(|n| span(id(n), 1, 1, true)).collect()), t0);
    let out = b.decide_all(t0);
    assert_eq!(out.decided.len(), 50);
    assert!(out.decided.iter().all(|d| d.early == Some(Early::Shutdown)));
    assert_eq!(exported_ids(&out).len(), 50);
    assert_eq!(b.buffered_traces(), 0);
}

/// The PoC's policies keep 30% of slow OK traces: check the fraction within 3 sigma
/// (sigma = sqrt(0.3 * 0.7 / 10,000) = 0.46%).
#[test]
fn ten_thousand_slow_ok_traces_keep_thirty_percent() {
    let mut b = buffer(Limits { max_traces: 20_000, ..limits() });
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let t0 = Instant::now();
    for _ in 0..10_000 {
        let trace: [u8; 16] = rng.random();
        b.ingest(request(vec![span(trace, 1, 60, false), span(trace, 2, 120, false)]), t0);
    }
    let out = b.decide_due(t0 + WAIT);
    assert_eq!(out.decided.len(), 10_000);
    let kept = out.decided.iter().filter(|d| d.policy.as_deref() == Some("slow-sampled")).count();
    let fraction = kept as f64 / 10_000.0;
    let sigma = (0.3f64 * 0.7 / 10_000.0).sqrt();
    assert!((fraction - 0.3).abs() <= 3.0 * sigma, "kept {fraction}");
    assert_eq!(exported_ids(&out).len(), kept * 2);
}

#[test]
fn fast_ok_traces_are_dropped_and_errors_always_kept() {
    let mut b = buffer(limits());
    let t0 = Instant::now();
    for n in 0..500u64 {
        b.ingest(request(vec![span(id(n), 1, 10, n.is_multiple_of(2))]), t0);
    }
    let out = b.decide_due(t0 + WAIT);
    let kept: Vec<_> = out.decided.iter().filter(|d| d.policy.is_some()).collect();
    assert_eq!(kept.len(), 250);
    assert!(kept.iter().all(|d| d.policy.as_deref() == Some("errors")));
}
