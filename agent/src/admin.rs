//! The admin server: `/healthz` (no component died), `/readyz` (every configured receiver,
//! source and exporter running, and not shutting down; see `lgtm_pipeline::health`), `/metrics`
//! (self-metrics, Prometheus text format), `/targets` (what this replica scrapes), and with
//! `admin.enable_reload` `POST /-/reload`. Nothing else here changes the agent's state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lgtm_pipeline::health;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::reload::ReloadRequest;

/// What the admin handlers read.
pub struct AdminState {
    /// Everything was started and the agent is not stopping.
    started: AtomicBool,
    /// Refreshes gauges that are computed on demand (queue sizes) before `/metrics` renders.
    before_render: Box<dyn Fn() + Send + Sync>,
    /// JSON of the scrape targets, if this mode scrapes.
    targets: Box<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Where `POST /-/reload` asks for a reload; `None` when `admin.enable_reload` is off.
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

type Render = Box<dyn Fn() + Send + Sync>;
type Targets = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

impl AdminState {
    pub fn new(before_render: Render, targets: Targets, reload: Option<mpsc::Sender<ReloadRequest>>) -> AdminState {
        AdminState { started: AtomicBool::new(false), before_render, targets, reload }
    }

    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Relaxed);
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/targets", get(targets));
    if state.reload.is_some() {
        app = app.route("/-/reload", post(reload));
    }
    let app = app.with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// One line per component: `name: state`.
fn listing(components: &[(String, health::State)]) -> String {
    components.iter().map(|(name, state)| format!("{name}: {state}\n")).collect()
}

async fn healthz() -> Response {
    let dead = health::dead();
    if dead.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy\n{}", listing(&dead))).into_response()
    }
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if !s.started.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or stopping\n").into_response();
    }
    let waiting = health::not_running();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}", listing(&waiting))).into_response()
    }
}

/// 200 with `reloading` or `unchanged`; 400 with the config error (the running config stays).
async fn reload(State(s): State<Arc<AdminState>>) -> Response {
    let Some(tx) = &s.reload else { return StatusCode::NOT_FOUND.into_response() };
    let (reply, answer) = oneshot::channel();
    if tx.send(ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    match answer.await {
        Ok(Ok(text)) => (StatusCode::OK, text).into_response(),
        Ok(Err(error)) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (s.before_render)();
    let body = lgtm_pipeline::metrics::render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// JSON by default; a small HTML table when the client asks for `text/html` (a browser).
async fn targets(State(s): State<Arc<AdminState>>, headers: axum::http::HeaderMap) -> Response {
    let view = (s.targets)();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').next().is_some_and(|first| first.trim().starts_with("text/html")));
    if wants_html {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], targets_html(&view)).into_response()
    } else {
        axum::Json(view).into_response()
    }
}

fn targets_html(view: &serde_json::Value) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>lgtm-agent targets</title>\
         <style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;\
         padding:4px 8px;text-align:left}.up{color:#080}.down{color:#b00}</style></head><body>\
         <h1>Scrape targets</h1><table><tr><th>job</th><th>endpoint</th><th>health</th><th>labels</th>\
         <th>last scrape</th><th>duration</th><th>samples</th><th>error</th></tr>",
    );
    let empty = Vec::new();
    for t in view["targets"].as_array().unwrap_or(&empty) {
        let health = t["health"].as_str().unwrap_or("unknown");
        let labels = t["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let age = t["last_scrape_unix_ms"].as_u64().map(|ms| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(ms);
            format!("{:.1}s ago", now.saturating_sub(ms) as f64 / 1000.0)
        });
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(t["job"].as_str().unwrap_or("")),
            escape(t["scrape_url"].as_str().unwrap_or("")),
            if health == "up" { "up" } else { "down" },
            escape(health),
            escape(&labels),
            age.unwrap_or_else(|| "never".into()),
            t["last_scrape_duration_seconds"].as_f64().map(|d| format!("{:.3}s", d)).unwrap_or_default(),
            t["last_samples"].as_u64().map(|n| n.to_string()).unwrap_or_default(),
            escape(t["last_error"].as_str().unwrap_or("")),
        ));
    }
    out.push_str("</table>");
    if let Some(d) = view.get("discovery").filter(|d| !d.is_null()) {
        out.push_str("<h2>Discovery</h2><pre>");
        out.push_str(&escape(&serde_json::to_string_pretty(d).unwrap_or_default()));
        out.push_str("</pre>");
    }
    out.push_str("</body></html>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
