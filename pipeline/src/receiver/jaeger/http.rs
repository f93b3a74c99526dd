//! The collector's Thrift over HTTP: `POST /api/traces` with a binary-protocol `Batch`
//! (`Content-Type: application/x-thrift` or `application/vnd.apache.thrift.binary`), optionally
//! gzip. Answers 202 when taken, 400 unreadable, 413 over `max_request_size`, 415 another content
//! type, 429 (`Retry-After`) when the next stage is full, 503 when shutting down.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{deliver, metrics, thrift, translate};
use crate::receiver::body::decompress;
use crate::receiver::intake::{Refusal, RETRY_AFTER};
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
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "application/x-thrift" && media != "application/vnd.apache.thrift.binary" {
        metrics().rejected.with_label_values(&[TRANSPORT, "unsupported_media_type"]).inc();
        let message = format!("Content-Type {content_type:?} is not supported (application/x-thrift)");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    }
    let limit = s.limit;
    let result = async {
        let raw = axum::body::to_bytes(body, limit)
            .await
            .map_err(|e| Refusal::TooLarge(format!("body cannot be read within {limit} bytes: {e}")))?;
        let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
        let plain = decompress(encoding, raw, limit)?;
        thrift::decode_binary_batch(&plain)
            .map_err(|e| Refusal::Invalid { reason: "malformed", message: format!("invalid Thrift Batch: {e}") })
    }
    .await;
    let batch = match result {
        Ok(b) => b,
        Err(refusal) => {
            metrics().rejected.with_label_values(&[TRANSPORT, refusal.reason()]).inc();
            return refusal_response(&refusal);
        }
    };
    match deliver(s.traces.as_ref(), TRANSPORT, translate::to_otlp(batch)) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(refusal) => refusal_response(&refusal),
    }
}

fn refusal_response(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::Invalid { .. } => StatusCode::BAD_REQUEST,
        Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = (status, refusal.message().to_string()).into_response();
    if matches!(refusal, Refusal::Busy(_) | Refusal::Unavailable(_)) {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    resp
}
