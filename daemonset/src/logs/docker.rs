//! Docker's json-file log driver: one JSON object per line, `{"log":"...\n","stream":"stdout",
//! "time":"<RFC3339Nano>"}`. `log` ends with `\n` when the line is complete; Docker splits longer
//! lines into 16 KiB pieces whose `log` has no trailing `\n`, to be concatenated with the following
//! ones (done by [`super::format::Joiner`]).

use std::borrow::Cow;

use serde::Deserialize;

use super::cri::Stream;
use super::timefmt::parse_rfc3339_nanos;

/// One parsed physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine<'a> {
    pub timestamp: i64,
    pub stream: Stream,
    /// No trailing `\n` in `log`: the logical line continues in the next object.
    pub partial: bool,
    /// `log` without its trailing `\n`. Borrowed unless it contained JSON escapes.
    pub message: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    #[error("docker json line: {0}")]
    Json(String),
    #[error("docker json line: stream is neither stdout nor stderr")]
    Stream,
    #[error("docker json line: bad time")]
    Time,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Parses one line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<DockerLine<'_>, DockerError> {
    let raw: Raw<'_> = serde_json::from_slice(line).map_err(|e| DockerError::Json(e.to_string()))?;
    let stream = match &*raw.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err(DockerError::Stream),
    };
    let timestamp = parse_rfc3339_nanos(raw.time.as_bytes()).ok_or(DockerError::Time)?;
    let partial = !raw.log.ends_with('\n');
    let message = match raw.log {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix('\n').unwrap_or(s)),
        Cow::Owned(mut s) => {
            if s.ends_with('\n') {
                s.pop();
            }
            Cow::Owned(s)
        }
    };
    Ok(DockerLine { timestamp, stream, partial, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        type Want = Result<(Stream, bool, &'static str), ()>;
        let rows: &[(&str, Want)] = &[
            (
                r#"{"log":"hello\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}"#,
                Ok((Stream::Stdout, false, "hello")),
            ),
            (
                r#"{"log":"part","stream":"stderr","time":"2024-01-02T03:04:05.123456789Z"}"#,
                Ok((Stream::Stderr, true, "part")),
            ),
            (
                r#"{"log":"a \"quoted\"\ttab\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
                Ok((Stream::Stdout, false, "a \"quoted\"\ttab")),
            ),
            (r#"{"log":"\n","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#, Ok((Stream::Stdout, false, ""))),
            (
                r#"{"log":"x\n","stream":"stdout","time":"2024-01-02T03:04:05Z","attrs":{"k":"v"}}"#,
                Ok((Stream::Stdout, false, "x")),
            ),
            (r#"{"log":"x\n","stream":"stdin","time":"2024-01-02T03:04:05Z"}"#, Err(())),
            (r#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#, Err(())),
            (r#"{"log":"x\n","stream":"stdout"}"#, Err(())),
            (r#"{"log":"x\n","str"#, Err(())),
            ("2024-01-02T03:04:05.123456789Z stdout F x", Err(())),
        ];
        for (line, want) in rows {
            let got = parse(line.as_bytes()).map(|l| (l.stream, l.partial, l.message.into_owned())).map_err(|_| ());
            let want = (*want).map(|(s, p, m)| (s, p, m.to_string()));
            assert_eq!(got, want, "{line}");
        }
        let l = parse(br#"{"log":"x\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}"#).unwrap();
        assert_eq!(l.timestamp, 1_704_164_645_123_456_789);
    }
}
