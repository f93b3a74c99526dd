//! One sample line: `name{labels} value [timestamp]`, in either format.

use super::error::ParseErrorKind;
use super::float::FloatLabel;
use super::lexer::{parse_value, scan_label_set, scan_metric_name, skip_blanks, token_end, LabelIter};

/// One sample of the body, borrowed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    series: &'a [u8],
    name: &'a str,
    label_set: &'a [u8],
    /// The sample value.
    pub value: f64,
    /// The explicit timestamp in milliseconds, if the line has one (OpenMetrics' seconds are
    /// converted, truncating below the millisecond as Prometheus does).
    pub timestamp_ms: Option<i64>,
    /// 1-based line number in the body.
    pub line: usize,
    /// The label written in float form (`le` under a histogram, `quantile` under a summary).
    pub(crate) float_label: Option<FloatLabel>,
}

impl<'a> Series<'a> {
    /// The metric name and label set exactly as written (`foo{a="b"}`): the key of the scrape
    /// cache. Two spellings of one series give two keys that resolve to the same labels.
    pub fn raw(&self) -> &'a [u8] {
        self.series
    }

    /// The metric name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The labels (without `__name__`), in body order, escapes undone; `le` of a histogram and
    /// `quantile` of a summary in float form, as Prometheus 3 (`"1"` -> `"1.0"`). The label set
    /// was validated when the line was read, so this cannot fail.
    pub fn labels(&self) -> LabelIter<'a> {
        LabelIter::new(self.label_set, self.float_label)
    }
}

/// A text format (0.0.4) sample line: blanks allowed between tokens (blanks before the name
/// end up in the name, which the scrape loop then refuses, as Prometheus does), a trailing
/// comma allowed in the label set, integer millisecond timestamps (digits only).
pub(crate) fn parse_text_line(line: &[u8], line_no: usize) -> Result<Series<'_>, ParseErrorKind> {
    let start = skip_blanks(line, 0);
    let name_end = scan_metric_name(line, start)?;
    let brace = skip_blanks(line, name_end);
    let (label_set, series_end) = if line.get(brace) == Some(&b'{') {
        let end = scan_label_set(line, brace, true)?;
        (&line[brace..end], end)
    } else {
        (&line[..0], name_end)
    };
    // The value may follow the name or the label set without a blank, as in Prometheus's text
    // lexer (`foo.5` is `foo` = 0.5; `foo-bar 1` fails on the value `-bar`).
    let value_start = skip_blanks(line, series_end);
    let value_end = token_end(line, value_start, false);
    if value_end == value_start {
        return Err(ParseErrorKind::ExpectedValue);
    }
    let value = parse_value(&line[value_start..value_end])?;
    let ts_start = skip_blanks(line, value_end);
    let mut timestamp_ms = None;
    let mut end = ts_start;
    if ts_start < line.len() {
        let ts_end = token_end(line, ts_start, false);
        let token = &line[ts_start..ts_end];
        // Digits only, as Prometheus's text lexer (no sign).
        let ts = std::str::from_utf8(token)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| ParseErrorKind::InvalidTimestamp(String::from_utf8_lossy(token).into_owned()))?;
        timestamp_ms = Some(ts);
        end = skip_blanks(line, ts_end);
    }
    if end < line.len() {
        return Err(ParseErrorKind::TrailingData(String::from_utf8_lossy(&line[end..]).into_owned()));
    }
    // Prometheus keeps blanks before the name as part of it, and then refuses the name (the
    // sample counts as scraped; the scrape fails): so does this parser, by leaving them in.
    Ok(Series {
        series: &line[..series_end],
        // The name is blanks and `[a-zA-Z0-9_:]` bytes, hence ASCII.
        name: std::str::from_utf8(&line[..name_end]).unwrap_or_default(),
        label_set,
        value,
        timestamp_ms,
        line: line_no,
        float_label: None,
    })
}

/// An OpenMetrics 1.0 sample line: single spaces between tokens, float-second timestamps, an
/// optional exemplar (` # {labels} value [timestamp]`) on any sample (as Prometheus 3; 2.x
/// allowed one only on `*_total` and `*_bucket`), which is checked and skipped (Prometheus
/// keeps exemplars only with its exemplar storage on, and its agent mode sends none by default).
///
/// The second value is an error that comes after the sample counts: Prometheus 3's lexer finds
/// no token in a space followed by a space or the line's end after the value (`a 1 \n`,
/// `a 1  2`), its parser then returns the sample, and the next read fails the scrape.
pub(crate) fn parse_openmetrics_line(
    line: &[u8],
    line_no: usize,
) -> Result<(Series<'_>, Option<ParseErrorKind>), ParseErrorKind> {
    let name_end = scan_metric_name(line, 0)?;
    let (label_set, series_end) = if line.get(name_end) == Some(&b'{') {
        let end = scan_label_set(line, name_end, false)?;
        (&line[name_end..end], end)
    } else {
        (&line[..0], name_end)
    };
    if line.get(series_end) != Some(&b' ') {
        return Err(ParseErrorKind::ExpectedValue);
    }
    let value_start = series_end + 1;
    let value_end = token_end(line, value_start, true);
    if value_end == value_start {
        return Err(ParseErrorKind::ExpectedValue);
    }
    let value = parse_value(&line[value_start..value_end])?;
    let mut pos = value_end;
    let mut timestamp_ms = None;
    let mut after = None;
    if pos < line.len() {
        pos += 1; // the space
        match line.get(pos) {
            None | Some(b' ') => {
                after = Some(ParseErrorKind::TrailingData(String::from_utf8_lossy(&line[pos - 1..]).into_owned()))
            }
            Some(b'#') => skip_exemplar(line, pos)?,
            Some(_) => {
                let ts_end = token_end(line, pos, true);
                timestamp_ms = Some(parse_openmetrics_timestamp(&line[pos..ts_end])?);
                pos = ts_end;
                if pos < line.len() {
                    pos += 1;
                    if pos == line.len() {
                        // A space after the timestamp with no exemplar after it.
                        return Err(ParseErrorKind::TrailingData(" ".into()));
                    }
                    skip_exemplar(line, pos)?;
                }
            }
        }
    }
    let series = Series {
        series: &line[..series_end],
        name: std::str::from_utf8(&line[..name_end]).unwrap_or_default(),
        label_set,
        value,
        timestamp_ms,
        line: line_no,
        float_label: None,
    };
    Ok((series, after))
}

/// Seconds since the epoch as a float, to milliseconds. NaN and infinities are refused.
fn parse_openmetrics_timestamp(token: &[u8]) -> Result<i64, ParseErrorKind> {
    let invalid = || ParseErrorKind::InvalidTimestamp(String::from_utf8_lossy(token).into_owned());
    let seconds = parse_value(token).map_err(|_| invalid())?;
    if !seconds.is_finite() {
        return Err(invalid());
    }
    let ms = seconds * 1000.0;
    // Out of the range of i64 milliseconds, Go's conversion (Prometheus on amd64) gives the
    // smallest i64, where Rust's saturates: follow Prometheus.
    if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&ms) {
        return Ok(i64::MIN);
    }
    Ok(ms as i64)
}

/// Validates `# {labels} value [timestamp]` starting at `pos` (the `#`) up to the end of the
/// line. Exemplars are not stored (as in Prometheus without exemplar storage).
fn skip_exemplar(line: &[u8], pos: usize) -> Result<(), ParseErrorKind> {
    let rest = &line[pos..];
    if !rest.starts_with(b"# {") {
        return Err(ParseErrorKind::TrailingData(String::from_utf8_lossy(rest).into_owned()));
    }
    // Prometheus's lexer refuses a NUL byte in an exemplar (not in a sample's labels).
    if memchr::memchr(0, rest).is_some() {
        return Err(ParseErrorKind::InvalidExemplar);
    }
    let labels_start = pos + 2;
    let labels_end = scan_label_set(line, labels_start, false).map_err(|_| ParseErrorKind::InvalidExemplar)?;
    if line.get(labels_end) != Some(&b' ') {
        return Err(ParseErrorKind::InvalidExemplar);
    }
    let value_start = labels_end + 1;
    let value_end = token_end(line, value_start, true);
    parse_value(&line[value_start..value_end]).map_err(|_| ParseErrorKind::InvalidExemplar)?;
    if value_end == line.len() {
        return Ok(());
    }
    let ts_start = value_end + 1;
    let ts_end = token_end(line, ts_start, true);
    if ts_end != line.len() {
        return Err(ParseErrorKind::InvalidExemplar);
    }
    parse_openmetrics_timestamp(&line[ts_start..ts_end]).map_err(|_| ParseErrorKind::InvalidExemplar)?;
    Ok(())
}
