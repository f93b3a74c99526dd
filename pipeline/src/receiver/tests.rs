//! The receiver over real sockets: tonic and HTTP clients against [`OtlpReceiver`].

use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::*;

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    busy: bool,
    /// Takes requests encoded (as the Tempo sink does); they are decoded here to be looked at.
    encoded: bool,
    encoded_taken: std::sync::atomic::AtomicUsize,
}

impl TraceConsumer for Recorder {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        if self.busy {
            return Err(ConsumeError::Busy("test".into()));
        }
        self.requests.lock().unwrap().push(request);
        Ok(())
    }

    fn takes_encoded(&self) -> bool {
        self.encoded
    }

    fn consume_encoded(&self, request: crate::trace_wire::ValidTraces) -> Result<(), ConsumeError> {
        self.encoded_taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let decoded = ExportTraceServiceRequest::decode(request.as_bytes().clone()).expect("checked");
        assert_eq!(request.spans(), span_count(&decoded));
        self.consume(decoded)
    }
}

impl Recorder {
    fn span_ids(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let reqs = self.requests.lock().unwrap();
        reqs.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect()
    }
}

/// A pipeline whose exporters are off: metrics and logs are taken and discarded.
fn pipeline() -> Pipeline {
    let mut config = lgtm_config::Config::default();
    config.exporters.mimir.enabled = false;
    config.exporters.loki.enabled = false;
    config.exporters.tempo.enabled = false;
    let (pipeline, _handle) = Pipeline::start(&config).expect("pipeline");
    pipeline
}

struct Running {
    grpc: String,
    http: String,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_with(recorder: Recorder, max_request_size: u64) -> Running {
    let cfg = OtlpConfig {
        grpc: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        max_request_size: lgtm_config::ByteSize::from_bytes(max_request_size),
        ..OtlpConfig::default()
    };
    let recorder = Arc::new(recorder);
    let receiver = OtlpReceiver::bind(&cfg, "test-cluster".into(), pipeline(), recorder.clone()).await.expect("bind");
    let grpc = format!("http://{}", receiver.grpc_addr().expect("grpc addr"));
    let http = format!("http://{}", receiver.http_addr().expect("http addr"));
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));
    Running { grpc, http, recorder, stop }
}

async fn start() -> Running {
    start_with(Recorder::default(), 1 << 20).await
}

fn trace_request(trace_id: u8, spans: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![trace_id; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("span-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn received(signal: &str, transport: &str) -> u64 {
    metrics::otlp().received.with_label_values(&[signal, transport]).get()
}

fn rejected(signal: &str, reason: &str) -> u64 {
    metrics::otlp().rejected.with_label_values(&[signal, reason]).get()
}

#[tokio::test]
async fn grpc_spans_with_gzip_reach_the_consumer() {
    let r = start().await;
    let before = received("traces", "grpc");
    let mut client = TraceServiceClient::connect(r.grpc.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(trace_request(7, 3)).await.expect("export");
    assert_eq!(r.recorder.span_ids().len(), 3);
    assert!(r.recorder.span_ids().iter().all(|(t, _)| *t == vec![7; 16]));
    assert!(received("traces", "grpc") >= before + 3);
}

/// POSTs `body` to the HTTP receiver's `/v1/traces` as protobuf, with `content-encoding`.
async fn post_traces(r: &Running, body: Vec<u8>, encoding: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/traces", r.http))
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

/// Calls `TraceService/Export` with `message` as the request, whatever its type: how a test
/// sends bytes that are not a valid `ExportTraceServiceRequest`.
async fn grpc_export_as<M: prost::Message + Default + Send + Sync + 'static>(
    r: &Running,
    message: M,
) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(r.grpc.clone()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<M, ExportTraceServiceResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(message), path, codec).await
}

#[tokio::test]
async fn grpc_malformed_protobuf_is_invalid_argument_and_counted() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Bogus {
        // Field 1 of ExportTraceServiceRequest is a message; a varint there is not decodable.
        #[prost(uint64, tag = "1")]
        x: u64,
    }
    let r = start().await;
    let before = rejected("traces", "malformed");
    let err = grpc_export_as(&r, Bogus { x: 5 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(rejected("traces", "malformed") > before);
    // The server is still there.
    let mut client = TraceServiceClient::connect(r.grpc.clone()).await.unwrap();
    client.export(trace_request(1, 1)).await.expect("still serving");
}

#[tokio::test]
async fn busy_consumer_answers_resource_exhausted_with_retry_info_and_429_with_retry_after() {
    let r = start_with(Recorder { busy: true, ..Default::default() }, 1 << 20).await;
    let mut client = TraceServiceClient::connect(r.grpc.clone()).await.unwrap();
    let err = client.export(trace_request(1, 1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let details = status::RpcStatus::decode(err.details()).expect("google.rpc.Status details");
    assert!(details.details.iter().any(|d| d.type_url.ends_with("google.rpc.RetryInfo")));

    let resp = post_traces(&r, trace_request(1, 1).encode_to_vec(), None).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
}

#[tokio::test]
async fn http_protobuf_plain_and_gzip_reach_the_consumer() {
    let r = start().await;
    let body = trace_request(9, 2).encode_to_vec();
    for (encoding, payload) in [(None, body.clone()), (Some("gzip"), gzip(&body))] {
        let resp = post_traces(&r, payload, encoding).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
        ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).expect("protobuf answer");
    }
    assert_eq!(r.recorder.span_ids().len(), 4);
}

/// A consumer that takes requests encoded (the Tempo sink) gets them from gRPC (gzip) and HTTP
/// protobuf without decoding; a body that prost would refuse (here invalid UTF-8 in a span name,
/// deep inside) is refused on both transports, counted, and never handed over.
#[tokio::test]
async fn encoded_consumer_gets_checked_bytes_and_malformed_ones_are_refused_and_counted() {
    let r = start_with(Recorder { encoded: true, ..Default::default() }, 1 << 20).await;
    let mut client = TraceServiceClient::connect(r.grpc.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(trace_request(7, 3)).await.expect("export");
    let body = trace_request(9, 2).encode_to_vec();
    let resp = post_traces(&r, body.clone(), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.recorder.span_ids().len(), 5);
    assert_eq!(r.recorder.encoded_taken.load(std::sync::atomic::Ordering::Relaxed), 2);

    let mut bad = body;
    let at = bad.windows(6).position(|w| w == b"span-1").unwrap();
    bad[at] = 0xc3;
    let before = rejected("traces", "malformed");
    let resp = post_traces(&r, bad.clone(), None).await;
    assert_eq!(resp.status(), 400);
    // `RawBody` encodes to exactly the bytes of `bad`.
    let err = grpc_export_as(&r, RawBody::from_request_bytes(&bad)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{}", err.message());
    assert!(rejected("traces", "malformed") >= before + 2);
    assert_eq!(r.recorder.span_ids().len(), 5, "nothing of the malformed requests was handed over");
}

/// Sends the bytes of an `ExportTraceServiceRequest` as they are: its repeated field 1, each
/// entry's bytes kept (prost does not look into `bytes` fields).
#[derive(Clone, PartialEq, prost::Message)]
struct RawBody {
    #[prost(bytes = "vec", repeated, tag = "1")]
    resource_spans: Vec<Vec<u8>>,
}

impl RawBody {
    fn from_request_bytes(mut bytes: &[u8]) -> RawBody {
        let mut resource_spans = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x0a, "only field 1");
            bytes = &bytes[1..];
            let len = prost::decode_length_delimiter(&mut bytes).unwrap();
            resource_spans.push(bytes[..len].to_vec());
            bytes = &bytes[len..];
        }
        RawBody { resource_spans }
    }
}

/// The example of the OTLP specification's "JSON Protobuf Encoding": hex ids, string 64-bit
/// integers, integer enums, unknown fields ignored.
#[tokio::test]
async fn http_json_decodes_hex_ids_string_integers_and_enum_numbers() {
    let r = start().await;
    let json = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "kind": 2,
            "someFutureField": {"x": 1},
            "attributes": [{"key": "my.span.attr", "value": {"intValue": "42"}}],
            "status": {"code": 2, "message": "boom"}
          }]
        }]
      }]
    }"#;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", r.http))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let reqs = r.recorder.requests.lock().unwrap();
    let span = &reqs[0].resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        span.trace_id,
        [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c]
    );
    assert_eq!(span.span_id, [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(span.kind, 2);
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
    let attr = span.attributes[0].value.as_ref().and_then(|v| v.value.clone());
    assert_eq!(attr, Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(42)));
}

#[tokio::test]
async fn http_refusals_are_counted_and_never_crash() {
    let r = start_with(Recorder::default(), 64 * 1024).await;
    let client = reqwest::Client::new();
    let post = |path: &str, ct: &str, body: Vec<u8>, encoding: Option<&str>| {
        let mut req = client.post(format!("{}{path}", r.http)).header("content-type", ct).body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        req.send()
    };
    let malformed = rejected("traces", "malformed");
    let resp = post("/v1/traces", "application/x-protobuf", vec![0x0a, 0xff, 0xff], None).await.unwrap();
    assert_eq!(resp.status(), 400);
    let status = status::RpcStatus::decode(resp.bytes().await.unwrap()).expect("google.rpc.Status body");
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(rejected("traces", "malformed") > malformed);

    let resp = post("/v1/logs", "application/json", b"{\"resourceLogs\": 5}".to_vec(), None).await.unwrap();
    assert_eq!(resp.status(), 400);

    let resp = post("/v1/traces", "text/plain", b"hi".to_vec(), None).await.unwrap();
    assert_eq!(resp.status(), 415);

    let resp = post("/v1/traces", "application/x-protobuf", b"not gzip".to_vec(), Some("gzip")).await.unwrap();
    assert_eq!(resp.status(), 400);

    // 1 MiB of zeros compresses to about 1 KiB: small on the wire, too large once decompressed.
    let too_large = rejected("traces", "too_large");
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let resp = post("/v1/traces", "application/x-protobuf", bomb, Some("gzip")).await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post("/v1/traces", "application/x-protobuf", vec![0u8; 100 * 1024], None).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(rejected("traces", "too_large") >= too_large + 2);
    assert!(r.recorder.span_ids().is_empty());
}

#[tokio::test]
async fn http_metrics_json_answers_partial_success_for_exponential_histograms() {
    let r = start().await;
    let json = r#"{"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "requests", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
            "dataPoints": [{"asInt": "5", "timeUnixNano": "1544712660300000000"}]}},
        {"name": "latency", "exponentialHistogram": {"aggregationTemporality": 2,
            "dataPoints": [{"count": "1", "scale": 1}]}}
    ]}]}]}"#;
    let before = received("metrics", "http");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/metrics", r.http))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    // proto3 JSON readers take an int64 as a number or a string.
    let rejected = &answer["partialSuccess"]["rejectedDataPoints"];
    assert!(rejected == &serde_json::json!(1) || rejected == &serde_json::json!("1"), "{answer}");
    assert_eq!(received("metrics", "http"), before + 1);
}

#[tokio::test]
async fn logs_over_grpc_are_taken() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let r = start().await;
    let before = received("logs", "grpc");
    let mut client = LogsServiceClient::connect(r.grpc.clone()).await.unwrap();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: vec![LogRecord::default(); 2], ..Default::default() }],
            ..Default::default()
        }],
    };
    client.export(req).await.expect("logs export");
    assert_eq!(received("logs", "grpc"), before + 2);
}

#[tokio::test]
async fn bind_error_names_the_transport_and_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cfg = OtlpConfig { grpc: addr.clone(), http: String::new(), ..OtlpConfig::default() };
    let err = OtlpReceiver::bind(&cfg, "c".into(), pipeline(), Arc::new(Recorder::default())).await.err().unwrap();
    assert!(err.to_string().starts_with(&format!("otlp.grpc: cannot listen on {addr}: ")), "{err}");
}
