//! Remote-write protobuf written directly from cached label sets.
//!
//! A `prometheus.WriteRequest` is a sequence of `timeseries` (field 1) messages; a `TimeSeries`
//! is its `labels` (field 1, repeated) then its `samples` (field 2). The labels of a series are
//! encoded once, when the series enters the scrape cache, with the sink's external labels
//! merged in and sorted; each scrape then writes those bytes and one sample per series, which
//! is a copy rather than a per-label allocation.
//!
//! [`put_label`] and [`put_series`] are public for other sources that keep their series as
//! encoded labels (the cluster-state metrics of the `statefulset` crate).

use std::borrow::Cow;

use lgtm_pipeline::exporter::remote_write::routed;
use lgtm_pipeline::proto::Label;

use crate::labels::LabelSet;
use crate::sink::Batch;

const TAG_LEN_FIELD_1: u8 = 0x0a; // field 1, length-delimited
const TAG_LEN_FIELD_2: u8 = 0x12; // field 2, length-delimited
const TAG_DOUBLE_FIELD_1: u8 = 0x09; // field 1, 64-bit
const TAG_VARINT_FIELD_2: u8 = 0x10; // field 2, varint

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_string(buf: &mut Vec<u8>, tag: u8, s: &str) {
    buf.push(tag);
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends one `labels` field of a `TimeSeries` (a `Label` message). Callers append a
/// series' labels sorted by name, as remote write expects.
pub fn put_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let len = 1 + varint_len(name.len() as u64) + name.len() + 1 + varint_len(value.len() as u64) + value.len();
    buf.push(TAG_LEN_FIELD_1);
    put_varint(buf, len as u64);
    put_string(buf, TAG_LEN_FIELD_1, name);
    put_string(buf, TAG_LEN_FIELD_2, value);
}

/// Appends one `timeseries` field of a `WriteRequest`: `labels` (from [`put_label`] or
/// [`encode_labels`]) and one sample.
pub fn put_series(buf: &mut Vec<u8>, labels: &[u8], value: f64, timestamp_ms: i64) {
    put_series_parts(buf, &[labels], value, timestamp_ms);
}

/// [`put_series`] with the `labels` fields in pieces, written one after the other: shared
/// encoded labels around one that varies (the synthetic series' `__name__`).
fn put_series_parts(buf: &mut Vec<u8>, labels: &[&[u8]], value: f64, timestamp_ms: i64) {
    let ts = timestamp_ms as u64;
    let sample_len = 1 + 8 + 1 + varint_len(ts);
    let labels_len: usize = labels.iter().map(|part| part.len()).sum();
    let series_len = labels_len + 1 + varint_len(sample_len as u64) + sample_len;
    buf.push(TAG_LEN_FIELD_1);
    put_varint(buf, series_len as u64);
    for part in labels {
        buf.extend_from_slice(part);
    }
    buf.push(TAG_LEN_FIELD_2);
    put_varint(buf, sample_len as u64);
    buf.push(TAG_DOUBLE_FIELD_1);
    buf.extend_from_slice(&value.to_le_bytes());
    buf.push(TAG_VARINT_FIELD_2);
    put_varint(buf, ts);
}

/// `labels` plus each external label it lacks.
pub(crate) fn with_external<'a>(labels: &'a LabelSet, external: &[Label]) -> Cow<'a, LabelSet> {
    if external.iter().all(|e| labels.contains(&e.name)) {
        return Cow::Borrowed(labels);
    }
    let mut merged = labels.clone();
    for e in external {
        if !merged.contains(&e.name) {
            merged.set(&e.name, e.value.clone());
        }
    }
    Cow::Owned(merged)
}

/// The `labels` fields of a `TimeSeries`: `labels` plus each external label it lacks, sorted
/// by name (what `MetricsSink::send` would produce).
pub(crate) fn encode_labels(labels: &LabelSet, external: &[Label]) -> Box<[u8]> {
    let mut buf = Vec::new();
    for l in with_external(labels, external).iter() {
        put_label(&mut buf, &l.name, &l.value);
    }
    buf.into_boxed_slice()
}

/// Batch buffers given back once the pipeline is done with a batch (its exporter sent it), for
/// the next scrape of any target. A scrape's batch (about 200 bytes per series: 400 KiB at 2,000
/// series) is larger than the allocator's mmap threshold (128 KiB, see the agent's `memory.rs`),
/// so a fresh one was a new mapping whose every page faulted in and was zeroed by the kernel, and
/// was unmapped when freed: about 7 % of the agent's CPU under `bench scrape` (perf), more than
/// encoding the series. Scrapes are spread over the interval and batches leave the queue within
/// about a second, so two buffers kept serve the steady state; more scrapes at once allocate.
mod pool {
    use crate::buffer_pool::BufferPool;

    /// A buffer grown beyond 4 MiB (one huge target) is freed rather than kept.
    pub(super) static BATCHES: BufferPool = BufferPool::new(2, 4 * 1024 * 1024);

    /// The per-shard parts of routed batches (`BatchBuilder::parts`) and the scratch they are
    /// compressed into, used only while a scrape is encoded: a quarter of a 2,000-series batch
    /// is about the mmap threshold, so fresh ones faulted in as batches did. Enough for two
    /// scrapes at once with 4 shards.
    pub(super) static PARTS: BufferPool = BufferPool::new(10, 1024 * 1024);

    /// The bytes of a finished batch; the buffer goes back to the pool when the last clone of
    /// the `Bytes` is dropped.
    pub(super) struct Pooled(pub(super) Vec<u8>);

    impl AsRef<[u8]> for Pooled {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Pooled {
        fn drop(&mut self) {
            BATCHES.give(std::mem::take(&mut self.0));
        }
    }
}

/// Every buffer pool of the scrape loops, for [`crate::buffer_pool::start_expiry`].
pub(crate) static POOLS: [&crate::buffer_pool::BufferPool; 3] =
    [&crate::buffer_pool::BODIES, &pool::BATCHES, &pool::PARTS];

/// Batches smaller than this (small targets, staleness markers, synthetic series) come from the
/// heap as before and are not pooled: the pool is for buffers above the mmap threshold.
const MIN_POOLED_BATCH: usize = 64 * 1024;

/// A pooled buffer for a batch of `bytes` when that is large (see [`pool`]), a heap one otherwise.
fn batch_buffer(bytes: usize) -> Vec<u8> {
    if bytes >= MIN_POOLED_BATCH {
        pool::BATCHES.take(bytes)
    } else {
        Vec::with_capacity(bytes)
    }
}

/// The routing hash of a series whose `labels` fields are `labels` (see [`routed`]): the same
/// as [`label_hash`] of their concatenation.
fn parts_hash(labels: &[&[u8]]) -> u64 {
    match labels {
        [one] => label_hash(one),
        parts => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for part in parts {
                h.update(part);
            }
            h.digest()
        }
    }
}

/// The hash a series is routed to a remote-write shard by: xxh3-64 of its `labels` fields as
/// encoded (what the exporter computes on plain records, see [`routed`]). The scrape cache keeps
/// it as the series' fingerprint, so a scrape routes its series without hashing them.
pub(crate) fn label_hash(labels: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(labels)
}

/// The routed record of `parts` (see [`routed`]): the header, then each part compressed.
/// `capacity`: the expected size (the last batch's). Not a pooled buffer: compressed, a
/// 2,000-series batch is below the mmap threshold.
fn join_parts(parts: &[Part], capacity: usize) -> Vec<u8> {
    thread_local! {
        /// Its hash table is allocated once per thread rather than once per part.
        static ENCODER: std::cell::RefCell<snap::raw::Encoder> = std::cell::RefCell::new(snap::raw::Encoder::new());
    }
    let mut out = Vec::with_capacity(capacity.max(routed::header_len(parts.len())));
    let sizes: Vec<(u32, u32)> = parts.iter().map(|p| (0, p.samples)).collect();
    routed::put_header(&mut out, &sizes);
    let largest = parts.iter().map(|p| p.buf.len()).max().unwrap_or(0);
    let mut scratch = pool::PARTS.take(0);
    scratch.resize(snap::raw::max_compress_len(largest), 0);
    let compressed = ENCODER.with_borrow_mut(|encoder| {
        for (i, part) in parts.iter().enumerate() {
            if part.buf.is_empty() {
                continue;
            }
            // Fails only for an input over about 4 GiB, which no scrape body within
            // `body_size_limit` yields; written plain then, which the exporter reads as well.
            let n = encoder.compress(&part.buf, &mut scratch).map_err(drop)?;
            routed::set_part_bytes(&mut out, i, u32::try_from(n).map_err(drop)?);
            out.extend_from_slice(&scratch[..n]);
        }
        Ok::<(), ()>(())
    });
    pool::PARTS.give(scratch);
    if compressed.is_err() {
        out.clear();
        for part in parts {
            out.extend_from_slice(&part.buf);
        }
    }
    out
}

/// One shard's series of a routed batch.
#[derive(Debug, Default)]
struct Part {
    buf: Vec<u8>,
    samples: u32,
}

/// Accumulates one scrape's `WriteRequest`, plain or grouped by remote-write shard
/// ([`routed`]: the exporter then sends each shard's part as it is, without walking and hashing
/// every series).
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    buf: Vec<u8>,
    samples: u32,
    /// Grouped for `parts.len()` shards (2 or more); empty: plain.
    parts: Vec<Part>,
    /// The expected size of the batch.
    capacity: usize,
}

impl BatchBuilder {
    /// A builder with room for `bytes`, in a pooled buffer (see [`pool`]) when that is large;
    /// grouping its series for `shards` remote-write shards when that is 2 or more (at most
    /// [`routed::MAX_SHARDS`]; more are written plain).
    pub fn with_capacity(bytes: usize, shards: usize) -> BatchBuilder {
        if !(2..=routed::MAX_SHARDS).contains(&shards) {
            return BatchBuilder { buf: batch_buffer(bytes), samples: 0, parts: Vec::new(), capacity: bytes };
        }
        // Pooled parts (they keep the size they grew to), compressed into one batch by `finish`.
        let parts = (0..shards).map(|_| Part { buf: pool::PARTS.take(0), samples: 0 }).collect();
        BatchBuilder { buf: Vec::new(), samples: 0, parts, capacity: bytes }
    }

    /// Appends a series with one sample; `labels` comes from [`encode_labels`], `hash` is its
    /// [`label_hash`].
    pub fn push_hashed(&mut self, labels: &[u8], hash: u64, value: f64, timestamp_ms: i64) {
        let buf = if self.parts.is_empty() {
            &mut self.buf
        } else {
            let shards = self.parts.len();
            let part = &mut self.parts[routed::shard_of_hash(hash, shards)];
            part.samples += 1;
            &mut part.buf
        };
        put_series_parts(buf, &[labels], value, timestamp_ms);
        self.samples += 1;
    }

    /// Appends a series with one sample; `labels` comes from [`encode_labels`].
    #[cfg(test)]
    pub fn push(&mut self, labels: &[u8], value: f64, timestamp_ms: i64) {
        self.push_parts(&[labels], value, timestamp_ms);
    }

    /// Appends a series with one sample whose `labels` fields are `labels` one after the other.
    pub fn push_parts(&mut self, labels: &[&[u8]], value: f64, timestamp_ms: i64) {
        let buf = if self.parts.is_empty() {
            &mut self.buf
        } else {
            let shards = self.parts.len();
            let part = &mut self.parts[routed::shard_of_hash(parts_hash(labels), shards)];
            part.samples += 1;
            &mut part.buf
        };
        put_series_parts(buf, labels, value, timestamp_ms);
        self.samples += 1;
    }

    /// Drops what was appended (a failed scrape keeps nothing from its body).
    pub fn clear(&mut self) {
        self.buf.clear();
        for part in &mut self.parts {
            part.buf.clear();
            part.samples = 0;
        }
        self.samples = 0;
    }

    pub fn finish(mut self) -> Batch {
        if !self.parts.is_empty() {
            self.buf = join_parts(&self.parts, self.capacity);
            for part in self.parts.drain(..) {
                pool::PARTS.give(part.buf);
            }
        }
        let bytes = if self.buf.capacity() >= MIN_POOLED_BATCH {
            bytes::Bytes::from_owner(pool::Pooled(self.buf))
        } else {
            self.buf.into()
        };
        Batch::new(bytes, self.samples)
    }
}

#[cfg(test)]
mod tests {
    use lgtm_pipeline::proto::{Sample, TimeSeries, WriteRequest};
    use prost::Message;

    use super::*;

    /// A large batch's buffer comes back to the pool once the last clone of its bytes is
    /// dropped, and a batch written into a reused buffer holds only its own series.
    #[test]
    fn a_large_batchs_buffer_is_reused_once_its_bytes_are_dropped_and_holds_only_the_new_series() {
        let labels =
            encode_labels(&LabelSet::from_pairs([("__name__", "big"), ("pod", "x".repeat(200).as_str())]), &[]);
        let build = |value: f64| {
            let mut b = BatchBuilder::with_capacity(MIN_POOLED_BATCH, 0);
            for _ in 0..400 {
                b.push(&labels, value, 1);
            }
            b.finish()
        };
        // Other tests of the crate may take a pooled buffer in between: a few tries.
        let mut reused = false;
        for _ in 0..20 {
            let first = build(1.0);
            let held = first.bytes().clone();
            let ptr = first.bytes().as_ptr();
            drop(first);
            let other = build(3.0);
            assert_ne!(other.bytes().as_ptr(), ptr, "a clone of the bytes keeps the buffer out of the pool");
            assert!(held.len() > 400 * 200 && WriteRequest::decode(held.clone()).is_ok());
            // The pool hands out the last buffer given back.
            drop(other);
            drop(held);
            let second = build(2.0);
            let series = second.decode().expect("decodes");
            assert_eq!(series.len(), 400);
            assert!(series.iter().all(|s| s.samples[0].value == 2.0));
            if second.bytes().as_ptr() == ptr {
                reused = true;
                break;
            }
        }
        assert!(reused, "the buffer of a dropped batch was never reused");
    }

    #[test]
    fn encoding_matches_prost_and_merges_external_labels() {
        let labels = LabelSet::from_pairs([("__name__", "up"), ("job", "node"), ("zone", "é".repeat(100).as_str())]);
        let external = [Label::new("cluster", "c1"), Label::new("job", "ignored")];
        let encoded = encode_labels(&labels, &external);
        let mut b = BatchBuilder::default();
        b.push(&encoded, 1.5, 1_700_000_000_000);
        b.push(&encoded, f64::from_bits(0x7ff0_0000_0000_0002), -1);
        let batch = b.finish();
        assert_eq!(batch.samples(), 2);

        let mut sorted = labels.clone();
        sorted.set("cluster", "c1");
        let want = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: sorted.as_slice().to_vec(),
                    samples: vec![Sample { value: 1.5, timestamp: 1_700_000_000_000 }],
                },
                TimeSeries {
                    labels: sorted.as_slice().to_vec(),
                    samples: vec![Sample { value: f64::from_bits(0x7ff0_0000_0000_0002), timestamp: -1 }],
                },
            ],
        };
        let got = WriteRequest::decode(batch.bytes().clone()).unwrap();
        assert_eq!(got.timeseries.len(), 2);
        assert_eq!(got.timeseries[0], want.timeseries[0]);
        assert_eq!(got.timeseries[1].labels, want.timeseries[1].labels);
        assert_eq!(got.timeseries[1].samples[0].value.to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(got.timeseries[1].samples[0].timestamp, -1);
    }
    /// A batch grouped for 4 shards holds the same series as the plain one, each in the part of
    /// the shard the exporter's walk of the plain batch gives it, in order, with the header
    /// counting each part's bytes and samples; synthetic series (pieces) route as whole ones.
    #[test]
    fn a_routed_batch_puts_each_series_in_the_part_of_its_shard() {
        use lgtm_pipeline::exporter::remote_write::wire;
        let sets: Vec<Box<[u8]>> = (0..300)
            .map(|i| {
                let set = LabelSet::from_pairs([
                    ("__name__", format!("m{}", i % 7).as_str()),
                    ("pod", format!("p{i}").as_str()),
                ]);
                encode_labels(&set, &[Label::new("cluster", "c1")])
            })
            .collect();
        let fill = |b: &mut BatchBuilder| {
            for (i, labels) in sets.iter().enumerate() {
                b.push_hashed(labels, label_hash(labels), i as f64, 1_000 + i as i64);
            }
            let (head, tail) = sets[5].split_at(7);
            b.push_parts(&[head, tail], -1.0, 5);
        };
        let mut plain = BatchBuilder::with_capacity(0, 0);
        fill(&mut plain);
        let plain = plain.finish();
        assert!(!routed::is_routed(plain.bytes()));
        for shards in [2, 4, 7] {
            let mut grouped = BatchBuilder::with_capacity(1 << 10, shards);
            fill(&mut grouped);
            let grouped = grouped.finish();
            assert_eq!(grouped.samples(), 301);
            let parts = routed::parse(grouped.bytes()).expect("well formed").expect("routed");
            assert_eq!(parts.len(), shards);
            assert_eq!(parts.iter().map(|p| p.samples).sum::<u32>(), 301);
            let mut walked = Vec::new();
            wire::route_series(plain.bytes(), shards, &mut walked).expect("plain batch walks");
            for (shard, part) in parts.iter().enumerate() {
                let expected: Vec<u8> = walked
                    .iter()
                    .filter(|(s, _, _)| *s == shard)
                    .flat_map(|(_, range, _)| plain.bytes()[range.clone()].to_vec())
                    .collect();
                let raw = routed::decompress(grouped.bytes(), part.range.clone()).expect("snappy part");
                assert_eq!(raw.len(), part.raw_len);
                assert_eq!(raw, expected, "shard {shard} of {shards}");
                let n = walked.iter().filter(|(s, _, _)| *s == shard).count() as u32;
                assert_eq!(part.samples, n);
            }
            let mut got = grouped.decode().expect("decodes");
            let mut want = plain.decode().expect("decodes");
            let key = |t: &TimeSeries| (format!("{:?}", t.labels), t.samples[0].timestamp);
            got.sort_by_key(key);
            want.sort_by_key(key);
            assert_eq!(got, want);
        }
    }
}
