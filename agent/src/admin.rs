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
    let misconfigured = lgtm_pipeline::exporter::health::misconfigured();
    if !misconfigured.is_empty() {
        let names = misconfigured.join(", ");
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: exporter {names} misconfigured (see the log)\n"))
            .into_response();
    }
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
