//! Spans per second through the tail sampler's buffer (intake of checked encoded requests, facts
//! read from the wire, decision, assembly of kept traces) with the default (PoC) policies.
//!
//! `cargo bench -p lgtm-statefulset --bench sampling`
//!
//! Figures of the decoding buffer, before requests stayed encoded (one thread, a 2-core VM shared with other builds, so a floor; 10,000 spans of 1,000
//! traces per iteration, each span ~200 bytes encoded with 3 attributes):
//! - `ingest_only_10k_spans`: 3.66 ms, about 2.7 million spans/s (encode, facts, buffer);
//! - `ingest_and_decide_10k_spans`: 4.87 ms, about 2.05 million spans/s, including deciding
//!   every trace with the PoC policies and decoding the ~32% kept back into a request.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lgtm_config::TailSamplingConfig;
use lgtm_pipeline::trace_wire::ValidTraces;
use lgtm_statefulset::sampling::{Buffer, Limits, Policies};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const TRACES_PER_REQUEST: u64 = 10;
const SPANS_PER_TRACE: u64 = 10;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// A typical request: 10 traces of 10 spans with a few attributes; one trace in 20 has an error,
/// half are slower than 50 ms.
fn request(batch: u64) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for t in 0..TRACES_PER_REQUEST {
        let n = batch * TRACES_PER_REQUEST + t;
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        trace_id[8..].copy_from_slice(&n.to_be_bytes());
        let start = 1_700_000_000_000_000_000u64 + n * 1_000_000;
        for s in 0..SPANS_PER_TRACE {
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: (n * 100 + s).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 { Vec::new() } else { (n * 100).to_be_bytes().to_vec() },
                name: "GET /api/checkout".into(),
                kind: 2,
                start_time_unix_nano: start + s * 1_000_000,
                end_time_unix_nano: start + s * 1_000_000 + if n.is_multiple_of(2) { 80_000_000 } else { 5_000_000 },
                attributes: vec![
                    kv("http.method", "GET"),
                    kv("http.route", "/api/checkout"),
                    kv("net.peer.name", "cart"),
                ],
                status: (n.is_multiple_of(20) && s == 3).then(|| Status { code: 2, message: "boom".into() }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("k8s.namespace.name", "shop"),
                    kv("k8s.pod.name", "checkout-7d9f"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "io.opentelemetry.http".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn limits() -> Limits {
    Limits::from_config(&TailSamplingConfig::default())
}

fn bench(c: &mut Criterion) {
    let policies = Policies::compile(&TailSamplingConfig::default().policies).expect("default policies");
    let batches = 100u64;
    // As the receiver hands them over: checked, still encoded.
    let requests: Vec<ValidTraces> = (0..batches)
        .map(|n| ValidTraces::parse(request(n).encode_to_vec().into()).expect("prost's encoding checks"))
        .collect();
    let mut group = c.benchmark_group("sampling");
    group.throughput(Throughput::Elements(batches * TRACES_PER_REQUEST * SPANS_PER_TRACE));
    group.bench_function("ingest_and_decide_10k_spans", |b| {
        b.iter_batched(
            || (Buffer::new(policies.clone(), limits()), requests.clone()),
            |(mut buffer, requests)| {
                let t0 = Instant::now();
                for r in requests {
                    buffer.ingest(r, t0);
                }
                buffer.decide_due(t0 + Duration::from_secs(11))
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("ingest_only_10k_spans", |b| {
        b.iter_batched(
            || (Buffer::new(policies.clone(), limits()), requests.clone()),
            |(mut buffer, requests)| {
                let t0 = Instant::now();
                for r in requests {
                    buffer.ingest(r, t0);
                }
                buffer
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
