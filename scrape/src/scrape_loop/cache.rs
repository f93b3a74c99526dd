//! The per-target series cache and the staleness bookkeeping.
//!
//! Key: the raw bytes of a series as exposed (`name{labels}`). Value: the label set after
//! target labels and metric relabeling, or "dropped". An unchanged line thus costs one hash of
//! its bytes and one lookup; its labels are parsed and relabeled only the first time.
//! Entries unseen for two successful scrapes are evicted, as in Prometheus.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A series' final labels, encoded for remote write (see [`crate::encode`]), and their
/// fingerprint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CachedSeries {
    pub encoded: Box<[u8]>,
    pub fingerprint: u64,
}

struct Entry {
    /// `None`: metric relabeling dropped the series.
    series: Option<Arc<CachedSeries>>,
    last_seen: u64,
}

/// Hashes a byte key in one xxh3 call (the std `Hash` of `[u8]` writes the length, then the
/// bytes), and passes a `u64` key (already a hash) through.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(17) ^ xxhash_rust::xxh3::xxh3_64(bytes);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// What the cache says about a raw series.
pub(crate) enum Lookup {
    Hit(Option<Arc<CachedSeries>>),
    Miss,
}

#[derive(Default)]
pub(crate) struct SeriesCache {
    entries: FastMap<Box<[u8]>, Entry>,
    /// Series of the last successful scrape without an explicit timestamp: their fingerprints
    /// and labels, to send staleness markers when they disappear.
    previous: FastMap<u64, Arc<CachedSeries>>,
    current: FastMap<u64, Arc<CachedSeries>>,
    iteration: u64,
}

impl SeriesCache {
    /// Starts a scrape.
    pub fn begin(&mut self) {
        self.iteration += 1;
        self.current.clear();
    }

    pub fn lookup(&mut self, raw: &[u8]) -> Lookup {
        match self.entries.get_mut(raw) {
            Some(e) => {
                e.last_seen = self.iteration;
                Lookup::Hit(e.series.clone())
            }
            None => Lookup::Miss,
        }
    }

    pub fn insert(&mut self, raw: &[u8], series: Option<Arc<CachedSeries>>) {
        self.entries.insert(raw.into(), Entry { series, last_seen: self.iteration });
    }

    /// Records a series of this scrape for staleness tracking. `false`: it was already seen in
    /// this scrape (a duplicate line).
    pub fn track(&mut self, series: &Arc<CachedSeries>) -> bool {
        match self.current.entry(series.fingerprint) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(series.clone());
                true
            }
        }
    }

    /// Ends a successful scrape: calls `stale` for each series of the previous scrape that
    /// this one lacks, then makes this scrape the previous one and evicts old entries.
    pub fn commit(&mut self, mut stale: impl FnMut(&CachedSeries)) {
        for (fp, s) in &self.previous {
            if !self.current.contains_key(fp) {
                stale(s);
            }
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
        let oldest = self.iteration.saturating_sub(1);
        self.entries.retain(|_, e| e.last_seen >= oldest);
    }

    /// Ends a failed scrape (or the target's life): every series of the previous scrape goes
    /// stale, and none is tracked any more.
    pub fn fail(&mut self, mut stale: impl FnMut(&CachedSeries)) {
        for s in self.previous.values() {
            stale(s);
        }
        self.previous.clear();
        self.current.clear();
    }
}
