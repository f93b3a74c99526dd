//! From physical lines of one file to log entries: format detection (CRI or Docker json-file, by
//! the first line), joining of partial lines, and splitting of overlong ones.
//!
//! Decisions, documented here once:
//! - **Partial lines** (`P` in CRI, a `log` without trailing `\n` in Docker) are joined per stream
//!   (stdout and stderr may interleave in one file) until the closing line. The entry takes the
//!   first piece's timestamp.
//! - **Overlong lines** (longer than `max_line_size`, after joining) are split into parts of at
//!   most `max_line_size` bytes (cut on a UTF-8 character boundary when possible), never dropped.
//!   Every part carries the structured metadata `part="<k>"` (1-based); unsplit lines carry none.
//!   Each split line counts once in `lgtm_agent_logs_lines_split_total`.
//! - **Malformed lines** (not CRI / not Docker JSON) are shipped raw (the whole physical line as
//!   the message, timestamped with the file's previous entry, or the read time if none, without a
//!   `stream`) and counted in `lgtm_agent_logs_parse_errors_total`. Shipping keeps "never lose a
//!   line" even for a runtime we parse wrongly. Empty physical lines are skipped (and counted).
//! - **Physical lines cut by the reader** (no `\n` within its cap): the first fragment is parsed
//!   as usual and the logical line goes on with the following fragments, as if partial.

use super::cri::{self, Stream};
use super::docker;

/// The on-disk format of one file, detected from its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
}

impl Format {
    /// Docker json-file lines are JSON objects; CRI lines start with a timestamp.
    pub fn detect(first_line: &[u8]) -> Format {
        if first_line.first() == Some(&b'{') {
            Format::Docker
        } else {
            Format::Cri
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cri => "cri",
            Format::Docker => "docker",
        }
    }
}

/// One log entry handed to the batch builder; borrowed, valid during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Unix nanoseconds.
    pub timestamp: i64,
    /// `None` for malformed lines shipped raw.
    pub stream: Option<Stream>,
    pub line: &'a [u8],
    /// `0` for a whole line, `1..` for the parts of a split one.
    pub part: u32,
}

/// A physical line from the reader.
#[derive(Debug, Clone, Copy)]
pub struct PhysicalLine<'a> {
    /// Without the `\n`.
    pub bytes: &'a [u8],
    /// File offset of its first byte.
    pub start: u64,
    /// `false` when the reader cut it at its cap: the next line continues it.
    pub complete: bool,
}

/// Counters the tailer moves into the self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub parse_errors: u64,
    pub lines_split: u64,
}

/// Joins the pieces of one stream's logical line and splits what exceeds `max`.
#[derive(Debug)]
struct Joiner {
    buf: Vec<u8>,
    /// File offset where the logical line in progress began; `None` when idle.
    start: Option<u64>,
    timestamp: i64,
    stream: Option<Stream>,
    parts: u32,
}

impl Joiner {
    fn new() -> Joiner {
        Joiner { buf: Vec::new(), start: None, timestamp: 0, stream: None, parts: 0 }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        max: usize,
        timestamp: i64,
        stream: Option<Stream>,
        partial: bool,
        msg: &[u8],
        line_start: u64,
        stats: &mut DecodeStats,
        emit: &mut dyn FnMut(Entry<'_>),
    ) {
        if self.start.is_none() {
            if !partial && msg.len() <= max {
                emit(Entry { timestamp, stream, line: msg, part: 0 });
                return;
            }
            self.start = Some(line_start);
            self.timestamp = timestamp;
            self.stream = stream;
        }
        self.buf.extend_from_slice(msg);
        while self.buf.len() > max {
            let cut = utf8_cut(&self.buf, max);
            self.parts += 1;
            emit(Entry { timestamp: self.timestamp, stream: self.stream, line: &self.buf[..cut], part: self.parts });
            self.buf.drain(..cut);
        }
        if !partial {
            self.finish(stats, emit);
        }
    }

    /// Emits what is pending as the end of its logical line.
    fn finish(&mut self, stats: &mut DecodeStats, emit: &mut dyn FnMut(Entry<'_>)) {
        if self.start.is_none() {
            return;
        }
        if self.parts == 0 {
            emit(Entry { timestamp: self.timestamp, stream: self.stream, line: &self.buf, part: 0 });
        } else {
            if !self.buf.is_empty() {
                self.parts += 1;
                emit(Entry { timestamp: self.timestamp, stream: self.stream, line: &self.buf, part: self.parts });
            }
            stats.lines_split += 1;
        }
        self.buf.clear();
        if self.buf.capacity() > 1 << 20 {
            self.buf.shrink_to(64 * 1024);
        }
        self.start = None;
        self.parts = 0;
    }
}

/// The largest `cut <= max` that does not fall inside a UTF-8 sequence (backs off at most 3 bytes;
/// bytes that are not UTF-8 anyway are cut at `max`).
fn utf8_cut(buf: &[u8], max: usize) -> usize {
    let max = max.max(1);
    for back in 0..4 {
        let cut = max - back.min(max - 1);
        if cut < buf.len() && (buf[cut] & 0xC0) != 0x80 {
            return cut;
        }
        if cut == 1 {
            break;
        }
    }
    max.min(buf.len())
}

/// What is left over from a physical line the reader cut.
#[derive(Debug, Clone, Copy)]
struct Overlong {
    joiner: usize,
    timestamp: i64,
    stream: Option<Stream>,
    /// The tag of the first fragment (`P` or `F`).
    partial: bool,
}

/// Turns the physical lines of one file into entries.
#[derive(Debug)]
pub struct Decoder {
    format: Option<Format>,
    max_line: usize,
    /// stdout, stderr, raw.
    joiners: [Joiner; 3],
    overlong: Option<Overlong>,
    last_timestamp: Option<i64>,
    pub stats: DecodeStats,
}

impl Decoder {
    pub fn new(max_line: usize) -> Decoder {
        Decoder {
            format: None,
            max_line: max_line.max(1),
            joiners: [Joiner::new(), Joiner::new(), Joiner::new()],
            overlong: None,
            last_timestamp: None,
            stats: DecodeStats::default(),
        }
    }

    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// The offset to resume from after a restart so that nothing not yet emitted is lost: the
    /// start of the oldest logical line in progress, or `consumed` (the end of the last physical
    /// line pushed) when none is.
    pub fn safe_offset(&self, consumed: u64) -> u64 {
        self.joiners.iter().filter_map(|j| j.start).min().unwrap_or(consumed).min(consumed)
    }

    /// Feeds one physical line; `now` timestamps raw lines when the file has no previous entry.
    pub fn push(&mut self, line: PhysicalLine<'_>, now: impl Fn() -> i64, emit: &mut dyn FnMut(Entry<'_>)) {
        let max = self.max_line;
        if let Some(o) = self.overlong {
            let partial = !line.complete || o.partial;
            if line.complete {
                self.overlong = None;
            }
            self.joiners[o.joiner].add(
                max,
                o.timestamp,
                o.stream,
                partial,
                line.bytes,
                line.start,
                &mut self.stats,
                emit,
            );
            return;
        }
        if line.bytes.is_empty() {
            if line.complete {
                self.stats.parse_errors += 1;
            }
            return;
        }
        let format = *self.format.get_or_insert_with(|| Format::detect(line.bytes));
        let parsed = match format {
            Format::Cri => cri::parse(line.bytes).ok().map(|l| (l.timestamp, l.stream, l.partial, l.message)),
            Format::Docker if line.complete => match docker::parse(line.bytes) {
                Ok(l) => {
                    let j = joiner_of(Some(l.stream));
                    self.last_timestamp = Some(l.timestamp);
                    let msg = l.message.as_bytes();
                    self.joiners[j].add(
                        max,
                        l.timestamp,
                        Some(l.stream),
                        l.partial,
                        msg,
                        line.start,
                        &mut self.stats,
                        emit,
                    );
                    return;
                }
                Err(_) => None,
            },
            // A JSON object cut in the middle cannot be parsed: ship it raw.
            Format::Docker => None,
        };
        let (timestamp, stream, partial, msg) = match parsed {
            Some((ts, stream, partial, msg)) => {
                self.last_timestamp = Some(ts);
                (ts, Some(stream), partial, msg)
            }
            None => {
                self.stats.parse_errors += 1;
                let ts = self.last_timestamp.unwrap_or_else(now);
                (ts, None, false, line.bytes)
            }
        };
        let j = joiner_of(stream);
        if !line.complete {
            self.overlong = Some(Overlong { joiner: j, timestamp, stream, partial });
        }
        let partial = partial || !line.complete;
        self.joiners[j].add(max, timestamp, stream, partial, msg, line.start, &mut self.stats, emit);
    }

    /// Whether a logical line is waiting for its closing piece (a partial line was read), and
    /// the reader is not in the middle of cutting a long physical line.
    pub fn has_pending(&self) -> bool {
        self.overlong.is_none() && self.joiners.iter().any(|j| j.start.is_some())
    }

    /// Emits the logical lines waiting for their closing piece as they are (the partial-line
    /// flush timeout); what comes after them starts new lines. Not while the reader is in the
    /// middle of cutting a long physical line (its next fragment is already on its way).
    /// Returns whether anything was emitted.
    pub fn flush_pending(&mut self, emit: &mut dyn FnMut(Entry<'_>)) -> bool {
        if !self.has_pending() {
            return false;
        }
        self.finish(emit);
        true
    }

    /// Emits logical lines left unfinished (the file ended without their closing piece).
    pub fn finish(&mut self, emit: &mut dyn FnMut(Entry<'_>)) {
        self.overlong = None;
        for j in &mut self.joiners {
            j.finish(&mut self.stats, emit);
        }
    }
}

fn joiner_of(stream: Option<Stream>) -> usize {
    match stream {
        Some(Stream::Stdout) => 0,
        Some(Stream::Stderr) => 1,
        None => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = (i64, Option<&'static str>, String, u32);

    /// Feeds complete lines (offsets as if each line were followed by `\n`).
    fn decode(max: usize, lines: &[&[u8]]) -> (Vec<Out>, DecodeStats, Decoder, u64) {
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        let mut off = 0u64;
        for l in lines {
            d.push(PhysicalLine { bytes: l, start: off, complete: true }, || 42, &mut |e| {
                out.push((
                    e.timestamp,
                    e.stream.map(|s| s.as_str()),
                    String::from_utf8_lossy(e.line).into_owned(),
                    e.part,
                ))
            });
            off += l.len() as u64 + 1;
        }
        (out, d.stats, d, off)
    }

    fn owned(rows: &[(i64, Option<&'static str>, &str, u32)]) -> Vec<Out> {
        rows.iter().map(|(t, s, l, p)| (*t, *s, l.to_string(), *p)).collect()
    }

    const A: &[u8] = b"1970-01-01T00:00:01Z stdout ";
    fn cri(ts: u8, stream: &str, tag: &str, msg: &str) -> Vec<u8> {
        format!("1970-01-01T00:00:0{ts}Z {stream} {tag} {msg}").into_bytes()
    }

    #[test]
    fn cri_partial_lines_join_until_f() {
        let rows = [
            cri(1, "stdout", "P", "hel"),
            cri(2, "stdout", "P", "lo "),
            cri(3, "stdout", "F", "world"),
            cri(4, "stdout", "F", "next"),
        ];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, stats, ..) = decode(100, &lines);
        let s = 1_000_000_000;
        assert_eq!(out, owned(&[(s, Some("stdout"), "hello world", 0), (4 * s, Some("stdout"), "next", 0)]));
        assert_eq!(stats, DecodeStats::default());
    }

    #[test]
    fn cri_streams_interleave_while_joining() {
        let rows = [cri(1, "stdout", "P", "out-"), cri(2, "stderr", "F", "err"), cri(3, "stdout", "F", "end")];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, ..) = decode(100, &lines);
        let s = 1_000_000_000;
        assert_eq!(out, owned(&[(2 * s, Some("stderr"), "err", 0), (s, Some("stdout"), "out-end", 0)]));
    }

    #[test]
    fn overlong_lines_are_split_into_marked_parts_never_dropped() {
        let msg = "abcdefghij".repeat(3); // 30 bytes, max 12
        let rows = [cri(1, "stdout", "F", &msg), cri(2, "stdout", "F", "short")];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, stats, ..) = decode(12, &lines);
        let s = 1_000_000_000;
        assert_eq!(
            out,
            owned(&[
                (s, Some("stdout"), "abcdefghijab", 1),
                (s, Some("stdout"), "cdefghijabcd", 2),
                (s, Some("stdout"), "efghij", 3),
                (2 * s, Some("stdout"), "short", 0),
            ])
        );
        assert_eq!(stats.lines_split, 1);
        // Joined pieces that together exceed the limit split too, and the exact limit does not.
        let rows = [
            cri(1, "stdout", "P", "0123456789"),
            cri(1, "stdout", "F", "0123456789"),
            cri(1, "stdout", "F", "0123456789ab"),
        ];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, stats, ..) = decode(12, &lines);
        let parts: Vec<(String, u32)> = out.into_iter().map(|o| (o.2, o.3)).collect();
        assert_eq!(parts, vec![("012345678901".into(), 1), ("23456789".into(), 2), ("0123456789ab".into(), 0)]);
        assert_eq!(stats.lines_split, 1);
    }

    #[test]
    fn split_does_not_cut_a_utf8_character() {
        let msg = "ééééé"; // 10 bytes
        let rows = [cri(1, "stdout", "F", msg)];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, ..) = decode(3, &lines);
        let parts: Vec<String> = out.into_iter().map(|o| o.2).collect();
        assert_eq!(parts, vec!["é", "é", "é", "é", "é"]);
    }

    #[test]
    fn malformed_lines_are_shipped_raw_and_counted() {
        let rows = [b"garbage first".to_vec(), cri(5, "stdout", "F", "ok"), b"2024 broken".to_vec(), Vec::new()];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (out, stats, ..) = decode(100, &lines);
        let s = 1_000_000_000;
        assert_eq!(
            out,
            owned(&[(42, None, "garbage first", 0), (5 * s, Some("stdout"), "ok", 0), (5 * s, None, "2024 broken", 0)])
        );
        assert_eq!(stats.parse_errors, 3);
    }

    #[test]
    fn docker_partials_concatenate() {
        let rows: [&[u8]; 3] = [
            br#"{"log":"part one ","stream":"stdout","time":"1970-01-01T00:00:01Z"}"#,
            br#"{"log":"part two\n","stream":"stdout","time":"1970-01-01T00:00:02Z"}"#,
            br#"{"log":"e\n","stream":"stderr","time":"1970-01-01T00:00:03Z"}"#,
        ];
        let (out, stats, d, _) = decode(100, &rows);
        let s = 1_000_000_000;
        assert_eq!(out, owned(&[(s, Some("stdout"), "part one part two", 0), (3 * s, Some("stderr"), "e", 0)]));
        assert_eq!(stats, DecodeStats::default());
        assert_eq!(d.format(), Some(Format::Docker));
    }

    #[test]
    fn safe_offset_stays_at_the_start_of_an_unfinished_line() {
        let rows = [cri(1, "stdout", "F", "done"), cri(2, "stdout", "P", "pending")];
        let lines: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let (_, _, d, end) = decode(100, &lines);
        assert_eq!(d.safe_offset(end), rows[0].len() as u64 + 1);
        let (_, _, d, end) = decode(100, &lines[..1]);
        assert_eq!(d.safe_offset(end), end);
    }

    #[test]
    fn a_physical_line_cut_by_the_reader_goes_on_in_the_next_fragment() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        let mut emit = |e: Entry<'_>| out.push((String::from_utf8_lossy(e.line).into_owned(), e.part, e.stream));
        let first = [A, b"F abc"].concat();
        d.push(PhysicalLine { bytes: &first, start: 0, complete: false }, || 0, &mut emit);
        d.push(PhysicalLine { bytes: b"def", start: first.len() as u64, complete: true }, || 0, &mut emit);
        assert_eq!(out, vec![("abcdef".to_string(), 0, Some(Stream::Stdout))]);
    }

    #[test]
    fn flush_pending_ships_the_piece_and_the_rest_starts_a_new_line() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        let p = cri(1, "stdout", "P", "piece");
        let mut emit = |e: Entry<'_>| out.push(String::from_utf8_lossy(e.line).into_owned());
        d.push(PhysicalLine { bytes: &p, start: 0, complete: true }, || 0, &mut emit);
        assert!(d.has_pending());
        assert_eq!(d.safe_offset(p.len() as u64 + 1), 0, "the checkpoint stays before the piece");
        assert!(d.flush_pending(&mut emit));
        assert!(!d.has_pending());
        assert_eq!(d.safe_offset(p.len() as u64 + 1), p.len() as u64 + 1, "and moves past it once shipped");
        assert!(!d.flush_pending(&mut emit), "nothing twice");
        let f = cri(2, "stdout", "F", "rest");
        d.push(PhysicalLine { bytes: &f, start: p.len() as u64 + 1, complete: true }, || 0, &mut emit);
        assert_eq!(out, vec!["piece", "rest"]);
    }

    #[test]
    fn finish_flushes_an_unterminated_partial() {
        let mut d = Decoder::new(100);
        let mut out = Vec::new();
        let l = cri(1, "stdout", "P", "dangling");
        d.push(PhysicalLine { bytes: &l, start: 0, complete: true }, || 0, &mut |e| {
            out.push(String::from_utf8_lossy(e.line).into_owned())
        });
        assert!(out.is_empty());
        d.finish(&mut |e| out.push(String::from_utf8_lossy(e.line).into_owned()));
        assert_eq!(out, vec!["dangling"]);
    }
}
