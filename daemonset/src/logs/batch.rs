//! Builds a Loki `PushRequest` protobuf directly from borrowed entries: one reusable buffer of
//! encoded `EntryAdapter`s per stream, no per-line `String` or message struct. The result is what
//! `prost` would produce for [`lgtm_pipeline::proto::PushRequest`] (tested by decoding it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

use super::format::Entry;

/// A stream as the batch builder knows it: an interned id and the selector text.
#[derive(Debug, Clone)]
pub struct StreamRef {
    pub id: u64,
    pub labels: Arc<str>,
}

#[derive(Debug)]
struct StreamBuf {
    labels: Arc<str>,
    /// Encoded `StreamAdapter.entries` fields (tag 2), back to back.
    entries: Vec<u8>,
}

/// Entries accumulated for the next push.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    streams: Vec<StreamBuf>,
    index: HashMap<u64, usize>,
    /// The key and index of the last entry's stream: a file's lines come one after another, so
    /// most lines find their stream here without hashing.
    last: Option<(u64, usize)>,
    /// The last stream's id and whether its selector has a `stream` label already.
    last_labelled: Option<(u64, bool)>,
    /// Stream buffers of finished batches, for the next ones, with their capacity in all.
    pool: Vec<Vec<u8>>,
    pool_bytes: usize,
    bytes: usize,
    entries: u32,
    started: Option<Instant>,
    /// Lines that had invalid UTF-8 (replaced with U+FFFD), since the last [`BatchBuilder::take_invalid_utf8`].
    invalid_utf8: u64,
    /// `stream` (stdout/stderr) as a stream label rather than structured metadata.
    stream_label: bool,
    /// Buffers of finished requests the pipeline has dropped, for the next ones ([`Recycled`]).
    returned: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Request buffers kept for reuse: a request is about 0.5-1 MiB, above glibc's mmap threshold
/// (128 KiB, see the agent's `memory.rs`), so a new one is a new mapping whose every page faults
/// in zeroed and is unmapped again when the request is sent (a tenth of the tailer's CPU at
/// 5 MiB/s). Two cover the steady state (one being filled, one being sent); more in flight during
/// a catch-up are freed as usual.
const RETURNED_MAX: usize = 2;
/// A buffer grown beyond this is not kept.
const RETURNED_MAX_CAPACITY: usize = 4 << 20;

/// Stream buffers are kept for the next batches up to this much capacity in all, however many
/// streams a batch had: at 5 MiB/s over 100 files a batch holds about 100 streams of a few KiB
/// (keeping 64 buffers, as before, made the others grow anew from nothing in every batch: a few
/// per cent of the tailer's CPU in `malloc`/`realloc`); a catch-up of one file fills one or two
/// buffers of up to `batch_max_bytes`.
const POOL_MAX_BYTES: usize = 4 << 20;

/// A kept buffer larger than this is trimmed when it holds less than a quarter of its capacity.
const TRIM_ABOVE: usize = 64 * 1024;

/// Shrinks a buffer about to be kept (its contents are the batch it held) to twice what it held
/// when that was less than a quarter of its capacity: the buffers a catch-up grew to
/// `batch_max_bytes` (at start, after a burst) otherwise stayed resident for as long as the files
/// kept writing at a lower rate, since the idle release never came (about 2 MiB of `bench
/// node`'s mean RSS). A buffer the steady rate fills is not touched, and one trimmed grows back
/// only for a batch twice as large.
fn trim_overgrown(buf: &mut Vec<u8>) {
    if buf.capacity() > TRIM_ABOVE && buf.len() < buf.capacity() / 4 {
        buf.shrink_to(2 * buf.len());
    }
}

/// A finished request's bytes; when the pipeline drops them, the buffer goes back to its builder.
struct Recycled {
    buf: Vec<u8>,
    home: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(home) = self.home.upgrade() else { return };
        let mut home = home.lock().unwrap_or_else(|p| p.into_inner());
        if home.len() < RETURNED_MAX && self.buf.capacity() <= RETURNED_MAX_CAPACITY {
            let mut buf = std::mem::take(&mut self.buf);
            trim_overgrown(&mut buf);
            buf.clear();
            home.push(buf);
        }
    }
}

fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::default()
    }

    /// Puts `stream="stdout|stderr"` in the stream's labels (one Loki stream per file and output,
    /// as Vector, Fluent Bit, Alloy and Promtail do) instead of in each entry's structured metadata.
    pub fn with_stream_label(mut self, on: bool) -> BatchBuilder {
        self.stream_label = on;
        self
    }

    /// Encoded bytes so far (approximately the request size).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// When the first entry of this batch arrived.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn take_invalid_utf8(&mut self) -> u64 {
        std::mem::take(&mut self.invalid_utf8)
    }

    pub fn push(&mut self, stream: &StreamRef, e: &Entry<'_>) {
        // With the stream label, a file's stdout and stderr are two Loki streams: the key keeps
        // them apart (stream ids are small counters, so `id * 3 + output` cannot collide).
        let as_label = match e.stream {
            Some(s) if self.stream_label && !self.has_stream_label(stream) => Some(s.as_str()),
            _ => None,
        };
        let key = match as_label {
            None => stream.id.wrapping_mul(3),
            Some("stdout") => stream.id.wrapping_mul(3) + 1,
            Some(_) => stream.id.wrapping_mul(3) + 2,
        };
        let idx = match self.last.filter(|&(k, _)| k == key).or_else(|| self.index.get(&key).map(|&i| (key, i))) {
            Some((_, i)) => i,
            None => {
                let entries = self.pool.pop().unwrap_or_default();
                self.pool_bytes -= entries.capacity();
                let labels = match as_label {
                    None => stream.labels.clone(),
                    Some(output) => with_label(&stream.labels, "stream", output),
                };
                self.bytes += len_field(1, labels.len()) + 8;
                self.streams.push(StreamBuf { labels, entries });
                self.index.insert(key, self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        self.last = Some((key, idx));
        let metadata_stream = if as_label.is_some() { None } else { e.stream.map(|s| s.as_str()) };
        let lossy;
        let line: &[u8] = match std::str::from_utf8(e.line) {
            Ok(_) => e.line,
            Err(_) => {
                self.invalid_utf8 += 1;
                lossy = String::from_utf8_lossy(e.line).into_owned();
                lossy.as_bytes()
            }
        };
        let buf = &mut self.streams[idx].entries;
        let before = buf.len();
        encode_entry(buf, e.timestamp, line, metadata_stream, e.part);
        self.bytes += buf.len() - before;
        self.entries += 1;
        self.started.get_or_insert_with(Instant::now);
    }

    /// [`has_stream_label`] of `stream`, remembered for the last stream seen (a search of its
    /// selector per line otherwise).
    fn has_stream_label(&mut self, stream: &StreamRef) -> bool {
        match self.last_labelled {
            Some((id, has)) if id == stream.id => has,
            _ => {
                let has = has_stream_label(&stream.labels);
                self.last_labelled = Some((stream.id, has));
                has
            }
        }
    }

    /// Frees the buffers kept for reuse by the next batches (the builder allocates anew).
    pub fn release_spare(&mut self) {
        self.pool = Vec::new();
        self.pool_bytes = 0;
        self.returned.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Bytes kept for reuse between batches (for tests).
    pub fn spare_capacity(&self) -> usize {
        let returned: usize = self.returned.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Vec::capacity).sum();
        self.pool.iter().map(Vec::capacity).sum::<usize>() + returned
    }

    /// The encoded `PushRequest` and its entry count, or `None` if empty; resets the builder.
    pub fn finish(&mut self) -> Option<(Bytes, u32)> {
        if self.entries == 0 {
            self.reset();
            return None;
        }
        let need = self.bytes + 16 * self.streams.len();
        let mut out = self.returned.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        out.reserve(need);
        for s in &self.streams {
            let stream_len = len_field(1, s.labels.len()) + s.entries.len();
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(stream_len as u64, &mut out);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(s.labels.len() as u64, &mut out);
            out.put_slice(s.labels.as_bytes());
            out.put_slice(&s.entries);
        }
        let n = self.entries;
        self.reset();
        Some((Bytes::from_owner(Recycled { buf: out, home: Arc::downgrade(&self.returned) }), n))
    }

    fn reset(&mut self) {
        for mut s in self.streams.drain(..) {
            trim_overgrown(&mut s.entries);
            if self.pool_bytes + s.entries.capacity() <= POOL_MAX_BYTES {
                s.entries.clear();
                self.pool_bytes += s.entries.capacity();
                self.pool.push(s.entries);
            }
        }
        self.index.clear();
        self.last = None;
        self.bytes = 0;
        self.entries = 0;
        self.started = None;
    }
}

/// Whether a selector (`{a="1", b="2"}`) already has a `stream` label (a pod label copied under
/// that name): then the output stays in structured metadata rather than a duplicate label.
fn has_stream_label(selector: &str) -> bool {
    selector.starts_with("{stream=\"") || selector.contains(", stream=\"")
}

/// The selector with one more label, whose value needs no escaping (`stdout`, `stderr`).
fn with_label(selector: &str, name: &str, value: &str) -> Arc<str> {
    match selector.strip_suffix('}') {
        Some(head) if head.len() > 1 => Arc::from(format!("{head}, {name}=\"{value}\"}}")),
        _ => Arc::from(format!("{{{name}=\"{value}\"}}")),
    }
}

/// Appends one `StreamAdapter.entries` field (tag 2) holding an `EntryAdapter`.
fn encode_entry(buf: &mut Vec<u8>, timestamp: i64, line: &[u8], stream: Option<&str>, part: u32) {
    let seconds = timestamp.div_euclid(1_000_000_000);
    let nanos = timestamp.rem_euclid(1_000_000_000) as i32;
    let ts_len = if seconds != 0 { key_len(1) + encoded_len_varint(seconds as u64) } else { 0 }
        + if nanos != 0 { key_len(2) + encoded_len_varint(nanos as u64) } else { 0 };
    // Only parts of split lines pay for this allocation.
    let part_text = if part > 0 { part.to_string() } else { String::new() };
    let part_str = part_text.as_bytes();
    let meta = |name: &str, value: usize| len_field(3, len_field(1, name.len()) + len_field(2, value));
    let entry_len = len_field(1, ts_len)
        + len_field(2, line.len())
        + stream.map_or(0, |s| meta("stream", s.len()))
        + if part > 0 { meta("part", part_str.len()) } else { 0 };
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(entry_len as u64, buf);
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(ts_len as u64, buf);
    if seconds != 0 {
        encode_key(1, WireType::Varint, buf);
        encode_varint(seconds as u64, buf);
    }
    if nanos != 0 {
        encode_key(2, WireType::Varint, buf);
        encode_varint(nanos as u64, buf);
    }
    encode_bytes(2, line, buf);
    if let Some(s) = stream {
        encode_pair(buf, "stream", s.as_bytes());
    }
    if part > 0 {
        encode_pair(buf, "part", part_str);
    }
}

fn encode_pair(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    encode_key(3, WireType::LengthDelimited, buf);
    encode_varint((len_field(1, name.len()) + len_field(2, value.len())) as u64, buf);
    encode_bytes(1, name.as_bytes(), buf);
    encode_bytes(2, value, buf);
}

fn encode_bytes(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(v.len() as u64, buf);
    buf.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use lgtm_pipeline::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
    use prost::Message;

    use super::*;
    use crate::logs::cri::Stream;

    #[test]
    fn buffers_kept_for_reuse_are_freed_on_request_and_the_next_batch_is_the_same() {
        let a = StreamRef { id: 1, labels: Arc::from(r#"{pod="a"}"#) };
        let line = vec![b'x'; 1000];
        let mut bb = BatchBuilder::new();
        let fill = |bb: &mut BatchBuilder| {
            for _ in 0..100 {
                bb.push(&a, &Entry { timestamp: 1, stream: None, line: &line, part: 0 });
            }
            bb.finish().unwrap()
        };
        let first = fill(&mut bb);
        assert!(bb.spare_capacity() >= 100_000, "the stream's buffer is kept for the next batch");
        bb.release_spare();
        assert_eq!(bb.spare_capacity(), 0);
        assert_eq!(fill(&mut bb), first);
    }

    /// Pushes `n` lines of 1,000 bytes of one stream and finishes the batch.
    fn fill_one_stream(bb: &mut BatchBuilder, n: usize) -> Bytes {
        let a = StreamRef { id: 1, labels: Arc::from(r#"{pod="a"}"#) };
        let line = vec![b'x'; 1000];
        for _ in 0..n {
            bb.push(&a, &Entry { timestamp: 1, stream: None, line: &line, part: 0 });
        }
        bb.finish().unwrap().0
    }

    #[test]
    fn buffers_a_catch_up_grew_are_trimmed_once_batches_are_small_again() {
        let mut bb = BatchBuilder::new();
        let fill = fill_one_stream;
        // A catch-up: about 1 MiB in the stream's buffer and in the request.
        drop(fill(&mut bb, 1000));
        assert!(bb.spare_capacity() >= 2_000_000, "both kept: {}", bb.spare_capacity());
        // The steady rate: a few KiB per batch. The next two batches reuse the large buffers
        // and hand them back trimmed.
        for _ in 0..3 {
            drop(fill(&mut bb, 5));
        }
        assert!(bb.spare_capacity() <= 3 * 2 * 5 * 1100, "trimmed: {} bytes kept", bb.spare_capacity());
        // A buffer the batches fill is kept as it is.
        drop(fill(&mut bb, 200));
        let kept = bb.spare_capacity();
        drop(fill(&mut bb, 200));
        assert_eq!(bb.spare_capacity(), kept, "no trim, no growth");
    }

    #[test]
    fn every_stream_buffer_of_a_batch_is_kept_for_the_next_up_to_a_bound() {
        let line = vec![b'x'; 1000];
        let streams: Vec<StreamRef> =
            (0..100).map(|i| StreamRef { id: i, labels: Arc::from(format!("{{pod=\"p{i}\"}}")) }).collect();
        let mut bb = BatchBuilder::new();
        for s in &streams {
            for _ in 0..4 {
                bb.push(s, &Entry { timestamp: 1, stream: None, line: &line, part: 0 });
            }
        }
        drop(bb.finish().unwrap());
        let returned = bb.returned.lock().unwrap().iter().map(Vec::capacity).sum::<usize>();
        assert!(
            bb.spare_capacity() - returned >= 100 * 4 * 1000,
            "the 100 streams' buffers are kept: {} bytes",
            bb.spare_capacity() - returned
        );
        // Large buffers: kept up to `POOL_MAX_BYTES` in all.
        let big = vec![b'x'; 256 * 1024];
        for s in &streams[..40] {
            for _ in 0..4 {
                bb.push(s, &Entry { timestamp: 1, stream: None, line: &big, part: 0 });
            }
        }
        drop(bb.finish().unwrap());
        assert!(bb.pool_bytes <= POOL_MAX_BYTES && bb.pool_bytes > POOL_MAX_BYTES / 2, "{}", bb.pool_bytes);
        assert_eq!(bb.pool_bytes, bb.pool.iter().map(Vec::capacity).sum::<usize>());
    }

    #[test]
    fn a_request_dropped_by_the_pipeline_gives_its_buffer_to_the_next_one() {
        let mut bb = BatchBuilder::new();
        let fill = fill_one_stream;
        let first = fill(&mut bb, 300);
        let addr = first.as_ptr();
        let copy = first.to_vec();
        let pooled = bb.spare_capacity();
        drop(first);
        assert!(bb.spare_capacity() >= pooled + copy.len(), "the request's buffer came back");
        let second = fill(&mut bb, 300);
        assert_eq!(second.as_ptr(), addr, "and the next request is written into it");
        assert_eq!(second.to_vec(), copy, "with the same bytes");
        // A request held while the next ones are built: each gets a buffer of its own.
        let third = fill(&mut bb, 10);
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!(PushRequest::decode(third.clone()).unwrap().streams[0].entries.len(), 10);
        drop((second, third));
        bb.release_spare();
        assert_eq!(bb.spare_capacity(), 0, "given back when the files go quiet");
        let kept = fill(&mut bb, 10);
        drop(bb);
        assert_eq!(PushRequest::decode(kept).unwrap().streams[0].entries.len(), 10, "outlives its builder");
    }

    #[test]
    fn encodes_what_prost_decodes() {
        let a = StreamRef { id: 1, labels: Arc::from(r#"{pod="a"}"#) };
        let b = StreamRef { id: 2, labels: Arc::from(r#"{pod="b"}"#) };
        let mut bb = BatchBuilder::new();
        bb.push(&a, &Entry { timestamp: 1_500_000_001, stream: Some(Stream::Stdout), line: b"hello", part: 0 });
        bb.push(&b, &Entry { timestamp: 0, stream: None, line: b"", part: 0 });
        bb.push(&a, &Entry { timestamp: -1, stream: Some(Stream::Stderr), line: b"bad \xff byte", part: 12 });
        assert_eq!(bb.take_invalid_utf8(), 1);
        let (bytes, n) = bb.finish().unwrap();
        assert_eq!(n, 3);
        let got = PushRequest::decode(bytes).unwrap();
        let pair = |n: &str, v: &str| LabelPairAdapter { name: n.into(), value: v.into() };
        let want = PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{pod="a"}"#.into(),
                    entries: vec![
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_unix_nanos(1_500_000_001)),
                            line: "hello".into(),
                            structured_metadata: vec![pair("stream", "stdout")],
                        },
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_unix_nanos(-1)),
                            line: "bad \u{fffd} byte".into(),
                            structured_metadata: vec![pair("stream", "stderr"), pair("part", "12")],
                        },
                    ],
                    hash: 0,
                },
                StreamAdapter {
                    labels: r#"{pod="b"}"#.into(),
                    entries: vec![EntryAdapter {
                        timestamp: Some(Timestamp::default()),
                        line: String::new(),
                        structured_metadata: vec![],
                    }],
                    hash: 0,
                },
            ],
        };
        assert_eq!(got, want);
        assert!(bb.finish().is_none());
        assert_eq!(bb.bytes(), 0);
    }

    #[test]
    fn stream_label_makes_one_loki_stream_per_output_and_keeps_part_in_metadata() {
        let a = StreamRef { id: 1, labels: Arc::from(r#"{namespace="shop", pod="a"}"#) };
        let labelled = StreamRef { id: 2, labels: Arc::from(r#"{pod="b", stream="x"}"#) };
        let mut bb = BatchBuilder::new().with_stream_label(true);
        bb.push(&a, &Entry { timestamp: 1, stream: Some(Stream::Stdout), line: b"out", part: 0 });
        bb.push(&a, &Entry { timestamp: 2, stream: Some(Stream::Stderr), line: b"err", part: 3 });
        bb.push(&a, &Entry { timestamp: 3, stream: Some(Stream::Stdout), line: b"out2", part: 0 });
        bb.push(&a, &Entry { timestamp: 4, stream: None, line: b"none", part: 0 });
        bb.push(&labelled, &Entry { timestamp: 5, stream: Some(Stream::Stderr), line: b"kept", part: 0 });
        let (bytes, n) = bb.finish().unwrap();
        assert_eq!(n, 5);
        let req = PushRequest::decode(bytes).unwrap();
        // (selector, [(line, ["name=value" of its metadata])]) per stream, in request order.
        type Streams = Vec<(String, Vec<(String, Vec<String>)>)>;
        let got: Streams = req
            .streams
            .iter()
            .map(|s| {
                let entries = s
                    .entries
                    .iter()
                    .map(|e| {
                        let meta = e.structured_metadata.iter().map(|m| format!("{}={}", m.name, m.value)).collect();
                        (e.line.clone(), meta)
                    })
                    .collect();
                (s.labels.clone(), entries)
            })
            .collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            got,
            vec![
                (s(r#"{namespace="shop", pod="a", stream="stdout"}"#), vec![(s("out"), vec![]), (s("out2"), vec![])]),
                (s(r#"{namespace="shop", pod="a", stream="stderr"}"#), vec![(s("err"), vec![s("part=3")])]),
                (s(r#"{namespace="shop", pod="a"}"#), vec![(s("none"), vec![])]),
                // A pod label already named `stream`: the output stays in metadata.
                (s(r#"{pod="b", stream="x"}"#), vec![(s("kept"), vec![s("stream=stderr")])]),
            ]
        );
    }
}
