//! Content negotiation: what we ask for, and which parser a response's `Content-Type` selects.

use super::Format;

/// The `Accept` header of every scrape: OpenMetrics preferred, the text format next, anything
/// as a last resort (roughly what Prometheus sends when protobuf scraping is off).
pub const ACCEPT_HEADER: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// A response in a format this agent cannot parse (the protobuf exposition format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported Content-Type {0:?}")]
pub struct UnsupportedContentType(pub String);

impl Format {
    /// The parser for a response's `Content-Type`. A missing or unknown media type falls back to
    /// the text format, as Prometheus 2 did (and Prometheus 3 does with
    /// `fallback_scrape_protocol: PrometheusText0.0.4`).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Format, UnsupportedContentType> {
        let Some(ct) = content_type else { return Ok(Format::Text) };
        let media_type = ct.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Ok(Format::OpenMetrics)
        } else if media_type.eq_ignore_ascii_case("application/vnd.google.protobuf") {
            Err(UnsupportedContentType(ct.to_string()))
        } else {
            Ok(Format::Text)
        }
    }
}
