//! A fake Loki: `POST /loki/api/v1/push` decoding the real wire format (snappy block +
//! `logproto.PushRequest` protobuf), recording what arrived per tenant and stream. It can be told
//! to answer errors, and stopped and restarted on the same port to simulate an outage.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lgtm_pipeline::proto::{PushRequest, StreamAdapter};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One accepted push.
#[derive(Debug, Clone)]
pub struct ReceivedPush {
    pub tenant: Option<String>,
    pub streams: Vec<StreamAdapter>,
}

#[derive(Default)]
pub struct LokiState {
    pub pushes: Vec<ReceivedPush>,
    /// Status codes to answer to the next requests instead of accepting them.
    pub fail_next: VecDeque<u16>,
    /// Requests refused because they were not valid Loki pushes.
    pub malformed: usize,
    /// Requests answered with an injected failure.
    pub failed: usize,
}

pub struct FakeLoki {
    pub addr: SocketAddr,
    state: Arc<Mutex<LokiState>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        FakeLoki::start_with(0, Arc::new(Mutex::new(LokiState::default()))).await
    }

    async fn start_with(port: u16, state: Arc<Mutex<LokiState>>) -> FakeLoki {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind fake loki");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/loki/api/v1/push", post(push)).with_state(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FakeLoki { addr, state, stop: Some(tx), task: Some(task) }
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Stops listening (connections are refused) but keeps what arrived.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Listens again on the same port, keeping what arrived before.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = FakeLoki::start_with(self.addr.port(), self.state.clone()).await;
        *self = again;
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, LokiState> {
        self.state.lock().expect("fake loki state")
    }

    /// Every entry line per stream selector, in arrival order.
    pub fn lines_by_stream(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &self.state().pushes {
            for s in &p.streams {
                out.entry(s.labels.clone()).or_default().extend(s.entries.iter().map(|e| e.line.clone()));
            }
        }
        out
    }

    pub fn total_entries(&self) -> usize {
        self.state().pushes.iter().flat_map(|p| &p.streams).map(|s| s.entries.len()).sum()
    }
}

async fn push(State(state): State<Arc<Mutex<LokiState>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let mut st = state.lock().expect("fake loki state");
    if let Some(code) = st.fail_next.pop_front() {
        st.failed += 1;
        return (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure".into());
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != "application/x-protobuf" {
        st.malformed += 1;
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unexpected content-type {ct:?}"));
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(r) => r,
        Err(e) => {
            st.malformed += 1;
            return (StatusCode::BAD_REQUEST, format!("snappy: {e}"));
        }
    };
    let req = match PushRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => {
            st.malformed += 1;
            return (StatusCode::BAD_REQUEST, format!("protobuf: {e}"));
        }
    };
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_string);
    st.pushes.push(ReceivedPush { tenant, streams: req.streams });
    (StatusCode::NO_CONTENT, String::new())
}
