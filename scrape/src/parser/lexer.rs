//! Byte-level scanning shared by both formats: names, label sets, quoted values, numbers.
//!
//! Scanning validates the structure of a label set (and the UTF-8 of its values) without
//! allocating; turning it into names and values happens later, and only when the scrape cache
//! does not already know the series.

use std::borrow::Cow;

use memchr::memchr2;

use super::error::ParseErrorKind;
use super::float::{self, FloatLabel};

/// First character of a metric name: `[a-zA-Z_:]`.
pub(crate) fn is_metric_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

/// Following characters of a metric name: `[a-zA-Z0-9_:]`.
pub(crate) fn is_metric_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// First character of a label name: `[a-zA-Z_]`.
pub(crate) fn is_label_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Following characters of a label name: `[a-zA-Z0-9_]`.
pub(crate) fn is_label_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `name` is a valid metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && is_metric_name_start(b[0]) && b[1..].iter().all(|&c| is_metric_name_char(c))
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && is_label_name_start(b[0]) && b[1..].iter().all(|&c| is_label_name_char(c))
}

pub(crate) fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Index of the first non-blank byte at or after `pos`.
pub(crate) fn skip_blanks(line: &[u8], mut pos: usize) -> usize {
    while pos < line.len() && is_blank(line[pos]) {
        pos += 1;
    }
    pos
}

/// Index just past the metric name starting at `pos`, or an error if none starts there.
pub(crate) fn scan_metric_name(line: &[u8], pos: usize) -> Result<usize, ParseErrorKind> {
    match line.get(pos) {
        Some(&b) if is_metric_name_start(b) => {}
        _ => return Err(ParseErrorKind::ExpectedMetricName),
    }
    let mut end = pos + 1;
    while end < line.len() && is_metric_name_char(line[end]) {
        end += 1;
    }
    Ok(end)
}

fn scan_label_name(line: &[u8], pos: usize) -> Result<usize, ParseErrorKind> {
    match line.get(pos) {
        Some(&b) if is_label_name_start(b) => {}
        _ => return Err(ParseErrorKind::ExpectedLabelName),
    }
    let mut end = pos + 1;
    while end < line.len() && is_label_name_char(line[end]) {
        end += 1;
    }
    Ok(end)
}

/// Scans a quoted string whose opening quote is at `pos - 1`. Returns the index of the closing
/// quote. A backslash escapes the next byte; the content must be UTF-8.
fn scan_quoted(line: &[u8], pos: usize) -> Result<usize, ParseErrorKind> {
    let mut i = pos;
    loop {
        let Some(off) = memchr2(b'"', b'\\', &line[i..]) else {
            return Err(ParseErrorKind::UnterminatedLabelValue);
        };
        let j = i + off;
        if line[j] == b'"' {
            if std::str::from_utf8(&line[pos..j]).is_err() {
                return Err(ParseErrorKind::InvalidUtf8);
            }
            return Ok(j);
        }
        if j + 1 >= line.len() {
            return Err(ParseErrorKind::UnterminatedLabelValue);
        }
        i = j + 2;
    }
}

/// The end of a text format sample line starting at `start` in `body`: the first line feed
/// outside a quoted label value (Prometheus's text lexer lets a quoted value hold raw line
/// feeds; a backslash escapes the next byte but not a line feed), or the end of the body.
pub(crate) fn text_sample_end(body: &[u8], start: usize) -> usize {
    let (mut in_set, mut in_quote) = (false, false);
    let mut i = start;
    while i < body.len() {
        match (body[i], in_set, in_quote) {
            (b'\n', _, false) => return i,
            (b'\\', _, true) => {
                if body.get(i + 1) == Some(&b'\n') {
                    return i + 1;
                }
                i += 1;
            }
            (b'"', true, _) => in_quote = !in_quote,
            (b'{', false, false) => in_set = true,
            (b'}', true, false) => in_set = false,
            _ => {}
        }
        i += 1;
    }
    body.len()
}

/// Scans a label set whose `{` is at `pos`; returns the index just past its `}`.
///
/// `lenient` is the text format's grammar (blanks around tokens); otherwise OpenMetrics' (no
/// blanks). Both take a trailing comma after a label, as Prometheus 3 does (2.x refused it in
/// OpenMetrics).
pub(crate) fn scan_label_set(line: &[u8], pos: usize, lenient: bool) -> Result<usize, ParseErrorKind> {
    debug_assert_eq!(line.get(pos), Some(&b'{'));
    let mut pos = pos + 1;
    loop {
        if lenient {
            pos = skip_blanks(line, pos);
        }
        if line.get(pos) == Some(&b'}') {
            return Ok(pos + 1);
        }
        pos = scan_label_name(line, pos)?;
        if lenient {
            pos = skip_blanks(line, pos);
        }
        if line.get(pos) != Some(&b'=') {
            return Err(ParseErrorKind::ExpectedEquals);
        }
        pos += 1;
        if lenient {
            pos = skip_blanks(line, pos);
        }
        if line.get(pos) != Some(&b'"') {
            return Err(ParseErrorKind::ExpectedLabelValue);
        }
        pos = scan_quoted(line, pos + 1)? + 1;
        if lenient {
            pos = skip_blanks(line, pos);
        }
        match line.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => return Ok(pos + 1),
            _ => return Err(ParseErrorKind::ExpectedCommaOrBrace),
        }
    }
}

/// Undoes the exposition formats' escaping of label values: `\\`, `\"` and `\n`. Any other
/// backslash sequence is kept as written, as Prometheus does.
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    unescape_with(s, true)
}

/// HELP text: `\\` and `\n` (and `\"` in OpenMetrics, where `quotes` is true).
pub(crate) fn unescape_with(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// The labels of an already validated label set (`{...}` as in the body), in body order.
#[derive(Debug, Clone)]
pub struct LabelIter<'a> {
    set: &'a [u8],
    pos: usize,
    float_label: Option<FloatLabel>,
}

impl<'a> LabelIter<'a> {
    pub(crate) fn new(set: &'a [u8], float_label: Option<FloatLabel>) -> LabelIter<'a> {
        LabelIter { set, pos: usize::from(!set.is_empty()), float_label }
    }
}

impl<'a> Iterator for LabelIter<'a> {
    /// Name, and the value with escapes undone.
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let set = self.set;
        let mut pos = self.pos;
        while pos < set.len() && (is_blank(set[pos]) || set[pos] == b',') {
            pos += 1;
        }
        if pos >= set.len() || set[pos] == b'}' {
            self.pos = set.len();
            return None;
        }
        // The set was validated when it was scanned, so the steps below cannot fail; they
        // still end the iteration instead of panicking if they ever did.
        let name_end = scan_label_name(set, pos).ok()?;
        let name = std::str::from_utf8(&set[pos..name_end]).ok()?;
        let mut p = skip_blanks(set, name_end);
        p = skip_blanks(set, p + 1); // '='
        let value_start = p + 1; // '"'
        let value_end = scan_quoted(set, value_start).ok()?;
        let raw = std::str::from_utf8(&set[value_start..value_end]).ok()?;
        self.pos = value_end + 1;
        let value = unescape(raw);
        match self.float_label {
            Some(f) if f.name() == name => Some((name, float::normalize(value))),
            _ => Some((name, value)),
        }
    }
}

/// Parses a sample value as Prometheus does (`NaN`, `+Inf`, `-Inf` and decimal floats; hex
/// floats, which Go also accepts, are not). Go takes no sign before `NaN`, where Rust does.
pub(crate) fn parse_value(token: &[u8]) -> Result<f64, ParseErrorKind> {
    let signed_nan = matches!(token.first(), Some(b'+' | b'-')) && token[1..].eq_ignore_ascii_case(b"nan");
    std::str::from_utf8(token)
        .ok()
        .filter(|_| !signed_nan)
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| ParseErrorKind::InvalidValue(String::from_utf8_lossy(token).into_owned()))
}

/// The end of the token starting at `pos`: the next blank or the end of the line.
pub(crate) fn token_end(line: &[u8], pos: usize, only_space: bool) -> usize {
    let mut end = pos;
    while end < line.len() && !(line[end] == b' ' || (!only_space && line[end] == b'\t')) {
        end += 1;
    }
    end
}
