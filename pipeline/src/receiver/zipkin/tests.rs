//! What Zipkin clients are told over HTTP: taken, or refused with the right status and counted.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{metrics, router};
use crate::receiver::consumer::{span_count, ConsumeError, TraceConsumer};

const LIMIT: usize = 64 * 1024;

/// Counts the spans it takes; answers Busy while `busy` is set.
#[derive(Default)]
struct Spans {
    taken: AtomicUsize,
    busy: AtomicBool,
}

impl TraceConsumer for Spans {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        if self.busy.load(Ordering::Relaxed) {
            return Err(ConsumeError::Busy("full".into()));
        }
        self.taken.fetch_add(span_count(&request), Ordering::Relaxed);
        Ok(())
    }
}

async fn serve(spans: Arc<Spans>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(spans, LIMIT)).await });
    format!("http://{addr}/api/v2/spans")
}

fn rejected(reason: &str) -> u64 {
    metrics().rejected.with_label_values(&[reason]).get()
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

const ONE_SPAN: &str =
    r#"[{"traceId":"0102030405060708","id":"0000000000000001","name":"op","timestamp":1,"duration":2}]"#;

#[tokio::test]
async fn json_plain_and_gzip_is_taken_and_refusals_answer_their_status() {
    let spans = Arc::new(Spans::default());
    let url = serve(spans.clone()).await;
    let client = reqwest::Client::new();
    let post = |ct: Option<&str>, body: Vec<u8>, encoding: Option<&str>| {
        let mut req = client.post(&url).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        req.send()
    };

    let resp = post(None, ONE_SPAN.into(), None).await.unwrap();
    assert_eq!(resp.status(), 202, "no Content-Type is JSON");
    let resp = post(Some("application/json; charset=utf-8"), gzip(ONE_SPAN.as_bytes()), Some("gzip")).await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(spans.taken.load(Ordering::Relaxed), 2);

    let before = rejected("unsupported_media_type");
    let resp = post(Some("text/plain"), ONE_SPAN.into(), None).await.unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(rejected("unsupported_media_type"), before + 1);

    let before = rejected("malformed");
    let resp = post(Some("application/json"), b"{\"not\": \"an array\"}".to_vec(), None).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(rejected("malformed"), before + 1);

    let before = rejected("bad_gzip");
    let resp = post(Some("application/json"), ONE_SPAN.into(), Some("gzip")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(rejected("bad_gzip"), before + 1);

    // Small on the wire, over the limit once decompressed; then over the limit as sent.
    let before = rejected("too_large");
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < LIMIT);
    let resp = post(Some("application/json"), bomb, Some("gzip")).await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post(Some("application/json"), vec![b' '; LIMIT + 1], None).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(rejected("too_large"), before + 2);

    spans.busy.store(true, Ordering::Relaxed);
    let before = rejected("busy");
    let resp = post(Some("application/json"), ONE_SPAN.into(), None).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    assert_eq!(rejected("busy"), before + 1);
    assert_eq!(spans.taken.load(Ordering::Relaxed), 2, "nothing refused was taken");
}
