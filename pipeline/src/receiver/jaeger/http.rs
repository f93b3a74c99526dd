//! The collector's Thrift over HTTP: `POST /api/traces` with a binary-protocol `Batch`
//! (`Content-Type: application/x-thrift` or `application/vnd.apache.thrift.binary`), optionally
//! gzip. Answers 202 when taken, 400 unreadable, 413 over `max_request_size`, 415 another content
//! type, 429 (`Retry-After`) when the next stage is full, 503 when shutting down.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{deliver, metrics, thrift, translate};
use crate::receiver::body::{media_type, read_plain};
use crate::receiver::http::refused_plain;
use crate::receiver::intake::Refusal;
use crate::receiver::TraceConsumer;

const TRANSPORT: &str = "thrift_http";

#[derive(Clone)]
struct Shared {
    traces: Arc<dyn TraceConsumer>,
    limit: usize,
}

pub fn router(traces: Arc<dyn TraceConsumer>, limit: usize) -> Router {
    Router::new()
        .route("/api/traces", post(post_traces))
        .layer(DefaultBodyLimit::disable())
        .with_state(Shared { traces, limit })
}

async fn post_traces(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let media = media_type(content_type);
    if media != "application/x-thrift" && media != "application/vnd.apache.thrift.binary" {
        metrics().rejected.with_label_values(&[TRANSPORT, "unsupported_media_type"]).inc();
        let message = format!("Content-Type {content_type:?} is not supported (application/x-thrift)");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    let result = read_plain(&headers, body, s.limit).await.and_then(|(plain, _held)| {
        thrift::decode_binary_batch(&plain)
            .map_err(|e| Refusal::Invalid { reason: "malformed", message: format!("invalid Thrift Batch: {e}") })
    });
    let batch = match result {
        Ok(b) => b,
        Err(refusal) => {
            metrics().rejected.with_label_values(&[TRANSPORT, refusal.reason()]).inc();
            return refused_plain(&refusal);
        }
    };
    match deliver(s.traces.as_ref(), TRANSPORT, translate::to_otlp(batch)) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(refusal) => refused_plain(&refusal),
    }
}
