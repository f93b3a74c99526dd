//! What went wrong in an exposition body, and where.

/// A malformed body. Parsing stops at the first error and the scrape fails (`up` = 0), as in
/// Prometheus: a partly understood body is not ingested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number in the (decompressed) body.
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("expected a metric name")]
    ExpectedMetricName,
    #[error("expected a label name")]
    ExpectedLabelName,
    #[error("expected '=' after a label name")]
    ExpectedEquals,
    #[error("expected a quoted label value")]
    ExpectedLabelValue,
    #[error("unterminated label value")]
    UnterminatedLabelValue,
    #[error("label value is not valid UTF-8")]
    InvalidUtf8,
    #[error("expected ',' or '}}' after a label")]
    ExpectedCommaOrBrace,
    #[error("expected a value")]
    ExpectedValue,
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    #[error("unexpected {0:?} at the end of the line")]
    TrailingData(String),
    #[error("invalid exemplar")]
    InvalidExemplar,
    #[error("invalid metric type {0:?}")]
    InvalidMetricType(String),
    #[error("invalid metadata line")]
    InvalidMetadata,
    /// OpenMetrics: `# HELP name`, `# TYPE name` or `# UNIT name` without the space and text.
    #[error("expected text in {0}")]
    MissingMetadataText(&'static str),
    /// OpenMetrics: a `# UNIT` that is not `_<unit>` at the end of the metric name.
    #[error("unit not a suffix of metric {0:?}")]
    UnitNotSuffix(String),
    #[error("HELP text is not valid UTF-8")]
    InvalidHelpUtf8,
    #[error("invalid comment (OpenMetrics allows only HELP, TYPE, UNIT and EOF)")]
    InvalidComment,
    #[error("empty line (not allowed in OpenMetrics)")]
    EmptyLine,
    #[error("data does not end with # EOF")]
    MissingEof,
    #[error("unexpected data after # EOF")]
    DataAfterEof,
}
