//! The admin server: `/healthz` (the process is up), `/readyz` (sources and exporters started and
//! not shutting down), `/metrics` (self-metrics, Prometheus text format), `/targets` (what this
//! replica scrapes). Read-only: nothing here changes the agent's state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// What the admin handlers read.
pub struct AdminState {
    pub ready: AtomicBool,
    /// Refreshes gauges that are computed on demand (queue sizes) before `/metrics` renders.
    pub before_render: Box<dyn Fn() + Send + Sync>,
    /// JSON of the scrape targets, if this mode scrapes.
    pub targets: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/targets", get(targets))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (s.before_render)();
    let body = lgtm_pipeline::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn targets(State(s): State<Arc<AdminState>>) -> Response {
    axum::Json((s.targets)()).into_response()
}
