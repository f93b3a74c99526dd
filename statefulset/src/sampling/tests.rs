//! The sampler as the receiver sees it: a `TraceConsumer` with its own task.

use std::sync::Mutex;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl TraceOutput for Recorder {
    async fn send(&self, request: ValidTraces) {
        self.0.lock().unwrap().push(ExportTraceServiceRequest::decode(request.as_bytes().clone()).unwrap());
    }
}

impl Recorder {
    fn spans(&self) -> Vec<Span> {
        let reqs = self.0.lock().unwrap();
        reqs.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }
}

fn request(trace: u8, error: bool) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![trace; 16],
                    span_id: vec![1; 8],
                    status: error.then(|| Status { code: 2, ..Default::default() }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn config(wait: Duration) -> TailSamplingConfig {
    TailSamplingConfig {
        decision_wait: lgtm_config::Duration::from_millis(wait.as_millis() as u64),
        ..TailSamplingConfig::default()
    }
}

#[tokio::test]
async fn kept_traces_reach_the_output_after_decision_wait() {
    let out = Recorder::default();
    let stop = CancellationToken::new();
    let (sampler, task) = TailSampler::start(&config(Duration::from_millis(200)), out.clone(), stop.clone()).unwrap();
    let consumed = Instant::now();
    sampler.consume(request(1, true)).unwrap();
    sampler.consume(request(2, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let early = out.spans().is_empty();
    // On a loaded machine the 50 ms sleep may itself outlast decision_wait.
    assert!(early || consumed.elapsed() >= Duration::from_millis(200), "not before decision_wait");
    // Both traces decided (the second is due a little after the first).
    let deadline = Instant::now() + Duration::from_secs(5);
    while (out.spans().is_empty() || sampler.buffered().0 > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans = out.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id, vec![1; 16]);
    assert_eq!(sampler.buffered().0, 0);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn shutdown_decides_and_hands_over_everything_then_refuses() {
    let out = Recorder::default();
    let stop = CancellationToken::new();
    let (sampler, task) = TailSampler::start(&config(Duration::from_secs(3600)), out.clone(), stop.clone()).unwrap();
    for t in 0..20 {
        sampler.consume(request(t, true)).unwrap();
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.spans().len(), 20);
    assert!(matches!(sampler.consume(request(99, true)), Err(ConsumeError::Unavailable(_))));
}

#[test]
fn invalid_policies_fail_start() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut cfg = TailSamplingConfig::default();
        cfg.policies[0].kind = "bogus".into();
        let err = TailSampler::start(&cfg, Recorder::default(), CancellationToken::new()).err().unwrap();
        assert!(err.to_string().contains("errors"), "{err}");
    });
}
