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

use super::model::Batch;
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
    match read_in_parts(&s, &headers, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(refusal) => refused_plain(&refusal),
    }
}

/// Spans are converted and handed on in parts of at most [`part_bytes`] of the body, so that a
/// request never holds all its spans decoded and converted at once (Thrift's tiny spans, ~80
/// bytes, take about 6 times their size as Jaeger then OTLP structs). The body is checked whole
/// first (decoded span by span, nothing kept), so a body broken midway is refused before any part
/// is handed on. A part refused by the next stage (full) answers 429: the parts taken before it
/// arrive twice when the client retries (at least once), as on the Zipkin receiver.
///
/// Refusals are counted where they happen (a part refused by the next stage in [`deliver`]).
async fn read_in_parts(s: &Shared, headers: &HeaderMap, body: Body) -> Result<(), Refusal> {
    let counted = |refusal: Refusal| {
        metrics().rejected.with_label_values(&[TRANSPORT, refusal.reason()]).inc();
        refusal
    };
    let (plain, _held) = read_plain(headers, body, s.limit).await.map_err(counted)?;
    let malformed = |e: super::protocol::DecodeError| {
        counted(Refusal::Invalid { reason: "malformed", message: format!("invalid Thrift Batch: {e}") })
    };
    thrift::binary_batch_in_parts(&plain, 0, |_, _| true).map_err(malformed)?;
    let mut refused = None;
    thrift::binary_batch_in_parts(&plain, part_bytes(plain.len()), |process, spans| {
        let batch = Batch { process: process.clone(), spans };
        match deliver(s.traces.as_ref(), TRANSPORT, translate::to_otlp(batch), 1) {
            Ok(()) => true,
            Err(refusal) => {
                refused = Some(refusal);
                false
            }
        }
    })
    .map_err(malformed)?;
    refused.map_or(Ok(()), Err)
}

/// A sixteenth of the request, 256 KiB at least: a part's decoded and converted spans take a few
/// times that while the request's own bytes are held.
fn part_bytes(request_bytes: usize) -> usize {
    (request_bytes / 16).max(256 * 1024)
}
