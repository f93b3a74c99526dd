//! Zipkin receiver on `otlp.zipkin` (default `0.0.0.0:9411`): `POST /api/v2/spans` with a JSON
//! array of spans (`application/json`, the default when no type is given) or a protobuf
//! `ListOfSpans` (`application/x-protobuf`), optionally gzip. Spans are converted to OTLP
//! ([`translate`] documents the mapping) and handed to the same [`TraceConsumer`] as OTLP spans.
//! Zipkin v1 (`/api/v1/spans`) is not served.
//!
//! Spans are read one at a time and handed on in parts of bounded size (see [`chunk_bytes`]), so
//! memory stays within a few times the request whatever its spans look like.
//!
//! Answers: 202 when taken, 400 unreadable, 413 over `otlp.max_request_size`, 415 another content
//! type, 429 with `Retry-After` when the next stage is full, 503 when shutting down. Counted in
//! `lgtm_agent_zipkin_received_total{format}` (spans) and
//! `lgtm_agent_zipkin_rejected_total{reason}` (requests).

pub mod json;
pub mod model;
pub mod proto;
pub mod translate;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use lgtm_config::{OtlpConfig, ReceiverLimits};
use prometheus::IntCounterVec;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::body::{media_type, read_plain};
use super::consumer::{span_count, TraceConsumer};
use super::http::refused_plain;
use super::intake::Refusal;
use crate::metrics::counter_vec;

#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("otlp.zipkin: cannot listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("Zipkin receiver failed: {0}")]
    Serve(std::io::Error),
}

struct ZipkinMetrics {
    received: IntCounterVec,
    rejected: IntCounterVec,
}

fn metrics() -> &'static ZipkinMetrics {
    static M: LazyLock<ZipkinMetrics> = LazyLock::new(|| ZipkinMetrics {
        received: counter_vec(
            "lgtm_agent_zipkin_received_total",
            "Zipkin spans taken, by format (json, protobuf).",
            &["format"],
        ),
        rejected: counter_vec("lgtm_agent_zipkin_rejected_total", "Zipkin requests refused, by reason.", &["reason"]),
    });
    &M
}

/// The Zipkin listener, bound then served.
pub struct ZipkinReceiver {
    listener: Option<TcpListener>,
    traces: Arc<dyn TraceConsumer>,
    max_request_size: usize,
    limits: ReceiverLimits,
}

impl ZipkinReceiver {
    /// Binds `cfg.zipkin` (nothing when it is empty or `cfg.enabled` is false).
    pub async fn bind(cfg: &OtlpConfig, traces: Arc<dyn TraceConsumer>) -> Result<ZipkinReceiver, ZipkinError> {
        let addr = cfg.zipkin.trim();
        let listener = if cfg.enabled == Some(false) || addr.is_empty() {
            None
        } else {
            let bind_error = |error| ZipkinError::Bind { addr: addr.to_string(), error };
            Some(TcpListener::bind(addr).await.map_err(bind_error)?)
        };
        let max_request_size = usize::try_from(cfg.max_request_size.bytes()).unwrap_or(usize::MAX);
        super::body::set_in_flight_budget(cfg.limits.max_in_flight_bytes.bytes());
        Ok(ZipkinReceiver { listener, traces, max_request_size, limits: cfg.limits.clone() })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ZipkinError> {
        let Some(listener) = self.listener else { return Ok(()) };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr, "Zipkin receiver listening");
        let router = router(self.traces, self.max_request_size);
        super::serve::serve_http(listener, router, self.limits, "zipkin", shutdown).await.map_err(ZipkinError::Serve)
    }
}

/// Spans are handed on in parts whose converted (OTLP) form takes about this many times the
/// request's (decompressed) size, 1 MiB at least, so that one request never holds all its spans
/// converted at once: Zipkin JSON of tiny spans (`{"traceId":"1","id":"1"}`, 25 bytes) takes about
/// 13 times its size as OTLP spans, protobuf about 15 times, typical spans about 3 times. With the
/// body itself and the encoded copy in the queue a request's peak stays within about 4 times its
/// size (RELIABILITY.md, hostile clients). A part refused by the next stage (full) answers 429:
/// the parts taken before it arrive twice when the client retries, which is allowed (at least
/// once) and rare (only requests over 1 MiB of converted spans have several parts).
const CHUNK_PER_BYTE: usize = 1;

const CHUNK_FLOOR: usize = 1024 * 1024;

fn chunk_bytes(request_bytes: usize) -> usize {
    request_bytes.saturating_mul(CHUNK_PER_BYTE).max(CHUNK_FLOOR)
}

/// Converts what `builder` holds and hands it to the consumer, counted.
fn hand_on(traces: &dyn TraceConsumer, format: &'static str, builder: translate::OtlpBuilder) -> Result<(), Refusal> {
    let req = builder.finish();
    let n = span_count(&req);
    if n > 0 {
        traces.consume(req).map_err(Refusal::from)?;
        metrics().received.with_label_values(&[format]).inc_by(n as u64);
    }
    Ok(())
}

#[derive(Clone)]
struct Shared {
    traces: Arc<dyn TraceConsumer>,
    limit: usize,
}

/// `POST /api/v2/spans`.
pub fn router(traces: Arc<dyn TraceConsumer>, limit: usize) -> Router {
    Router::new()
        .route("/api/v2/spans", post(post_spans))
        .layer(DefaultBodyLimit::disable())
        .with_state(Shared { traces, limit })
}

async fn post_spans(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = match media_type(content_type).as_str() {
        "" | "application/json" => "json",
        "application/x-protobuf" | "application/protobuf" => "protobuf",
        _ => {
            metrics().rejected.with_label_values(&["unsupported_media_type"]).inc();
            let message =
                format!("Content-Type {content_type:?} is not supported (application/json or application/x-protobuf)");
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
        }
    };
    let result = async {
        let (plain, held) = read_plain(&headers, body, s.limit).await?;
        if format == "json" {
            // Syntax first (nothing allocated): a body broken midway is refused whole rather than
            // after some of its spans were handed on.
            serde_json::from_slice::<serde::de::IgnoredAny>(&plain)
                .map_err(|e| Refusal::Invalid { reason: "malformed", message: format!("invalid Zipkin JSON: {e}") })?;
        }
        let chunk = chunk_bytes(plain.len());
        let mut builder = translate::OtlpBuilder::default();
        let mut refused = None;
        let traces = s.traces.as_ref();
        let push = |span| {
            builder.push(span);
            if builder.decoded_bytes() > chunk {
                if let Err(r) = hand_on(traces, format, std::mem::take(&mut builder)) {
                    refused = Some(r);
                    return Err(String::new());
                }
            }
            Ok(())
        };
        let read = if format == "json" { json::for_each(&plain, push) } else { proto::for_each(&plain, push) };
        if let Some(refusal) = refused {
            return Err(refusal);
        }
        read.map_err(|message| Refusal::Invalid { reason: "malformed", message })?;
        drop((plain, held));
        hand_on(traces, format, builder)?;
        Ok::<(), Refusal>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(refusal) => {
            metrics().rejected.with_label_values(&[refusal.reason()]).inc();
            refused_plain(&refusal)
        }
    }
}

#[cfg(test)]
mod tests;
