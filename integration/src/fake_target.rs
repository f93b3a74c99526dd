//! A scrape target whose body the test changes at will (Prometheus text format).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub struct FakeTarget {
    pub addr: SocketAddr,
    body: Arc<Mutex<String>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeTarget {
    pub async fn start(body: &str) -> FakeTarget {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake target");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(body.to_string()));
        let app = Router::new().route("/metrics", get(metrics)).with_state(body.clone());
        let (tx, _) = crate::serve_until_stopped(listener, app);
        FakeTarget { addr, body, _stop: tx }
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().expect("body") = body.to_string();
    }
}

async fn metrics(State(body): State<Arc<Mutex<String>>>) -> impl IntoResponse {
    let b = body.lock().expect("body").clone();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], b)
}
