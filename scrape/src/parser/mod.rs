//! Exposition parsers: the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.
//!
//! [`Parser`] is an iterator over a body (`&[u8]`, already decompressed) that yields
//! [`Entry`]s borrowing from it: nothing is copied or allocated for a sample line. A
//! [`Series`] gives the raw bytes of its name and label set (the scrape cache's key), the value,
//! the optional timestamp, and its labels parsed on demand.
//!
//! Behaviour, as Prometheus:
//! - Parsing stops at the first malformed line with a [`ParseError`] naming the line; the scrape
//!   loop then fails the whole scrape (`up` = 0) and ingests nothing from the body.
//! - Both: `le` of a histogram and `quantile` of a summary are written in float form (`"1"` ->
//!   `"1.0"`, `"0x1p-3"` -> `"0.125"`), under the type of the last `# TYPE` line, as Prometheus 3
//!   does (see `float.rs`); a trailing comma ends a label set.
//! - OpenMetrics: the body must end with `# EOF`; timestamps are float seconds (converted to
//!   milliseconds); exemplars are checked (on any sample, as Prometheus 3) and skipped; `<family>_created` series are ordinary samples (Prometheus 2.42 ingests them so,
//!   and Prometheus 3 does too unless its created-timestamp feature is on, which this agent
//!   does not implement); `# HELP`, `# TYPE` and `# UNIT` need their text, and a unit must end
//!   the metric name.
//! - Text format: blanks are allowed between tokens, a trailing comma in a label set, empty
//!   lines and free comments; timestamps are integer milliseconds; the last line may lack its
//!   newline; a quoted label value may hold a raw line feed (Prometheus's text lexer allows it),
//!   so such a sample spans lines.
//!
//! Not handled: the protobuf exposition format (never asked for in [`ACCEPT_HEADER`]), quoted
//! UTF-8 metric names, and hex float values.
//!
//! ```
//! use lgtm_scrape::parser::{Entry, Format, Parser};
//!
//! let body = b"# TYPE up gauge\nup{job=\"node\"} 1 1700000000000\n";
//! let mut n = 0;
//! for entry in Parser::new(body, Format::Text) {
//!     if let Entry::Series(s) = entry.unwrap() {
//!         assert_eq!(s.raw(), b"up{job=\"node\"}");
//!         assert_eq!(s.value, 1.0);
//!         assert_eq!(s.labels().next().unwrap(), ("job", "node".into()));
//!         n += 1;
//!     }
//! }
//! assert_eq!(n, 1);
//! ```

mod content_type;
mod error;
mod float;
mod lexer;
mod metadata;
mod series;
#[cfg(test)]
mod tests;

pub use content_type::{UnsupportedContentType, ACCEPT_HEADER};
pub use error::{ParseError, ParseErrorKind};
pub use lexer::{is_valid_label_name, is_valid_metric_name, LabelIter};
pub use metadata::{Metadata, MetricType};
pub use series::Series;

/// An `le` (histogram) or `quantile` (summary) label value as Prometheus 3 stores it: its
/// OpenMetrics float form when it parses as a Go float (`"1"` -> `"1.0"`), else as written.
/// The parsers apply it themselves; this is for tests that compare with Prometheus 2.
pub fn float_form(value: &str) -> std::borrow::Cow<'_, str> {
    float::normalize(std::borrow::Cow::Borrowed(value))
}

use memchr::memchr;

use float::FloatLabel;
use metadata::Comment;

/// The exposition format of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0` (and `0.0.1`).
    OpenMetrics,
}

/// One meaningful line of a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Series(Series<'a>),
    Metadata(Metadata<'a>),
}

/// Iterates over the entries of a body. After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Parser<'a> {
    body: &'a [u8],
    pos: usize,
    line: usize,
    format: Format,
    seen_eof: bool,
    done: bool,
    /// The label written in float form under the type of the last `# TYPE` line.
    float_label: Option<FloatLabel>,
    /// OpenMetrics: an error found after a sample that still counts (see `parse_openmetrics_line`).
    pending: Option<ParseErrorKind>,
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8], format: Format) -> Parser<'a> {
        Parser { body, pos: 0, line: 0, format, seen_eof: false, done: false, float_label: None, pending: None }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn fail(&mut self, kind: ParseErrorKind) -> Option<Result<Entry<'a>, ParseError>> {
        self.done = true;
        Some(Err(ParseError { line: self.line, kind }))
    }

    fn next_text(&mut self, line: &'a [u8]) -> Result<Option<Entry<'a>>, ParseErrorKind> {
        let first = lexer::skip_blanks(line, 0);
        match line.get(first) {
            None => Ok(None),
            Some(b'#') => match metadata::parse_text_comment(line)? {
                Comment::Metadata(m) => Ok(Some(Entry::Metadata(m))),
                Comment::Other | Comment::Eof => Ok(None),
            },
            Some(_) => series::parse_text_line(line, self.line).map(|s| Some(Entry::Series(s))),
        }
    }

    fn next_openmetrics(&mut self, line: &'a [u8]) -> Result<Option<Entry<'a>>, ParseErrorKind> {
        match line.first() {
            None => Err(ParseErrorKind::EmptyLine),
            Some(b'#') => match metadata::parse_openmetrics_comment(line)? {
                Comment::Eof => {
                    self.seen_eof = true;
                    Ok(None)
                }
                Comment::Metadata(m) => Ok(Some(Entry::Metadata(m))),
                Comment::Other => Err(ParseErrorKind::InvalidComment),
            },
            Some(_) => {
                let (series, after) = series::parse_openmetrics_line(line, self.line)?;
                self.pending = after;
                Ok(Some(Entry::Series(series)))
            }
        }
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(kind) = self.pending.take() {
                return self.fail(kind);
            }
            if self.pos >= self.body.len() {
                self.done = true;
                if self.format == Format::OpenMetrics && !self.seen_eof {
                    self.line += 1;
                    return self.fail(ParseErrorKind::MissingEof);
                }
                return None;
            }
            self.line += 1;
            if self.seen_eof {
                return self.fail(ParseErrorKind::DataAfterEof);
            }
            let start = self.pos;
            let end = memchr(b'\n', &self.body[start..]).map_or(self.body.len(), |i| start + i);
            self.pos = (end + 1).min(self.body.len());
            let body = self.body;
            let parsed = match self.format {
                Format::Text => match self.next_text(&body[start..end]) {
                    Err(ParseErrorKind::UnterminatedLabelValue) if end < body.len() => {
                        // A quoted label value with a raw line feed: the sample goes on past
                        // it. Found once, on this error path only, so common bodies pay nothing.
                        let end = lexer::text_sample_end(body, start);
                        let parsed = series::parse_text_line(&body[start..end], self.line);
                        if parsed.is_ok() {
                            self.line += memchr::memchr_iter(b'\n', &body[start..end]).count();
                            self.pos = (end + 1).min(body.len());
                        }
                        parsed.map(|s| Some(Entry::Series(s)))
                    }
                    other => other,
                },
                // An unterminated last line other than `# EOF` means the body was cut short:
                // Prometheus fails on that line, before counting a sample on it.
                Format::OpenMetrics if end == body.len() && &body[start..end] != b"# EOF" => {
                    Err(ParseErrorKind::MissingEof)
                }
                Format::OpenMetrics => self.next_openmetrics(&body[start..end]),
            };
            match parsed {
                Ok(Some(Entry::Series(mut series))) => {
                    series.float_label = self.float_label;
                    return Some(Ok(Entry::Series(series)));
                }
                Ok(Some(entry)) => {
                    if let Entry::Metadata(Metadata::Type { kind, .. }) = &entry {
                        // Whatever name the TYPE line carries, as Prometheus 3.
                        self.float_label = match kind {
                            MetricType::Histogram => Some(FloatLabel::Le),
                            MetricType::Summary => Some(FloatLabel::Quantile),
                            _ => None,
                        };
                    }
                    return Some(Ok(entry));
                }
                Ok(None) => continue,
                Err(kind) => return self.fail(kind),
            }
        }
    }
}
