//! The stand-ins the agents deliver to, counting each record by its identity: Loki push and
//! Loki's OTLP/HTTP logs endpoint (log records by their `id=<n>`), Prometheus remote write
//! (kubelet samples by series and timestamp; host samples only counted, the two agents' host
//! metric sets differ). Traces go to [`crate::otlp_receiver::OtlpReceiver`] ([`span_ids`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lgtm_pipeline::proto::{PushRequest, WriteRequest};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// What arrived so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub logs: u64,
    pub logs_dup: u64,
    pub kubelet: u64,
    pub kubelet_dup: u64,
    pub host: u64,
    pub malformed: u64,
}

#[derive(Default)]
struct Seen {
    logs: HashSet<u64>,
    kubelet: HashSet<u64>,
    counts: Counts,
}

impl Seen {
    fn log_line(&mut self, line: &str) {
        match log_id(line) {
            Some(id) if self.logs.insert(id) => self.counts.logs += 1,
            Some(_) => self.counts.logs_dup += 1,
            None => self.counts.malformed += 1,
        }
    }
}

/// The `<n>` of a record starting `id=<n> `.
pub fn log_id(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("id=")?;
    rest[..rest.find(' ').unwrap_or(rest.len())].parse().ok()
}

pub struct Sink {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/loki/api/v1/push", post(loki_push))
            .route("/otlp/v1/logs", post(otlp_logs))
            .route("/api/v1/write", post(remote_write))
            .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
            .with_state(seen.clone());
        let (tx, _) = crate::serve_until_stopped(listener, app);
        Ok(Sink { addr, seen, _stop: tx })
    }

    pub fn loki_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    pub fn otlp_logs_url(&self) -> String {
        format!("http://{}/otlp/v1/logs", self.addr)
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.seen.lock().expect("sink").counts
    }
}

type Shared = State<Arc<Mutex<Seen>>>;

fn unsnap(body: &[u8]) -> Option<Vec<u8>> {
    snap::raw::Decoder::new().decompress_vec(body).ok()
}

fn decoded(headers: &HeaderMap, body: Bytes) -> Option<Vec<u8>> {
    match headers.get("content-encoding").and_then(|v| v.to_str().ok()) {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).ok()?;
            Some(out)
        }
        Some("snappy") => unsnap(&body),
        _ => Some(body.to_vec()),
    }
}

async fn loki_push(State(seen): Shared, body: Bytes) -> StatusCode {
    let Some(req) = unsnap(&body).and_then(|raw| PushRequest::decode(raw.as_slice()).ok()) else {
        seen.lock().expect("sink").counts.malformed += 1;
        return StatusCode::BAD_REQUEST;
    };
    let mut s = seen.lock().expect("sink");
    for e in req.streams.iter().flat_map(|s| &s.entries) {
        s.log_line(&e.line);
    }
    StatusCode::NO_CONTENT
}

async fn otlp_logs(
    State(seen): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    let ct = [("content-type", "application/x-protobuf")];
    let Some(req) = decoded(&headers, body).and_then(|raw| ExportLogsServiceRequest::decode(raw.as_slice()).ok())
    else {
        seen.lock().expect("sink").counts.malformed += 1;
        return (StatusCode::BAD_REQUEST, ct);
    };
    let mut s = seen.lock().expect("sink");
    let records = req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records);
    for r in records {
        match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(AnyValue::StringValue(line)) => s.log_line(line),
            _ => s.counts.malformed += 1,
        }
    }
    (StatusCode::OK, ct)
}

async fn remote_write(State(seen): Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let raw = if headers.get("content-encoding").is_some() { decoded(&headers, body) } else { unsnap(&body) };
    let Some(req) = raw.and_then(|raw| WriteRequest::decode(raw.as_slice()).ok()) else {
        seen.lock().expect("sink").counts.malformed += 1;
        return StatusCode::BAD_REQUEST;
    };
    let mut s = seen.lock().expect("sink");
    for ts in &req.timeseries {
        let label = |n: &str| ts.labels.iter().find(|l| l.name == n).map(|l| l.value.as_str()).unwrap_or("");
        let name = label("__name__");
        if name == "up" || name.starts_with("scrape_") || name == "target_info" {
            continue;
        }
        let kubelet = label("job").starts_with("kubelet-");
        let mut labels: Vec<_> = ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        labels.sort_unstable();
        for sample in ts.samples.iter().filter(|s| !s.value.is_nan()) {
            if !kubelet {
                s.counts.host += 1;
                continue;
            }
            let mut h = DefaultHasher::new();
            labels.hash(&mut h);
            sample.timestamp.hash(&mut h);
            if s.kubelet.insert(h.finish()) {
                s.counts.kubelet += 1;
            } else {
                s.counts.kubelet_dup += 1;
            }
        }
    }
    StatusCode::NO_CONTENT
}

/// Distinct span ids the trace receiver got, and how many arrived more than once.
pub fn span_ids(rx: &crate::otlp_receiver::OtlpReceiver) -> (u64, u64) {
    let st = rx.state();
    let mut ids = HashSet::new();
    let mut dup = 0;
    let spans = st.exports.iter().flat_map(|e| &e.request.resource_spans).flat_map(|r| &r.scope_spans);
    for span in spans.flat_map(|s| &s.spans) {
        if !ids.insert(span.span_id.clone()) {
            dup += 1;
        }
    }
    (ids.len() as u64, dup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_are_read_from_the_start_of_a_record_only() {
        assert_eq!(log_id("id=42 level=info"), Some(42));
        assert_eq!(log_id("id=7"), Some(7));
        assert_eq!(log_id("x id=42"), None);
        assert_eq!(log_id("id=x "), None);
    }
}
