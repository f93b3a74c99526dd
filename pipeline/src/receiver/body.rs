//! Reading the body of an HTTP request (OTLP, Jaeger Thrift, Zipkin): media type, size limit and
//! bounded gzip decompression; and OTLP protobuf or JSON decoding.
//!
//! OTLP/JSON (the OTLP specification, "JSON Protobuf Encoding") differs from serde's defaults in
//! ways `opentelemetry-proto`'s `with-serde` already handles: trace and span ids are hex strings,
//! 64-bit integers may be strings, enums are integers, field names are lowerCamelCase and unknown
//! fields are ignored. The tests in `tests.rs` (`http_json_*`) pin that behaviour on spec examples.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;

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

/// Reads a request body of at most `limit` bytes and undoes its `Content-Encoding`, the result
/// again at most `limit` bytes.
pub async fn read_plain(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| Refusal::TooLarge(format!("body cannot be read within {limit} bytes: {e}")))?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    decompress(encoding, raw, limit)
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

/// Decodes an OTLP request message.
pub fn decode<T: prost::Message + DeserializeOwned + Default>(format: Format, body: &[u8]) -> Result<T, Refusal> {
    match format {
        Format::Protobuf => T::decode(body)
            .map_err(|e| Refusal::Invalid { reason: "malformed", message: format!("invalid protobuf: {e}") }),
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| Refusal::Invalid { reason: "malformed", message: format!("invalid OTLP/JSON: {e}") }),
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
