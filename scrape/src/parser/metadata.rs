//! Comment lines: `# HELP`, `# TYPE`, OpenMetrics' `# UNIT` and `# EOF`.

use std::borrow::Cow;

use super::error::ParseErrorKind;
use super::lexer::{is_blank, scan_metric_name, skip_blanks, unescape_with};

/// The type a `# TYPE` line declares for a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    /// `untyped` in the text format, `unknown` in OpenMetrics.
    Unknown,
    /// OpenMetrics only.
    Info,
    /// OpenMetrics only.
    StateSet,
    /// OpenMetrics only.
    GaugeHistogram,
}

impl MetricType {
    fn from_text(word: &[u8]) -> Option<MetricType> {
        Some(match word {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" => MetricType::Unknown,
            _ => return None,
        })
    }

    fn from_openmetrics(word: &[u8]) -> Option<MetricType> {
        Some(match word {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"unknown" => MetricType::Unknown,
            b"info" => MetricType::Info,
            b"stateset" => MetricType::StateSet,
            b"gaugehistogram" => MetricType::GaugeHistogram,
            _ => return None,
        })
    }
}

/// A metadata line.
#[derive(Debug, Clone, PartialEq)]
pub enum Metadata<'a> {
    Help { name: &'a str, text: Cow<'a, str> },
    Type { name: &'a str, kind: MetricType },
    Unit { name: &'a str, unit: &'a str },
}

/// What a comment line of either format turned out to be.
pub(crate) enum Comment<'a> {
    Metadata(Metadata<'a>),
    /// Text format: any other comment. Ignored.
    Other,
    /// OpenMetrics: `# EOF`.
    Eof,
}

fn name_str(b: &[u8]) -> &str {
    // Metric names are ASCII once scanned.
    std::str::from_utf8(b).unwrap_or_default()
}

fn help_text(raw: &[u8], quotes: bool) -> Result<Cow<'_, str>, ParseErrorKind> {
    let text = std::str::from_utf8(raw).map_err(|_| ParseErrorKind::InvalidHelpUtf8)?;
    Ok(unescape_with(text, quotes))
}

/// A text format line starting (after blanks) with `#`. `# HELP` and `# TYPE` (separated by
/// blanks) are metadata; anything else is a comment. A HELP may lack its text; a TYPE may not.
pub(crate) fn parse_text_comment(line: &[u8]) -> Result<Comment<'_>, ParseErrorKind> {
    let hash = skip_blanks(line, 0);
    let after = hash + 1;
    if !line.get(after).is_some_and(|&b| is_blank(b)) {
        return Ok(Comment::Other);
    }
    let word_start = skip_blanks(line, after);
    let rest = &line[word_start..];
    let is_help = rest.starts_with(b"HELP");
    let is_type = rest.starts_with(b"TYPE");
    if !(is_help || is_type) || !line.get(word_start + 4).is_some_and(|&b| is_blank(b)) {
        return Ok(Comment::Other);
    }
    let name_start = skip_blanks(line, word_start + 4);
    let name_end = scan_metric_name(line, name_start).map_err(|_| ParseErrorKind::InvalidMetadata)?;
    let name = name_str(&line[name_start..name_end]);
    if name_end < line.len() && !is_blank(line[name_end]) {
        return Err(ParseErrorKind::InvalidMetadata);
    }
    let text_start = skip_blanks(line, name_end);
    if is_help {
        let text = help_text(&line[text_start..], false)?;
        return Ok(Comment::Metadata(Metadata::Help { name, text }));
    }
    // Trailing blanks belong to the word (`# TYPE a gauge ` is refused, as by Prometheus).
    let word = &line[text_start..];
    let kind = MetricType::from_text(word)
        .ok_or_else(|| ParseErrorKind::InvalidMetricType(String::from_utf8_lossy(word).into_owned()))?;
    Ok(Comment::Metadata(Metadata::Type { name, kind }))
}

/// An OpenMetrics line starting with `#`: exactly `# HELP name text`, `# TYPE name type`,
/// `# UNIT name unit` or `# EOF`; anything else is an error. The space after the name is
/// required (the text may then be empty, except a TYPE's), and a non-empty unit must end the
/// name as `_<unit>`, as in Prometheus.
pub(crate) fn parse_openmetrics_comment(line: &[u8]) -> Result<Comment<'_>, ParseErrorKind> {
    if line == b"# EOF" {
        return Ok(Comment::Eof);
    }
    let (keyword, rest) = match line.get(..7) {
        Some(b"# HELP ") => (b'H', &line[7..]),
        Some(b"# TYPE ") => (b'T', &line[7..]),
        Some(b"# UNIT ") => (b'U', &line[7..]),
        _ => return Err(ParseErrorKind::InvalidComment),
    };
    let name_end = scan_metric_name(rest, 0).map_err(|_| ParseErrorKind::InvalidMetadata)?;
    let name = name_str(&rest[..name_end]);
    let tail: &[u8] = match rest.get(name_end) {
        None => {
            let what = match keyword {
                b'H' => "HELP",
                b'T' => "TYPE",
                _ => "UNIT",
            };
            return Err(ParseErrorKind::MissingMetadataText(what));
        }
        Some(b' ') => &rest[name_end + 1..],
        Some(_) => return Err(ParseErrorKind::InvalidMetadata),
    };
    Ok(Comment::Metadata(match keyword {
        b'H' => Metadata::Help { name, text: help_text(tail, true)? },
        b'T' => Metadata::Type {
            name,
            kind: MetricType::from_openmetrics(tail)
                .ok_or_else(|| ParseErrorKind::InvalidMetricType(String::from_utf8_lossy(tail).into_owned()))?,
        },
        _ => {
            let unit = std::str::from_utf8(tail).map_err(|_| ParseErrorKind::InvalidMetadata)?;
            // A unit, when given, is the end of the name after an underscore.
            if !unit.is_empty() && !name.strip_suffix(unit).is_some_and(|head| head.ends_with('_')) {
                return Err(ParseErrorKind::UnitNotSuffix(name.to_string()));
            }
            Metadata::Unit { name, unit }
        }
    }))
}
