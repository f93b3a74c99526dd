//! The four Jaeger listeners end to end over real sockets: binary UDP, gRPC `PostSpans`, and what
//! happens to datagrams that cannot be read (counted, skipped, the listener goes on).

mod clients;

use std::sync::Arc;
use std::time::Duration;

use clients::{hex, Collect};
use lgtm_config::OtlpConfig;
use lgtm_pipeline::receiver::jaeger::model::{trace_id, Batch, Process, Span, Tag, TagValue};
use lgtm_pipeline::receiver::jaeger::proto::{
    KeyValue, PostSpansRequest, PostSpansResponse, ProtoBatch, ProtoProcess, ProtoSpan, ProtoSpanRef, Timestamp,
};
use lgtm_pipeline::receiver::jaeger::{encode, JaegerReceiver};
use lgtm_pipeline::receiver::{ConsumeError, TraceConsumer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio_util::sync::CancellationToken;

async fn start() -> (Arc<Collect>, JaegerReceiver) {
    let collect = Arc::new(Collect::default());
    let receiver = start_with(collect.clone()).await;
    (collect, receiver)
}

async fn start_with(traces: Arc<dyn TraceConsumer>) -> JaegerReceiver {
    let mut cfg = OtlpConfig::default();
    cfg.jaeger.thrift_compact = "127.0.0.1:0".into();
    cfg.jaeger.thrift_binary = "127.0.0.1:0".into();
    cfg.jaeger.thrift_http = "127.0.0.1:0".into();
    cfg.jaeger.grpc = "127.0.0.1:0".into();
    JaegerReceiver::bind(&cfg, traces).await.expect("bind")
}

/// A next stage that is always full.
struct Busy;

impl TraceConsumer for Busy {
    fn consume(&self, _request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        Err(ConsumeError::Busy("full".into()))
    }
}

fn batch(span: i64) -> Batch {
    Batch {
        process: Process { service_name: "udp-svc".into(), tags: vec![] },
        spans: vec![Span {
            trace_id: trace_id(1, 2),
            span_id: span.to_be_bytes(),
            operation_name: format!("op-{span}"),
            start_unix_nano: 1_000_000,
            duration_nano: 5_000,
            tags: vec![Tag::new("k", TagValue::Str("v".into()))],
            ..Span::default()
        }],
    }
}

fn rejected(transport: &str, reason: &str) -> u64 {
    let text = lgtm_pipeline::metrics::render();
    let want = format!("lgtm_agent_jaeger_rejected_total{{reason=\"{reason}\",transport=\"{transport}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&want)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn binary_udp_datagrams_arrive_and_bad_ones_are_counted_and_skipped() {
    let (collect, receiver) = start().await;
    let binary = receiver.thrift_binary_addr().unwrap();
    let compact = receiver.thrift_compact_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let malformed_before = rejected("thrift_compact", "malformed");
    let large_before = rejected("thrift_binary", "too_large");
    client.send_to(b"\x82\x81\x00garbage", compact).await.unwrap();
    client.send_to(&vec![0u8; 65_001], binary).await.unwrap();
    client.send_to(&encode::binary_emit_batch(&batch(3)), binary).await.unwrap();
    client.send_to(&encode::compact_emit_batch(&batch(4)), compact).await.unwrap();
    let got = collect.wait_for(2).await;
    let mut names: Vec<_> = got.iter().map(|(_, s)| s.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["op-3", "op-4"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rejected("thrift_compact", "malformed"), malformed_before + 1);
    assert_eq!(rejected("thrift_binary", "too_large"), large_before + 1);
    stop.cancel();
}

#[tokio::test]
async fn grpc_post_spans_arrives_with_parent_from_the_child_of_reference() {
    let (collect, receiver) = start().await;
    let addr = receiver.grpc_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));
    let tid: Vec<u8> = (1..=16).collect();
    let request = PostSpansRequest {
        batch: Some(ProtoBatch {
            process: Some(ProtoProcess { service_name: "grpc-svc".into(), tags: vec![] }),
            spans: vec![ProtoSpan {
                trace_id: tid.clone(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
                operation_name: "child".into(),
                references: vec![ProtoSpanRef {
                    trace_id: tid.clone(),
                    span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
                    ref_type: 0,
                }],
                start_time: Some(Timestamp { seconds: 1_700_000_000, nanos: 5 }),
                tags: vec![KeyValue { key: "span.kind".into(), v_str: "producer".into(), ..Default::default() }],
                ..Default::default()
            }],
        }),
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
    let codec = tonic_prost::ProstCodec::<PostSpansRequest, PostSpansResponse>::default();
    grpc.unary(tonic::Request::new(request), path, codec).await.expect("PostSpans");
    let got = collect.wait_for(1).await;
    let span = &got[0].1;
    assert_eq!(span.trace_id, tid);
    assert_eq!(hex(&span.parent_span_id), "0000000000000001");
    assert_eq!(span.kind, 4);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_005);
    stop.cancel();
}

#[tokio::test]
async fn a_full_next_stage_answers_resource_exhausted_with_retry_info_and_429_with_retry_after() {
    let receiver = start_with(Arc::new(Busy)).await;
    let (grpc_addr, http_addr) = (receiver.grpc_addr().unwrap(), receiver.thrift_http_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));

    let request = PostSpansRequest {
        batch: Some(ProtoBatch {
            process: Some(ProtoProcess { service_name: "grpc-svc".into(), tags: vec![] }),
            spans: vec![ProtoSpan {
                trace_id: (1..=16).collect(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
                operation_name: "op".into(),
                ..Default::default()
            }],
        }),
    };
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
    let codec = tonic_prost::ProstCodec::<PostSpansRequest, PostSpansResponse>::default();
    let err = grpc.unary(tonic::Request::new(request), path, codec).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let retry_info = b"type.googleapis.com/google.rpc.RetryInfo";
    assert!(err.details().windows(retry_info.len()).any(|w| w == retry_info), "no RetryInfo in {err:?}");

    let resp = reqwest::Client::new()
        .post(format!("http://{http_addr}/api/traces"))
        .header("content-type", "application/x-thrift")
        .body(encode::binary_batch(&batch(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    stop.cancel();
}
