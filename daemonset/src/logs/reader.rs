//! Reads one file in large blocks with `pread` and splits it into lines with `memchr`, keeping the
//! unterminated last line across reads and tracking byte offsets.
//!
//! Reading at explicit offsets (never the descriptor's cursor) lets the tailer notice a
//! copytruncate (the size drops below the offset) and restart without reopening.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::format::PhysicalLine;

#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Bytes of `buf` already handed out as lines.
    consumed: usize,
    /// Bytes of `buf` already searched for `\n` without success.
    scanned: usize,
    block: usize,
    /// A physical line longer than this is handed out in fragments (`complete: false`).
    cap: usize,
}

impl LineReader {
    pub fn new(offset: u64, block: usize, cap: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            buf_start: offset,
            consumed: 0,
            scanned: 0,
            block: block.max(4096),
            cap: cap.max(1),
        }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// End of the last line handed out: where reading would resume after a restart.
    pub fn offset(&self) -> u64 {
        self.buf_start + self.consumed as u64
    }

    /// How far the file has been read.
    pub fn read_offset(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Reads the next block from the file; `Ok(0)` at end of file.
    pub fn fill(&mut self, file: &File) -> io::Result<usize> {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.buf_start += self.consumed as u64;
            self.scanned -= self.consumed.min(self.scanned);
            self.consumed = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + self.block, 0);
        let res = loop {
            match file.read_at(&mut self.buf[old..], self.buf_start + old as u64) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        if self.buf.capacity() > 4 * (self.block + self.cap) && self.buf.len() < self.block {
            self.buf.shrink_to(self.block + self.cap);
        }
        res
    }

    /// The next complete line (or a fragment of an overlong one), if buffered.
    pub fn next_line(&mut self) -> Option<PhysicalLine<'_>> {
        let from = self.consumed.max(self.scanned);
        let start = self.consumed;
        match memchr::memchr(b'\n', &self.buf[from..]) {
            Some(i) if from + i - start <= self.cap => {
                let nl = from + i;
                self.consumed = nl + 1;
                self.scanned = self.consumed;
                Some(PhysicalLine { bytes: &self.buf[start..nl], start: self.buf_start + start as u64, complete: true })
            }
            // Cut at the cap whether or not the `\n` is already buffered: the same file gives
            // the same fragments whatever the read boundaries.
            found => {
                self.scanned = if found.is_some() { start } else { self.buf.len() };
                if self.buf.len() - start > self.cap {
                    self.consumed = start + self.cap;
                    return Some(PhysicalLine {
                        bytes: &self.buf[start..self.consumed],
                        start: self.buf_start + start as u64,
                        complete: false,
                    });
                }
                None
            }
        }
    }

    /// Hands out what is left after the last `\n` (used when a file is let go).
    pub fn take_rest(&mut self) -> Option<PhysicalLine<'_>> {
        if self.consumed >= self.buf.len() {
            return None;
        }
        let start = self.consumed;
        self.consumed = self.buf.len();
        self.scanned = self.consumed;
        Some(PhysicalLine { bytes: &self.buf[start..], start: self.buf_start + start as u64, complete: true })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(r: &mut LineReader) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.start, l.complete));
        }
        out
    }

    #[test]
    fn keeps_the_partial_last_line_across_reads_and_tracks_offsets() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\ntw").unwrap();
        let mut r = LineReader::new(0, 4096, 1024);
        assert_eq!(r.fill(&f).unwrap(), 6);
        assert_eq!(lines(&mut r), vec![("one".into(), 0, true)]);
        assert_eq!(r.offset(), 4);
        assert_eq!(r.fill(&f).unwrap(), 0);
        f.write_all(b"o\nthree\n").unwrap();
        assert_eq!(r.fill(&f).unwrap(), 8);
        assert_eq!(lines(&mut r), vec![("two".into(), 4, true), ("three".into(), 8, true)]);
        assert_eq!(r.offset(), 14);
        assert_eq!(r.read_offset(), 14);
    }

    #[test]
    fn starts_at_an_offset() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"skip\nkeep\n").unwrap();
        let mut r = LineReader::new(5, 4096, 1024);
        r.fill(&f).unwrap();
        assert_eq!(lines(&mut r), vec![("keep".into(), 5, true)]);
    }

    #[test]
    fn lines_longer_than_a_block_span_reads() {
        let mut f = tempfile::tempfile().unwrap();
        let long = "x".repeat(10_000);
        write!(f, "{long}\nend\n").unwrap();
        let mut r = LineReader::new(0, 4096, 1 << 20);
        let mut got = Vec::new();
        while r.fill(&f).unwrap() > 0 {
            got.extend(lines(&mut r));
        }
        assert_eq!(got, vec![(long, 0, true), ("end".into(), 10_001, true)]);
    }

    #[test]
    fn an_overlong_physical_line_comes_out_in_fragments() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdefghij\n").unwrap();
        let mut r = LineReader::new(0, 4096, 4);
        r.fill(&f).unwrap();
        assert_eq!(lines(&mut r), vec![("abcd".into(), 0, false), ("efgh".into(), 4, false), ("ij".into(), 8, true)]);
    }

    #[test]
    fn take_rest_returns_the_unterminated_tail() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"a\nb").unwrap();
        let mut r = LineReader::new(0, 4096, 1024);
        r.fill(&f).unwrap();
        lines(&mut r);
        let rest = r.take_rest().map(|l| (l.bytes.to_vec(), l.start));
        assert_eq!(rest, Some((b"b".to_vec(), 2)));
        assert_eq!(r.offset(), 3);
        assert!(r.take_rest().is_none());
    }
}
