//! One interval's series, encoded into remote-write requests as they are rendered, and one
//! staleness marker for every series gone since the previous interval.
//!
//! A 5,000-pod cluster gives about 100,000 series per interval. They are not held: each
//! series' labels (sorted, `__name__`, `cluster` and `job` included) are encoded into the
//! request being filled, and a full request (`max_series` series) is handed on (to the sink,
//! through a bounded channel) before the next one is filled. What the interval keeps is a
//! 64-bit hash per series: no series twice, and the staleness check.
//!
//! Staleness without the previous interval's series: an object the stores still hold the same
//! `Arc` of renders the same series as before, so only the previous versions of changed and
//! deleted objects are rendered again ([`Frame::start_stale`]), and each of their series this
//! interval did not render gets one marker. Keeping the previous interval's encoded labels for
//! the diff, as this did before, held two label buffers of about 20 MiB at 100,000 series, and
//! the requests were encoded from them all at once.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use lgtm_pipeline::proto::stale_nan;
use lgtm_scrape::encode::{put_label, put_series};
use tokio::sync::mpsc;

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

/// Where full requests go.
enum Out {
    /// Kept, for [`Frame::finish`].
    Collect(Vec<(Bytes, u32)>),
    /// Sent, waiting while the channel is full.
    Send(mpsc::Sender<(Bytes, u32)>),
    /// The receiver is gone: dropped.
    Closed,
}

/// How many series a frame wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub series: usize,
    pub stale: usize,
}

/// The series of one interval, as `WriteRequest`s of at most `max_series` series.
pub struct Frame {
    /// Added to every series (`cluster`, `job`), unless the series has a label of that name.
    common: Vec<(String, String)>,
    timestamp_ms: i64,
    max_series: usize,
    /// The series written in this pass (the interval's, or the markers').
    seen: HashSetU64,
    /// In the staleness pass: the interval's series, which are not stale.
    interval: Option<HashSetU64>,
    labels: Vec<u8>,
    request: Vec<u8>,
    samples: u32,
    out: Out,
}

impl Frame {
    /// A frame that keeps its requests for [`Frame::finish`].
    pub fn new(common: Vec<(String, String)>, timestamp_ms: i64, max_series: usize) -> Frame {
        Frame {
            common,
            timestamp_ms,
            max_series: max_series.max(1),
            seen: HashSetU64::default(),
            interval: None,
            labels: Vec::new(),
            request: Vec::new(),
            samples: 0,
            out: Out::Collect(Vec::new()),
        }
    }

    /// Sends each full request into `tx` instead (blocking while it is full: call off the
    /// async workers). `expected`: series to size the index for (the previous interval's).
    pub fn sending(mut self, tx: mpsc::Sender<(Bytes, u32)>, expected: usize) -> Frame {
        self.out = Out::Send(tx);
        self.seen.reserve(expected);
        self
    }

    /// Series written in the current pass.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Adds series `name{labels}` with `value`. Labels with an empty value are left out (an
    /// empty label is no label in Prometheus); a repeated series keeps its first value. After
    /// [`Frame::start_stale`]: a staleness marker, if the interval did not write the series.
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
        self.labels.clear();
        for (k, v) in all.iter() {
            put_label(&mut self.labels, k, v);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&self.labels);
        if self.interval.as_ref().is_some_and(|written| written.contains(&hash)) || !self.seen.insert(hash) {
            return;
        }
        let value = if self.interval.is_some() { stale_nan() } else { value };
        put_series(&mut self.request, &self.labels, value, self.timestamp_ms);
        self.samples += 1;
        if self.samples as usize >= self.max_series {
            self.flush();
        }
    }

    /// Ends the interval's series; what is pushed from now on (the previous versions of
    /// changed and deleted objects) gives staleness markers.
    pub fn start_stale(&mut self) {
        if self.interval.is_none() {
            self.interval = Some(std::mem::take(&mut self.seen));
        }
    }

    /// Hands on the last request; returns the requests kept (none when sending) and the
    /// counts.
    pub fn finish(mut self) -> (Vec<(Bytes, u32)>, Written) {
        self.flush();
        let written = match &self.interval {
            Some(interval) => Written { series: interval.len(), stale: self.seen.len() },
            None => Written { series: self.seen.len(), stale: 0 },
        };
        match std::mem::replace(&mut self.out, Out::Closed) {
            Out::Collect(requests) => (requests, written),
            _ => (Vec::new(), written),
        }
    }

    fn flush(&mut self) {
        if self.samples == 0 {
            return;
        }
        // The next request is about as long; this one is queued at its length, not its
        // capacity.
        let next = Vec::with_capacity(self.request.len() + self.request.len() / 8);
        let mut request = std::mem::replace(&mut self.request, next);
        request.shrink_to_fit();
        let request = (Bytes::from(request), self.samples);
        self.samples = 0;
        match &mut self.out {
            Out::Collect(requests) => requests.push(request),
            Out::Send(tx) => {
                if tx.blocking_send(request).is_err() {
                    self.out = Out::Closed;
                }
            }
            Out::Closed => {}
        }
    }
}
