//! One interval's series, kept as encoded remote-write labels, and the staleness diff against
//! the previous interval.
//!
//! A 5,000-pod cluster gives about 100,000 series per interval. Each series' labels (sorted,
//! `__name__`, `cluster` and `job` included) are encoded once into one shared buffer, with a
//! 64-bit hash; the previous interval's frame is kept until the next one is built, so a series
//! that is gone (its object was deleted, a container stopped waiting) gets one staleness marker.
//! That is one buffer and one index per frame instead of a `String` per label.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use lgtm_pipeline::proto::stale_nan;
use lgtm_scrape::encode::{put_label, put_series};

/// The most labels one series has (`kube_node_info`: 13 with `__name__`, `cluster`, `job`).
const MAX_LABELS: usize = 20;

/// The keys are already xxh3 hashes: no second hashing.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashSetU64 = HashSet<u64, BuildHasherDefault<PassThrough>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    start: u32,
    len: u32,
    value: f64,
}

/// The series of one interval.
pub struct Frame {
    /// Added to every series (`cluster`, `job`), unless the series has a label of that name.
    common: Vec<(String, String)>,
    labels: Vec<u8>,
    entries: Vec<Entry>,
    seen: HashSetU64,
}

impl Frame {
    pub fn new(common: Vec<(String, String)>) -> Frame {
        Frame { common, labels: Vec::new(), entries: Vec::new(), seen: HashSetU64::default() }
    }

    /// An empty frame with the same common labels, sized like this one.
    pub fn next(&self) -> Frame {
        let mut f = Frame::new(self.common.clone());
        f.labels.reserve(self.labels.len());
        f.entries.reserve(self.entries.len());
        f.seen.reserve(self.entries.len());
        f
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds series `name{labels}` with `value`. Labels with an empty value are left out (an
    /// empty label is no label in Prometheus); a repeated series keeps its first value.
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut all: [(&str, &str); MAX_LABELS] = [("", ""); MAX_LABELS];
        let mut n = 0;
        all[n] = ("__name__", name);
        n += 1;
        for (k, v) in labels {
            if !v.is_empty() && n < MAX_LABELS {
                all[n] = (k, v);
                n += 1;
            }
        }
        for (k, v) in &self.common {
            if n < MAX_LABELS && !all[..n].iter().any(|(name, _)| name == k) {
                all[n] = (k.as_str(), v.as_str());
                n += 1;
            }
        }
        let all = &mut all[..n];
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let start = self.labels.len();
        for (k, v) in all.iter() {
            put_label(&mut self.labels, k, v);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&self.labels[start..]);
        if !self.seen.insert(hash) {
            self.labels.truncate(start);
            return;
        }
        self.entries.push(Entry { hash, start: start as u32, len: (self.labels.len() - start) as u32, value });
    }

    /// The encoded `WriteRequest`s of this frame at `timestamp_ms`, at most `max_series`
    /// series each: every series of this frame, then a staleness marker for every series of
    /// `previous` that is not in this one. Returns (request, samples) pairs.
    pub fn encode(&self, previous: Option<&Frame>, timestamp_ms: i64, max_series: usize) -> Vec<(Bytes, u32)> {
        let max_series = max_series.max(1);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut samples = 0u32;
        let flush = |buf: &mut Vec<u8>, samples: &mut u32, out: &mut Vec<(Bytes, u32)>| {
            if *samples > 0 {
                out.push((Bytes::from(std::mem::take(buf)), *samples));
                *samples = 0;
            }
        };
        for e in &self.entries {
            put_series(&mut buf, &self.labels[e.start as usize..(e.start + e.len) as usize], e.value, timestamp_ms);
            samples += 1;
            if samples as usize >= max_series {
                flush(&mut buf, &mut samples, &mut out);
            }
        }
        if let Some(prev) = previous {
            for e in prev.entries.iter().filter(|e| !self.seen.contains(&e.hash)) {
                put_series(
                    &mut buf,
                    &prev.labels[e.start as usize..(e.start + e.len) as usize],
                    stale_nan(),
                    timestamp_ms,
                );
                samples += 1;
                if samples as usize >= max_series {
                    flush(&mut buf, &mut samples, &mut out);
                }
            }
        }
        flush(&mut buf, &mut samples, &mut out);
        out
    }

    /// How many series of `previous` this frame no longer has.
    pub fn gone_since(&self, previous: &Frame) -> usize {
        previous.entries.iter().filter(|e| !self.seen.contains(&e.hash)).count()
    }

    /// Bytes held (labels and index), for the debug log.
    pub fn heap_bytes(&self) -> usize {
        self.labels.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>() + self.seen.capacity() * 9
    }
}
