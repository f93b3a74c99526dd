//! The receive-side cost of an OTLP trace request of 512 spans (the SDKs' default batch) with the
//! attributes of an HTTP service and its database client: checked and rewritten in the wire format
//! ([`ValidTraces`]), against what the Tempo path did before (prost decode, add
//! `k8s.cluster.name`, encode).
//!
//! ```text
//! cargo bench -p lgtm-pipeline --bench trace_wire
//! ```

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lgtm_pipeline::trace_wire::{add_resource_attribute, string_attribute, EncodedAttribute, ValidTraces};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn request() -> Bytes {
    let spans = |service: &str| -> Vec<Span> {
        (0..256u32)
            .map(|i| Span {
                trace_id: (0..16).map(|b| (b * 7 + i) as u8).collect(),
                span_id: (0..8).map(|b| (b * 3 + i) as u8).collect(),
                parent_span_id: vec![1; 8],
                name: format!("{service} GET /api/items/{{id}}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i) * 1000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i) * 1000 + 25_000_000,
                attributes: vec![
                    string_attribute("http.request.method", "GET"),
                    string_attribute("url.path", "/api/items/42"),
                    string_attribute("http.route", "/api/items/{id}"),
                    string_attribute("server.address", "items.shop.svc.cluster.local"),
                    string_attribute("db.system", "postgresql"),
                    string_attribute("db.statement", "SELECT id, name, price FROM items WHERE id = $1"),
                ],
                status: Some(Status { message: String::new(), code: 1 }),
                ..Default::default()
            })
            .collect()
    };
    let resource_spans = |service: &str| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                string_attribute("service.name", service),
                string_attribute("service.namespace", "shop"),
                string_attribute("telemetry.sdk.language", "python"),
                string_attribute("host.name", "node-1"),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "opentelemetry.instrumentation.flask".into(),
                ..Default::default()
            }),
            spans: spans(service),
            schema_url: String::new(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
    };
    let req = ExportTraceServiceRequest { resource_spans: vec![resource_spans("frontend"), resource_spans("items")] };
    Bytes::from(req.encode_to_vec())
}

fn bench(c: &mut Criterion) {
    let body = request();
    let attribute = EncodedAttribute::string("k8s.cluster.name", "remote04");
    let mut g = c.benchmark_group("trace_request_512_spans");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("wire_parse", |b| b.iter(|| ValidTraces::parse(body.clone()).unwrap().spans()));
    g.bench_function("wire_parse_and_add_resource_attribute", |b| {
        b.iter(|| ValidTraces::parse(body.clone()).unwrap().with_resource_attribute(&attribute))
    });
    g.bench_function("prost_decode_add_encode", |b| {
        b.iter(|| {
            let mut req = ExportTraceServiceRequest::decode(body.clone()).unwrap();
            add_resource_attribute(&mut req, "k8s.cluster.name", "remote04");
            req.encode_to_vec()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
