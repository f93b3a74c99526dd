//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON, optionally gzip.
//!
//! Answers: 200 with the `Export*ServiceResponse` in the request's encoding; 400 with a
//! `google.rpc.Status` body for what cannot be read; 413 above `max_request_size` (checked on the
//! body as received and again after decompression); 415 for other content types; 429 with
//! `Retry-After` when the next stage is full; 503 while shutting down.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;

use super::body::{encode, read_plain, Format, Held};
use super::intake::{Intake, Refusal, RETRY_AFTER};
use super::metrics;
use super::otlp_json;

const TRANSPORT: &str = "http";

pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        // The limit is enforced in `read`, where it is counted.
        .layer(DefaultBodyLimit::disable())
        .with_state(intake)
}

/// Protobuf bodies go to [`Intake::traces_encoded`] (checked, and kept encoded when the consumer
/// takes them so); JSON is first read span by span into the same protobuf form
/// ([`super::otlp_json`]), so that a request never holds all its spans decoded.
async fn traces(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Response {
    let (format, encoded, _held) =
        match read_protobuf("traces", &intake, &headers, body, otlp_json::traces_to_protobuf).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
    answer("traces", format, intake.traces_encoded(encoded, TRANSPORT))
}

/// As traces: JSON is read metric by metric into protobuf first; then the data points are
/// decoded, converted and handed on in parts ([`Intake::metrics_encoded`]).
async fn metrics(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Response {
    let (format, encoded, _held) =
        match read_protobuf("metrics", &intake, &headers, body, otlp_json::metrics_to_protobuf).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
    answer("metrics", format, intake.metrics_encoded(encoded, TRANSPORT))
}

/// As traces: JSON is read record by record into protobuf first; then the records are decoded
/// and handed on in parts ([`Intake::logs_encoded`]).
async fn logs(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Body) -> Response {
    let (format, encoded, _held) =
        match read_protobuf("logs", &intake, &headers, body, otlp_json::logs_to_protobuf).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
    answer("logs", format, intake.logs_encoded(encoded, TRANSPORT).await)
}

/// The body as protobuf (read, decompressed, and for JSON read item by item into protobuf by
/// `from_json`, the JSON's memory given back at once), with what it holds of the in-flight
/// budget; or the refusal's answer, counted.
async fn read_protobuf(
    signal: &'static str,
    intake: &Intake,
    headers: &HeaderMap,
    body: Body,
    from_json: fn(&[u8]) -> Result<Vec<u8>, serde_json::Error>,
) -> Result<(Format, Bytes, Held), Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(format) = Format::of(content_type) else {
        return Err(unsupported(signal, content_type));
    };
    let (plain, held) = read_plain(headers, body, intake.max_request_size)
        .await
        .map_err(|refusal| refused_counted(signal, format, &refusal))?;
    let encoded = match format {
        Format::Protobuf => plain,
        Format::Json => {
            let transcoded = from_json(&plain);
            drop(plain);
            let encoded = transcoded.map_err(|e| {
                let refusal = Refusal::Invalid { reason: "malformed", message: format!("invalid OTLP/JSON: {e}") };
                refused_counted(signal, format, &refusal)
            })?;
            Bytes::from(encoded)
        }
    };
    Ok((format, encoded, held))
}

/// The answer to a refused request, counted in `lgtm_agent_otlp_rejected_total` by reason.
fn refused_counted(signal: &'static str, format: Format, refusal: &Refusal) -> Response {
    metrics::otlp().rejected.with_label_values(&[signal, refusal.reason()]).inc();
    refusal_response(format, refusal)
}

/// 415 for a `Content-Type` that is neither protobuf nor JSON, counted.
fn unsupported(signal: &'static str, content_type: Option<&str>) -> Response {
    metrics::otlp().rejected.with_label_values(&[signal, "unsupported_media_type"]).inc();
    let message =
        format!("Content-Type {content_type:?} is not supported (application/x-protobuf or application/json)");
    error(StatusCode::UNSUPPORTED_MEDIA_TYPE, Format::Protobuf, &message)
}

fn answer<R: prost::Message + serde::Serialize>(
    signal: &'static str,
    format: Format,
    result: Result<R, Refusal>,
) -> Response {
    match result {
        Ok(resp) => {
            let mut r = (StatusCode::OK, encode(format, &resp)).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            r
        }
        Err(refusal) => {
            tracing::debug!(
                signal,
                reason = refusal.reason(),
                message = refusal.message(),
                "OTLP/HTTP request refused"
            );
            refusal_response(format, &refusal)
        }
    }
}

fn refusal_response(format: Format, refusal: &Refusal) -> Response {
    refused(refusal, |status, message| error(status, format, message))
}

/// The answer to `refusal` on any of the HTTP receivers: its status, the body `answer` makes of
/// the status and message, and `Retry-After` when the client should come back.
pub(super) fn refused(refusal: &Refusal, answer: impl FnOnce(StatusCode, &str) -> Response) -> Response {
    let status = match refusal {
        Refusal::Invalid { .. } => StatusCode::BAD_REQUEST,
        Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = answer(status, refusal.message());
    if matches!(refusal, Refusal::Busy(_) | Refusal::Unavailable(_)) {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    resp
}

/// [`refused`] with the message as a plain-text body (the Jaeger and Zipkin collectors).
pub(super) fn refused_plain(refusal: &Refusal) -> Response {
    refused(refusal, |status, message| (status, message.to_string()).into_response())
}

fn error(status: StatusCode, format: Format, message: &str) -> Response {
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::InvalidArgument,
    };
    let body = super::status::http_error_body(code, message, format == Format::Json);
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    r
}
