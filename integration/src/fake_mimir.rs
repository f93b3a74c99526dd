//! A remote-write stand-in that pushes back as Mimir's (and Cortex's) distributor does with its
//! default limits: a per-tenant token bucket of samples (`ingestion_rate` per second, at most
//! `ingestion_burst_size` at once) that refuses a whole request it cannot pay for with 429 and
//! the distributor's text, `ingestion rate limit (<rate>) exceeded while adding <n> samples and
//! <m> metadata`. A request larger than the burst can never pass, whatever the wait. What it
//! accepts is decoded (snappy block + `WriteRequest`) and kept per series.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lgtm_pipeline::proto::WriteRequest;
use prost::Message;
use tokio::sync::oneshot;

/// Cortex 1.14's defaults (`-distributor.ingestion-rate-limit`, `-distributor.ingestion-burst-size`).
pub const CORTEX_INGESTION_RATE: f64 = 25_000.0;
pub const CORTEX_INGESTION_BURST: f64 = 50_000.0;

#[derive(Debug)]
pub struct MimirState {
    /// Samples per second and the bucket's size.
    pub rate: f64,
    pub burst: f64,
    tokens: f64,
    refilled: Instant,
    /// Samples accepted per series (labels as `name=value,...`, sorted as sent).
    pub samples: BTreeMap<String, usize>,
    /// Sample counts of every request, accepted or not, in arrival order, with the status answered.
    pub requests: Vec<(usize, u16)>,
    /// Series whose key starts with this prefix have their sample timestamps (ms) kept in
    /// `timestamps` (off unless a test sets it).
    pub keep_timestamps_of: Option<String>,
    pub timestamps: BTreeMap<String, Vec<i64>>,
}

impl MimirState {
    fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate).min(self.burst);
        self.refilled = now;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    pub fn series_with_prefix(&self, prefix: &str) -> usize {
        self.samples.keys().filter(|k| k.starts_with(prefix)).count()
    }
}

pub struct FakeMimir {
    pub addr: SocketAddr,
    state: Arc<Mutex<MimirState>>,
    _stop: oneshot::Sender<()>,
}

impl FakeMimir {
    /// Listens on 127.0.0.1 with a bucket of `burst` samples refilled at `rate` per second.
    pub async fn start(rate: f64, burst: f64) -> FakeMimir {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake mimir");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(MimirState {
            rate,
            burst,
            tokens: burst,
            refilled: Instant::now(),
            samples: BTreeMap::new(),
            requests: Vec::new(),
            keep_timestamps_of: None,
            timestamps: BTreeMap::new(),
        }));
        let app = Router::new().route("/api/v1/push", post(push)).with_state(state.clone());
        let (tx, _) = crate::serve_until_stopped(listener, app);
        FakeMimir { addr, state, _stop: tx }
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, MimirState> {
        self.state.lock().expect("fake mimir state")
    }
}

async fn push(State(state): State<Arc<Mutex<MimirState>>>, _headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let req = match snap::raw::Decoder::new().decompress_vec(&body).map(|raw| WriteRequest::decode(raw.as_slice())) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, format!("protobuf: {e}")),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("snappy: {e}")),
    };
    let n: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    let mut st = state.lock().expect("fake mimir state");
    if !st.take(n as f64) {
        st.requests.push((n, 429));
        let limit = st.rate;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!("ingestion rate limit ({limit}) exceeded while adding {n} samples and 0 metadata"),
        );
    }
    st.requests.push((n, 200));
    for ts in req.timeseries {
        let key = ts.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>().join(",");
        let key = match ts.labels.iter().find(|l| l.name == "__name__") {
            Some(name) => format!("{}{{{key}}}", name.value),
            None => key,
        };
        if st.keep_timestamps_of.as_ref().is_some_and(|p| key.starts_with(p.as_str())) {
            st.timestamps.entry(key.clone()).or_default().extend(ts.samples.iter().map(|s| s.timestamp));
        }
        *st.samples.entry(key).or_default() += ts.samples.len();
    }
    (StatusCode::OK, String::new())
}
