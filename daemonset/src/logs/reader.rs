//! Reads one file in large blocks with `pread` and splits it into lines with `memchr`, keeping the
//! unterminated last line across reads and tracking byte offsets.
//!
//! The block buffer is shared: the tailer thread owns one [`Scratch`] for all its files. A reader
//! keeps only the unfinished last line of its file (`rest`, grown only as a line needs it);
//! [`LineReader::fill`] copies that into the scratch buffer and reads the next block after it,
//! [`LineReader::next_line`] hands out lines borrowed from the scratch buffer, and
//! [`LineReader::park`] moves what is still unfinished back into `rest` before the scratch
//! buffer serves another file.
//!
//! Reading at explicit offsets (never the descriptor's cursor) lets the tailer notice a
//! copytruncate (the size drops below the offset) and restart without reopening.

use std::fs::File;
use std::io;

use super::format::PhysicalLine;

/// The read buffer shared by every file of the tailer thread.
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// Bytes currently allocated (for tests).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Frees the buffer (it grows again on the next read).
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }
}

#[derive(Debug)]
pub struct LineReader {
    /// The unfinished last line while parked (the data is in the scratch buffer while filled).
    rest: Vec<u8>,
    /// Whether the data is in the scratch buffer (between `fill` and `park`).
    filled: bool,
    /// File offset of the first byte held (`rest[0]` while parked, `scratch[0]` while filled).
    buf_start: u64,
    /// Bytes held: `rest.len()` while parked, the scratch buffer's length while filled.
    held: usize,
    /// Bytes of the held data already handed out as lines.
    consumed: usize,
    /// Bytes of the held data already searched for `\n` without success.
    scanned: usize,
    block: usize,
    /// A physical line longer than this is handed out in fragments (`complete: false`).
    cap: usize,
}

/// `rest` keeps at most this much spare capacity when parked.
const REST_SLACK: usize = 4096;

impl LineReader {
    pub fn new(offset: u64, block: usize, cap: usize) -> LineReader {
        LineReader {
            rest: Vec::new(),
            filled: false,
            buf_start: offset,
            held: 0,
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
        self.buf_start + self.held as u64
    }

    /// Bytes this reader keeps allocated between reads (for tests).
    pub fn retained(&self) -> usize {
        self.rest.capacity()
    }

    /// Forgets the consumed part of the held data.
    fn advance(&mut self) {
        self.buf_start += self.consumed as u64;
        self.scanned -= self.consumed.min(self.scanned);
        self.held -= self.consumed;
        self.consumed = 0;
    }

    /// Moves the unfinished last line into the scratch buffer and reads the next block after it;
    /// `Ok(0)` at end of file. Lines then come from [`LineReader::next_line`] with the same
    /// scratch buffer, and [`LineReader::park`] must follow before the buffer serves another file.
    pub fn fill(&mut self, file: &File, scratch: &mut Scratch) -> io::Result<usize> {
        self.fill_at_most(file, scratch, u64::MAX)
    }

    /// [`LineReader::fill`] reading at most `max` bytes (what `fstat` says is left). The block
    /// buffer is never zeroed (read into as it is), which keeps a pass over many files with a
    /// little new data each (or none) cheap.
    pub fn fill_at_most(&mut self, file: &File, scratch: &mut Scratch, max: u64) -> io::Result<usize> {
        // Filled twice in a row: the scratch buffer still holds this file's data.
        self.park(scratch);
        let buf = &mut scratch.buf;
        buf.clear();
        buf.extend_from_slice(&self.rest[self.consumed..]);
        self.rest.clear();
        self.advance();
        self.filled = true;
        let old = buf.len();
        let want = usize::try_from(max).unwrap_or(usize::MAX).clamp(1, self.block);
        buf.reserve(want);
        let res = loop {
            match pread_uninit(file, &mut buf.spare_capacity_mut()[..want], self.buf_start + old as u64) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *res.as_ref().unwrap_or(&0);
        // SAFETY: `pread` initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(old + n) };
        self.held = buf.len();
        res
    }

    /// The next complete line (or a fragment of an overlong one), if buffered in `scratch` by the
    /// last [`LineReader::fill`].
    pub fn next_line<'a>(&mut self, scratch: &'a Scratch) -> Option<PhysicalLine<'a>> {
        if !self.filled {
            return None;
        }
        let buf = &scratch.buf[..self.held];
        let from = self.consumed.max(self.scanned);
        let start = self.consumed;
        match memchr::memchr(b'\n', &buf[from..]) {
            Some(i) if from + i - start <= self.cap => {
                let nl = from + i;
                self.consumed = nl + 1;
                self.scanned = self.consumed;
                Some(PhysicalLine { bytes: &buf[start..nl], start: self.buf_start + start as u64, complete: true })
            }
            // Cut at the cap whether or not the `\n` is already buffered: the same file gives
            // the same fragments whatever the read boundaries.
            found => {
                self.scanned = if found.is_some() { start } else { buf.len() };
                if buf.len() - start > self.cap {
                    self.consumed = start + self.cap;
                    return Some(PhysicalLine {
                        bytes: &buf[start..self.consumed],
                        start: self.buf_start + start as u64,
                        complete: false,
                    });
                }
                None
            }
        }
    }

    /// Keeps what `scratch` holds after the last line handed out (the unfinished last line) in
    /// this reader's own small buffer, so that `scratch` can serve another file. A no-op when
    /// already parked.
    pub fn park(&mut self, scratch: &Scratch) {
        if !self.filled {
            return;
        }
        let tail = &scratch.buf[self.consumed..self.held];
        // A file whose lines all ended keeps no allocation; one with a long unfinished line
        // gives back the extra room once that line is done.
        if tail.is_empty() || self.rest.capacity() > tail.len() + REST_SLACK {
            self.rest = Vec::new();
        }
        self.rest.extend_from_slice(tail);
        self.advance();
        self.filled = false;
    }

    /// Hands out what is left after the last `\n` (used when a file is let go). Parks first.
    pub fn take_rest(&mut self, scratch: &Scratch) -> Option<PhysicalLine<'_>> {
        self.park(scratch);
        if self.consumed >= self.held {
            return None;
        }
        let start = self.consumed;
        self.consumed = self.held;
        self.scanned = self.consumed;
        Some(PhysicalLine { bytes: &self.rest[start..], start: self.buf_start + start as u64, complete: true })
    }
}

/// `pread` into memory not initialised yet: a block is not zeroed before each read (a file
/// followed at its end is read many times a second, a few KiB each time, into a 256 KiB block).
fn pread_uninit(file: &File, buf: &mut [std::mem::MaybeUninit<u8>], offset: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `pread` writes at most that many
    // and never reads them.
    let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(r: &mut LineReader, s: &Scratch) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line(s) {
            out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.start, l.complete));
        }
        r.park(s);
        out
    }

    #[test]
    fn keeps_the_partial_last_line_across_reads_and_tracks_offsets() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\ntw").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(0, 4096, 1024);
        assert_eq!(r.fill(&f, &mut s).unwrap(), 6);
        assert_eq!(lines(&mut r, &s), vec![("one".into(), 0, true)]);
        assert_eq!(r.offset(), 4);
        assert_eq!(r.fill(&f, &mut s).unwrap(), 0);
        f.write_all(b"o\nthree\n").unwrap();
        assert_eq!(r.fill(&f, &mut s).unwrap(), 8);
        assert_eq!(lines(&mut r, &s), vec![("two".into(), 4, true), ("three".into(), 8, true)]);
        assert_eq!(r.offset(), 14);
        assert_eq!(r.read_offset(), 14);
    }

    #[test]
    fn fill_at_most_reads_no_more_than_asked() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\ntwo\n").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(0, 4096, 1024);
        assert_eq!(r.fill_at_most(&f, &mut s, 4).unwrap(), 4);
        assert_eq!(lines(&mut r, &s), vec![("one".into(), 0, true)]);
        assert_eq!(r.fill_at_most(&f, &mut s, 100).unwrap(), 4);
        assert_eq!(lines(&mut r, &s), vec![("two".into(), 4, true)]);
        assert!(s.capacity() < 4096, "the block was not zeroed past what was asked: {}", s.capacity());
    }

    #[test]
    fn starts_at_an_offset() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"skip\nkeep\n").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(5, 4096, 1024);
        r.fill(&f, &mut s).unwrap();
        assert_eq!(lines(&mut r, &s), vec![("keep".into(), 5, true)]);
    }

    #[test]
    fn lines_longer_than_a_block_span_reads() {
        let mut f = tempfile::tempfile().unwrap();
        let long = "x".repeat(10_000);
        write!(f, "{long}\nend\n").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(0, 4096, 1 << 20);
        let mut got = Vec::new();
        while r.fill(&f, &mut s).unwrap() > 0 {
            got.extend(lines(&mut r, &s));
        }
        assert_eq!(got, vec![(long, 0, true), ("end".into(), 10_001, true)]);
    }

    #[test]
    fn an_overlong_physical_line_comes_out_in_fragments() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdefghij\n").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(0, 4096, 4);
        r.fill(&f, &mut s).unwrap();
        assert_eq!(
            lines(&mut r, &s),
            vec![("abcd".into(), 0, false), ("efgh".into(), 4, false), ("ij".into(), 8, true)]
        );
    }

    #[test]
    fn take_rest_returns_the_unterminated_tail() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"a\nb").unwrap();
        let mut s = Scratch::new();
        let mut r = LineReader::new(0, 4096, 1024);
        r.fill(&f, &mut s).unwrap();
        lines(&mut r, &s);
        let rest = r.take_rest(&s).map(|l| (l.bytes.to_vec(), l.start));
        assert_eq!(rest, Some((b"b".to_vec(), 2)));
        assert_eq!(r.offset(), 3);
        assert!(r.take_rest(&s).is_none());
    }

    #[test]
    fn files_share_one_scratch_buffer_and_keep_only_their_unfinished_line() {
        let mut a = tempfile::tempfile().unwrap();
        let mut b = tempfile::tempfile().unwrap();
        a.write_all(b"a1\na2\npart").unwrap();
        b.write_all(b"b1\nb").unwrap();
        let mut s = Scratch::new();
        let mut ra = LineReader::new(0, 64 * 1024, 1 << 20);
        let mut rb = LineReader::new(0, 64 * 1024, 1 << 20);
        ra.fill(&a, &mut s).unwrap();
        assert_eq!(lines(&mut ra, &s), vec![("a1".into(), 0, true), ("a2".into(), 3, true)]);
        rb.fill(&b, &mut s).unwrap();
        assert_eq!(lines(&mut rb, &s), vec![("b1".into(), 0, true)]);
        assert!(ra.retained() < 4096 && rb.retained() < 4096, "no per-file block buffer");
        assert!(s.capacity() >= 64 * 1024);
        a.write_all(b"ial\n").unwrap();
        b.write_all(b"2\n").unwrap();
        rb.fill(&b, &mut s).unwrap();
        assert_eq!(lines(&mut rb, &s), vec![("b2".into(), 3, true)]);
        ra.fill(&a, &mut s).unwrap();
        assert_eq!(lines(&mut ra, &s), vec![("partial".into(), 6, true)]);
        assert_eq!((ra.offset(), ra.read_offset()), (14, 14));
        assert_eq!(ra.retained(), 0, "nothing unfinished, nothing kept");
    }
}
