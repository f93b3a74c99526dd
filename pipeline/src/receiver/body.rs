//! Reading the body of an HTTP request (OTLP, Jaeger Thrift, Zipkin): media type, size limit and
//! bounded gzip decompression; and OTLP protobuf or JSON decoding.
//!
//! OTLP/JSON (the OTLP specification, "JSON Protobuf Encoding") differs from serde's defaults in
//! ways `opentelemetry-proto`'s `with-serde` already handles: trace and span ids are hex strings,
//! 64-bit integers may be strings, enums are integers, field names are lowerCamelCase and unknown
//! fields are ignored. The tests in `tests.rs` (`http_json_*`) pin that behaviour on spec examples.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::intake::Refusal;

/// The two encodings of OTLP/HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// From a `Content-Type` header value (parameters such as `charset` ignored).
    pub fn of(content_type: Option<&str>) -> Option<Format> {
        match media_type(content_type).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// The media type of a `Content-Type` value: lower-cased, parameters such as `charset` dropped,
/// `""` when there is none.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type.and_then(|v| v.split(';').next()).unwrap_or("").trim().to_ascii_lowercase()
}

/// Bytes of request bodies all receivers hold while reading and handling them
/// (`otlp.limits.max_in_flight_bytes`).
fn in_flight() -> &'static Semaphore {
    static BUDGET: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(DEFAULT_BUDGET));
    &BUDGET
}

/// The budget until [`set_in_flight_budget`] is called (the config's default).
const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

/// What [`set_in_flight_budget`] last gave [`in_flight`].
static BUDGET_SIZE: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);

/// Sets the in-flight budget of all receivers (each receiver's `bind` calls it with the same
/// config; the last call wins).
pub fn set_in_flight_budget(bytes: u64) {
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let budget = in_flight();
    let before = BUDGET_SIZE.swap(bytes, Ordering::SeqCst);
    if bytes > before {
        budget.add_permits(bytes - before);
    } else {
        budget.forget_permits(before - bytes);
    }
}

/// Bytes held against the in-flight budget, given back when dropped.
pub struct Held(#[allow(dead_code)] Option<SemaphorePermit<'static>>);

impl Held {
    /// Nothing held yet.
    pub fn none() -> Held {
        Held(None)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Holds at least `n` bytes in all: takes what is missing.
    pub fn at_least(&mut self, n: usize) -> Result<(), Refusal> {
        self.take(n.saturating_sub(self.bytes()))
    }

    /// Takes `n` more bytes of the budget, or says the receivers are full.
    pub fn take(&mut self, n: usize) -> Result<(), Refusal> {
        if n == 0 {
            return Ok(());
        }
        let busy = || {
            Refusal::Busy(format!(
                "the receivers hold otlp.limits.max_in_flight_bytes ({} bytes) of requests; retry later",
                BUDGET_SIZE.load(Ordering::Relaxed)
            ))
        };
        let n = u32::try_from(n).map_err(|_| busy())?;
        let permit = in_flight().try_acquire_many(n).map_err(|_| busy())?;
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
        Ok(())
    }
}

/// Reads a request body of at most `limit` bytes and undoes its `Content-Encoding`, the result
/// again at most `limit` bytes. Its bytes are held against the receivers' in-flight budget until
/// the returned [`Held`] is dropped (keep it until the request is handled); a body that would go
/// over is refused as [`Refusal::Busy`] (429, retried by clients).
pub async fn read_plain(headers: &HeaderMap, body: Body, limit: usize) -> Result<(Bytes, Held), Refusal> {
    use futures::StreamExt;
    let mut held = Held(None);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(Refusal::TooLarge(format!("body of {n} bytes is larger than {limit} bytes")));
        }
    }
    let mut raw = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut frames = body.into_data_stream();
    while let Some(chunk) = frames.next().await {
        let chunk = chunk
            .map_err(|e| Refusal::Invalid { reason: "body_read", message: format!("the body cannot be read: {e}") })?;
        if raw.len() + chunk.len() > limit {
            return Err(Refusal::TooLarge(format!("body cannot be read within {limit} bytes: length limit exceeded")));
        }
        held.take(chunk.len())?;
        raw.extend_from_slice(&chunk);
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let compressed =
        !matches!(encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref(), None | Some("") | Some("identity"));
    let plain = decompress(encoding, Bytes::from(raw), limit)?;
    if compressed {
        held.take(plain.len())?;
    }
    Ok((plain, held))
}

/// Undoes `Content-Encoding` (none, `identity` or `gzip`), never producing more than `limit` bytes.
pub fn decompress(encoding: Option<&str>, body: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut out).map_err(|e| Refusal::Invalid {
                reason: "bad_gzip",
                message: format!("gzip body cannot be decompressed: {e}"),
            })?;
            if out.len() > limit {
                return Err(Refusal::TooLarge(format!("body is larger than {limit} bytes once decompressed")));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(Refusal::Invalid {
            reason: "unsupported_encoding",
            message: format!("Content-Encoding {other:?} is not supported (use gzip)"),
        }),
    }
}

/// Encodes an OTLP answer message.
pub fn encode<T: prost::Message + serde::Serialize>(format: Format, message: &T) -> Vec<u8> {
    match format {
        Format::Protobuf => message.encode_to_vec(),
        // Serializing generated OTLP types to a Vec cannot fail (no maps with non-string keys).
        Format::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// What a gRPC request holds of the in-flight budget, shared by its body (the bytes as they
/// arrive), its decoder (the message once decompressed) and the handler (until it answers).
pub type SharedHeld = std::sync::Arc<std::sync::Mutex<Held>>;

/// A gRPC request body whose data frames are held against the receivers' in-flight budget as
/// they arrive (tonic buffers a whole message before decoding it). A frame that would go over
/// ends the body with RESOURCE_EXHAUSTED carrying `RetryInfo` (tonic answers a body error that is
/// a `Status` with that status), after `refused` has counted it.
pub struct BudgetedBody<B> {
    inner: std::pin::Pin<Box<B>>,
    held: SharedHeld,
    refused: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> BudgetedBody<B> {
    pub fn new(inner: B, held: SharedHeld, refused: impl FnOnce() + Send + 'static) -> BudgetedBody<B> {
        BudgetedBody { inner: Box::pin(inner), held, refused: Some(Box::new(refused)) }
    }
}

impl<B> http_body::Body for BudgetedBody<B>
where
    B: http_body::Body,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        use bytes::Buf;
        use std::task::Poll;
        let frame = match self.inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let taken = match self.held.lock() {
                Ok(mut held) => held.take(data.remaining()),
                Err(_) => Ok(()),
            };
            if let Err(refusal) = taken {
                if let Some(count) = self.refused.take() {
                    count();
                }
                return Poll::Ready(Some(Err(Box::new(super::grpc::status_of(refusal)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
