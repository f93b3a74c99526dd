//! A real instrumented application: the OpenTelemetry Python SDK exporting over OTLP/gRPC (gzip)
//! to our receiver, once straight to a consumer and once through the tail sampler. Skipped with a
//! printed reason when the Python modules are missing, unless `CI=true` (then it fails).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lgtm_config::{OtlpConfig, TailSamplingConfig};
use lgtm_pipeline::receiver::{ConsumeError, OtlpReceiver, TraceConsumer};
use lgtm_pipeline::trace_wire::ValidTraces;
use lgtm_pipeline::Pipeline;
use lgtm_statefulset::sampling::{TailSampler, TraceOutput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = r#"
import json, sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import Status, StatusCode

provider = TracerProvider(resource=Resource.create({"service.name": "py-shop"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], insecure=True)))
tracer = provider.get_tracer("lgtm-test")
spans = []
def record(span):
    ctx = span.get_span_context()
    spans.append({"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"), "name": span.name})
with tracer.start_as_current_span("checkout") as parent:
    record(parent)
    with tracer.start_as_current_span("charge-card") as child:
        child.set_status(Status(StatusCode.ERROR, "card declined"))
        record(child)
with tracer.start_as_current_span("healthz") as fast_ok:
    record(fast_ok)
ok = provider.force_flush(10000)
provider.shutdown()
print(json.dumps({"flushed": ok, "spans": spans}))
"#;

fn python_sdk_available() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = "python3 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-grpc is missing \
                      (scripts/install-test-deps.sh installs them)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("SKIPPED: {reason}");
    }
    found
}

/// Runs the script against `endpoint`; returns the (trace_id, span_id, name) it created, hex.
async fn run_python(endpoint: &str) -> Vec<(String, String, String)> {
    let out = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT, endpoint])
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .output()
        .await
        .expect("python3 runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from the script");
    assert_eq!(v["flushed"], serde_json::json!(true), "{v}");
    v["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().expect("string").to_string();
            (f("trace_id"), f("span_id"), f("name"))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ids(reqs: &[ExportTraceServiceRequest]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (hex(&s.trace_id), hex(&s.span_id), s.name.clone()))
        .collect();
    v.sort();
    v
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl TraceConsumer for Recorder {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        self.0.lock().unwrap().push(request);
        Ok(())
    }
}

impl TraceOutput for Recorder {
    async fn send(&self, request: ValidTraces) {
        self.0.lock().unwrap().push(ExportTraceServiceRequest::decode(request.as_bytes().clone()).unwrap());
    }
}

fn pipeline() -> Pipeline {
    let mut config = lgtm_config::Config::default();
    config.exporters.mimir.enabled = false;
    config.exporters.loki.enabled = false;
    config.exporters.tempo.enabled = false;
    Pipeline::start(&config).expect("pipeline").0
}

async fn receiver(traces: Arc<dyn TraceConsumer>, stop: &CancellationToken) -> String {
    let cfg = OtlpConfig { grpc: "127.0.0.1:0".into(), http: String::new(), ..OtlpConfig::default() };
    let r = OtlpReceiver::bind(&cfg, "test".into(), pipeline(), traces).await.expect("bind");
    let endpoint = format!("http://{}", r.grpc_addr().expect("grpc"));
    tokio::spawn(r.run(stop.clone()));
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_arrive_with_their_exact_ids() {
    if !python_sdk_available() {
        return;
    }
    let stop = CancellationToken::new();
    let recorder = Recorder::default();
    let endpoint = receiver(Arc::new(recorder.clone()), &stop).await;
    let mut sent = run_python(&endpoint).await;
    sent.sort();
    assert_eq!(sent.len(), 3);
    assert_eq!(ids(&recorder.0.lock().unwrap()), sent);
    let reqs = recorder.0.lock().unwrap();
    let resource = reqs[0].resource_spans[0].resource.as_ref().expect("resource");
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_error_trace_is_kept_whole_by_the_tail_sampler_and_the_ok_one_dropped() {
    if !python_sdk_available() {
        return;
    }
    let stop = CancellationToken::new();
    let output = Recorder::default();
    let cfg =
        TailSamplingConfig { decision_wait: lgtm_config::Duration::from_millis(300), ..TailSamplingConfig::default() };
    let (sampler, task) = TailSampler::start(&cfg, output.clone(), stop.child_token()).expect("sampler");
    let endpoint = receiver(sampler, &stop).await;
    let sent = run_python(&endpoint).await;
    let error_trace = &sent.iter().find(|s| s.2 == "charge-card").expect("error span").0;
    let mut want: Vec<_> = sent.iter().filter(|s| &s.0 == error_trace).cloned().collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ids(&output.0.lock().unwrap()).len() < want.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("sampler task");
    assert_eq!(ids(&output.0.lock().unwrap()), want, "the error trace, both spans; not the fast OK one");
}
