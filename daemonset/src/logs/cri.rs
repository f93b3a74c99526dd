//! The CRI log line: `<RFC3339Nano time> <stdout|stderr> <P|F> <message>` (containerd, CRI-O).
//!
//! Parsing borrows from the line: no allocation. `P` marks a partial line (the runtime split a long
//! line, usually at 16 KiB); the logical line goes on in the next `P`/`F` lines of the same file.
//! Joining is [`super::format::Joiner`]'s job.

use super::timefmt::parse_rfc3339_nanos;

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed physical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// Unix time in nanoseconds.
    pub timestamp: i64,
    pub stream: Stream,
    /// `P`: the logical line continues in the next line.
    pub partial: bool,
    pub message: &'a [u8],
}

/// Why a line is not a CRI line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    #[error("CRI line: bad timestamp")]
    Timestamp,
    #[error("CRI line: stream is neither stdout nor stderr")]
    Stream,
    #[error("CRI line: tag is neither P nor F")]
    Tag,
    #[error("CRI line: missing fields")]
    Truncated,
}

/// Parses one line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<CriLine<'_>, CriError> {
    let sp = memchr::memchr(b' ', line).ok_or(CriError::Truncated)?;
    let timestamp = parse_rfc3339_nanos(&line[..sp]).ok_or(CriError::Timestamp)?;
    let rest = &line[sp + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else if rest == b"stdout" || rest == b"stderr" {
        return Err(CriError::Truncated);
    } else {
        return Err(CriError::Stream);
    };
    // The tag field may carry more `:`-separated tags in the future; only the first matters.
    let (tag, message) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(CriError::Tag),
    };
    Ok(CriLine { timestamp, stream, partial, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_704_164_645_123_456_789; // 2024-01-02T03:04:05.123456789Z

    #[test]
    fn parse_table() {
        type Want = Result<(i64, Stream, bool, &'static [u8]), CriError>;
        let rows: &[(&[u8], Want)] = &[
            (b"2024-01-02T03:04:05.123456789Z stdout F hello world", Ok((T0, Stream::Stdout, false, b"hello world"))),
            (b"2024-01-02T03:04:05.123456789Z stderr P part", Ok((T0, Stream::Stderr, true, b"part"))),
            // Empty message, with and without the separating space.
            (b"2024-01-02T03:04:05.123456789Z stdout F ", Ok((T0, Stream::Stdout, false, b""))),
            (b"2024-01-02T03:04:05.123456789Z stdout F", Ok((T0, Stream::Stdout, false, b""))),
            // Spaces inside the message are kept, including leading ones.
            (b"2024-01-02T03:04:05.123456789Z stdout F   indented  ", Ok((T0, Stream::Stdout, false, b"  indented  "))),
            // Offsets and shorter fractions (CRI-O writes `+00:00`).
            (b"2024-01-02T05:04:05.123456789+02:00 stdout F x", Ok((T0, Stream::Stdout, false, b"x"))),
            (b"2024-01-02T03:04:05Z stdout F x", Ok((T0 - 123_456_789, Stream::Stdout, false, b"x"))),
            (b"2024-01-02T03:04:05.1Z stdout F x", Ok((T0 - 23_456_789, Stream::Stdout, false, b"x"))),
            // A future multi-tag field.
            (b"2024-01-02T03:04:05.123456789Z stdout F:x y", Ok((T0, Stream::Stdout, false, b"y"))),
            (b"not a cri line", Err(CriError::Timestamp)),
            (b"", Err(CriError::Truncated)),
            (b"2024-01-02T03:04:05.123456789Z", Err(CriError::Truncated)),
            (b"2024-01-02T03:04:05.123456789Z stdout", Err(CriError::Truncated)),
            (b"2024-01-02T03:04:05.123456789Z stdin F x", Err(CriError::Stream)),
            (b"2024-01-02T03:04:05.123456789Z stdout X x", Err(CriError::Tag)),
            (b"2024-13-02T03:04:05.123456789Z stdout F x", Err(CriError::Timestamp)),
            (b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}", Err(CriError::Truncated)),
        ];
        for (line, want) in rows {
            let got = parse(line).map(|l| (l.timestamp, l.stream, l.partial, l.message));
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn invalid_utf8_in_the_message_is_passed_through() {
        let l = parse(b"2024-01-02T03:04:05.123456789Z stdout F \xff\xfe").unwrap();
        assert_eq!(l.message, b"\xff\xfe");
    }
}
