//! The segment file format: an append-only run of checksummed, length-prefixed records.
//!
//! A segment is named after the sequence number of its first record (`<seq as 20 digits>.seg`), so
//! listing a directory gives the segments in order. Each record is a frame:
//!
//! ```text
//! offset  size  field
//!      0     4  CRC-32 (IEEE, little endian) of bytes 4.. of the frame, payload included
//!      4     4  payload length in bytes (LE)
//!      8     8  sequence number (LE); the first frame carries the segment's own number, each next +1
//!     16     4  items in the payload (LE)
//!     20     n  payload
//! ```
//!
//! A crash in the middle of an append leaves a torn frame at the end of the newest segment: its
//! header is cut short, its length points past the end of the file, or its checksum does not match.
//! [`scan`] stops at the first frame that is not whole and says why, so the caller can cut the file
//! there instead of replaying garbage.

use std::fs::File;
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Bytes in front of every payload.
pub(super) const HEADER_LEN: u64 = 20;

const SUFFIX: &str = ".seg";

/// Size on disk of a record with `payload_len` bytes of payload.
pub(super) fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN + payload_len as u64
}

/// `<dir>/<first_seq as 20 digits>.seg`.
pub(super) fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SUFFIX}"))
}

/// The first sequence number a segment file name stands for; `None` for other files.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(out)
}

fn header(seq: u64, items: u32, payload: &[u8]) -> io::Result<[u8; HEADER_LEN as usize]> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record larger than 4 GiB"))?;
    let mut h = [0u8; HEADER_LEN as usize];
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&items.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..]);
    crc.update(payload);
    h[0..4].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(h)
}

/// Appends one frame with as few `write` calls as the OS allows (no user-space buffer), so that once
/// this returns the record survives the process being killed. Returns the frame's length.
pub(super) fn append(mut file: &File, seq: u64, items: u32, payload: &[u8]) -> io::Result<u64> {
    let h = header(seq, items, payload)?;
    let mut bufs = [IoSlice::new(&h), IoSlice::new(payload)];
    let mut rest = &mut bufs[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(frame_len(payload.len()))
}

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Damage {
    /// The file ends inside the frame (a torn append).
    Truncated,
    /// The checksum does not match the bytes.
    Checksum,
    /// A whole, checksummed frame with an unexpected sequence number.
    Sequence { expected: u64, found: u64 },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated => f.write_str("truncated record"),
            Damage::Checksum => f.write_str("checksum mismatch"),
            Damage::Sequence { expected, found } => write!(f, "sequence {found} where {expected} was expected"),
        }
    }
}

/// Why a record could not be read back.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(io::Error),
    Damaged(Damage),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => e.fmt(f),
            ReadError::Damaged(d) => d.fmt(f),
        }
    }
}

/// One whole record found by [`scan`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Frame {
    /// Where the frame starts in the file.
    pub offset: u64,
    pub seq: u64,
    pub items: u32,
    pub payload: Bytes,
}

/// How a [`scan`] ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ScanEnd {
    /// Bytes from the start of the file up to the end of the last whole frame.
    pub valid_len: u64,
    pub file_len: u64,
    /// Why the scan stopped before `file_len`; `None` when every byte belonged to a whole frame.
    pub damage: Option<Damage>,
}

struct Header {
    crc: u32,
    len: u32,
    seq: u64,
    items: u32,
}

fn parse_header(h: &[u8; HEADER_LEN as usize]) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    Header { crc: u32_at(0), len: u32_at(4), seq: u64::from_le_bytes(seq), items: u32_at(16) }
}

fn checksum_matches(h: &[u8; HEADER_LEN as usize], crc: u32, payload: &[u8]) -> bool {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[4..]);
    hasher.update(payload);
    hasher.finalize() == crc
}

/// Reads `file` from the start, handing every whole frame to `each` in order. The first frame must
/// carry `first_seq`, each following one the next number. Stops at the end of the file or at the
/// first frame that is torn, fails its checksum or is out of sequence.
pub(super) fn scan(file: &File, first_seq: u64, mut each: impl FnMut(Frame)) -> io::Result<ScanEnd> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut offset = 0u64;
    let mut expected = first_seq;
    let end = |valid_len, damage| Ok(ScanEnd { valid_len, file_len, damage });
    loop {
        if offset == file_len {
            return end(offset, None);
        }
        if file_len - offset < HEADER_LEN {
            return end(offset, Some(Damage::Truncated));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut h)?;
        let head = parse_header(&h);
        // Checked before allocating: a torn or garbled length must not make us read (or allocate)
        // past the end of the file.
        if u64::from(head.len) > file_len - offset - HEADER_LEN {
            return end(offset, Some(Damage::Truncated));
        }
        let mut payload = vec![0u8; head.len as usize];
        reader.read_exact(&mut payload)?;
        if !checksum_matches(&h, head.crc, &payload) {
            return end(offset, Some(Damage::Checksum));
        }
        if head.seq != expected {
            return end(offset, Some(Damage::Sequence { expected, found: head.seq }));
        }
        each(Frame { offset, seq: head.seq, items: head.items, payload: payload.into() });
        offset += frame_len(head.len as usize);
        expected += 1;
    }
}

/// Reads back the frame at `offset`, which must hold record `seq` with `len` bytes of payload.
/// Positional, so several readers can share the file with the appender.
pub(super) fn read_at(file: &File, offset: u64, seq: u64, len: usize) -> Result<(u32, Bytes), ReadError> {
    let mut buf = vec![0u8; HEADER_LEN as usize + len];
    read_exact_at(file, &mut buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Damaged(Damage::Truncated),
        _ => ReadError::Io(e),
    })?;
    let mut h = [0u8; HEADER_LEN as usize];
    h.copy_from_slice(&buf[..HEADER_LEN as usize]);
    let head = parse_header(&h);
    if head.len as usize != len {
        return Err(ReadError::Damaged(Damage::Checksum));
    }
    let payload = Bytes::from(buf).slice(HEADER_LEN as usize..);
    if !checksum_matches(&h, head.crc, &payload) {
        return Err(ReadError::Damaged(Damage::Checksum));
    }
    if head.seq != seq {
        return Err(ReadError::Damaged(Damage::Sequence { expected: seq, found: head.seq }));
    }
    Ok((head.items, payload))
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn write_segment(dir: &Path, first: u64, payloads: &[&[u8]]) -> (PathBuf, Vec<u64>) {
        let p = path(dir, first);
        let f = OpenOptions::new().create_new(true).append(true).open(&p).unwrap();
        let mut offsets = Vec::new();
        let mut at = 0;
        for (i, pl) in payloads.iter().enumerate() {
            offsets.push(at);
            at += append(&f, first + i as u64, i as u32 + 1, pl).unwrap();
        }
        (p, offsets)
    }

    fn scan_path(p: &Path, first: u64) -> (Vec<Frame>, ScanEnd) {
        let f = File::open(p).unwrap();
        let mut frames = Vec::new();
        let end = scan(&f, first, |fr| frames.push(fr)).unwrap();
        (frames, end)
    }

    #[test]
    fn records_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let payloads: [&[u8]; 4] = [b"one", b"", b"three three", &[7u8; 5000]];
        let (p, offsets) = write_segment(dir.path(), 42, &payloads);
        let (frames, end) = scan_path(&p, 42);
        assert_eq!(end.damage, None);
        assert_eq!(end.valid_len, end.file_len);
        assert_eq!(end.file_len, payloads.iter().map(|p| frame_len(p.len())).sum::<u64>());
        assert_eq!(frames.len(), 4);
        for (i, fr) in frames.iter().enumerate() {
            assert_eq!(fr.seq, 42 + i as u64);
            assert_eq!(fr.items, i as u32 + 1);
            assert_eq!(fr.offset, offsets[i]);
            assert_eq!(&fr.payload[..], payloads[i]);
        }
        let f = File::open(&p).unwrap();
        for (i, pl) in payloads.iter().enumerate() {
            let (items, got) = read_at(&f, offsets[i], 42 + i as u64, pl.len()).unwrap();
            assert_eq!((items, &got[..]), (i as u32 + 1, *pl));
        }
    }

    #[test]
    fn torn_tail_at_every_offset_of_last_record_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let last = [9u8; 37];
        let (p, offsets) = write_segment(dir.path(), 0, &[b"first", b"second", &last]);
        let last_start = offsets[2];
        for cut in last_start..last_start + frame_len(last.len()) {
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(cut).unwrap();
            let (frames, end) = scan_path(&p, 0);
            assert_eq!(frames.iter().map(|f| &f.payload[..]).collect::<Vec<_>>(), [&b"first"[..], b"second"]);
            assert_eq!(end.valid_len, last_start, "cut at {cut}");
            let expect = if cut == last_start { None } else { Some(Damage::Truncated) };
            assert_eq!(end.damage, expect, "cut at {cut}");
            // Put the record back for the next cut.
            drop(f);
            std::fs::remove_file(&p).unwrap();
            write_segment(dir.path(), 0, &[b"first", b"second", &last]);
        }
    }

    #[test]
    fn flipped_bit_anywhere_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (p, offsets) = write_segment(dir.path(), 5, &[b"alpha", b"beta-gamma"]);
        let clean = std::fs::read(&p).unwrap();
        for byte in offsets[1] as usize..clean.len() {
            for bit in 0..8 {
                let mut bad = clean.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&p, &bad).unwrap();
                let (frames, end) = scan_path(&p, 5);
                assert_eq!(frames.len(), 1, "byte {byte} bit {bit}");
                assert_eq!(end.valid_len, offsets[1]);
                assert!(end.damage.is_some(), "byte {byte} bit {bit}");
                let f = File::open(&p).unwrap();
                assert!(read_at(&f, offsets[1], 6, 10).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn garbage_after_the_last_record_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = write_segment(dir.path(), 0, &[b"kept"]);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0u8; 64]).unwrap();
        let (frames, end) = scan_path(&p, 0);
        assert_eq!(frames.len(), 1);
        assert_eq!(end.valid_len, frame_len(4));
        assert!(end.damage.is_some());
    }

    #[test]
    fn frame_out_of_sequence_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = write_segment(dir.path(), 10, &[b"a", b"b"]);
        let (frames, end) = scan_path(&p, 9);
        assert!(frames.is_empty());
        assert_eq!(end.damage, Some(Damage::Sequence { expected: 9, found: 10 }));
    }

    #[test]
    fn segment_names_round_trip_and_sort_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [100u64, 9, u64::MAX, 0] {
            File::create(path(dir.path(), seq)).unwrap();
        }
        File::create(dir.path().join("commit")).unwrap();
        File::create(dir.path().join("12.seg")).unwrap();
        let seqs: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, [0, 9, 100, u64::MAX]);
        assert_eq!(parse_name("0000000000000000000a.seg"), None);
    }
}
