//! Why a scrape failed. Any failure sets `up` to 0 and ingests nothing from that scrape.

use crate::parser::{ParseError, UnsupportedContentType};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("server returned HTTP status {0}")]
    Status(u16),
    /// A 3xx with `follow_redirects: false`.
    #[error(
        "server returned HTTP status {status} redirecting to {location:?}, not followed (follow_redirects: false)"
    )]
    Redirect { status: u16, location: String },
    #[error("scrape timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    ContentType(#[from] UnsupportedContentType),
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    #[error("line {line}: duplicate label name {name:?}")]
    DuplicateLabel { line: usize, name: String },
    #[error("sample limit exceeded: {samples} samples, limit {limit}")]
    SampleLimit { samples: usize, limit: usize },
    #[error("{0}")]
    LabelLimit(String),
    #[error("invalid label name {name:?} in {series}")]
    InvalidLabelName { name: String, series: String },
    /// Metric relabeling removed `__name__` but kept other labels.
    #[error("line {line}: missing metric name (__name__ label) after metric relabeling: {series}")]
    MissingMetricName { line: usize, series: String },
}

impl ScrapeError {
    /// The `result` label of `lgtm_agent_scrapes_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Request(_) | ScrapeError::Credentials(_) => "request_error",
            ScrapeError::Tls(_) => "tls_config",
            ScrapeError::Status(_) | ScrapeError::Redirect { .. } => "http_status",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::BodyTooLarge(_) => "body_too_large",
            ScrapeError::ContentType(_)
            | ScrapeError::Parse(_)
            | ScrapeError::DuplicateLabel { .. }
            | ScrapeError::InvalidLabelName { .. }
            | ScrapeError::MissingMetricName { .. } => "parse_error",
            ScrapeError::SampleLimit { .. } => "sample_limit",
            ScrapeError::LabelLimit(_) => "label_limit",
        }
    }
}
