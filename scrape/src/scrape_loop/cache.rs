//! The per-target series cache and the staleness bookkeeping.
//!
//! Key: a 128-bit xxh3 digest of the raw bytes of a series as exposed (`name{labels}`). Value:
//! the label set after target labels and metric relabeling, or "dropped". An unchanged line
//! thus costs one hash of its bytes and one lookup; its labels are parsed and relabeled only
//! the first time. Entries unseen for two successful scrapes are evicted, as in Prometheus.
//!
//! Memory is what this cache is about (it holds every active series of the target), so:
//! - the key is the digest, not the raw bytes (Prometheus keeps the string): the final labels
//!   are the only copy of a series' text. Two different lines with the same digest would share
//!   labels; with 128 bits and a few thousand lines per target that chance is below 1e-30.
//! - a series' labels and fingerprint are one allocation ([`CachedSeries`]);
//! - staleness needs the series of the previous scrape (a list) and a set of the fingerprints of
//!   this one, not two maps of series.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A series' final labels, encoded for remote write (see [`crate::encode`]), and their
/// fingerprint, in one shared allocation: the fingerprint's 8 bytes, then the labels.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CachedSeries(Arc<[u8]>);

impl CachedSeries {
    pub fn new(fingerprint: u64, encoded: &[u8]) -> CachedSeries {
        let mut bytes = Vec::with_capacity(8 + encoded.len());
        bytes.extend_from_slice(&fingerprint.to_le_bytes());
        bytes.extend_from_slice(encoded);
        CachedSeries(bytes.into())
    }

    /// The xxh3 of the final labels as encoded ([`crate::encode::label_hash`]): the series'
    /// identity as sent (staleness, duplicates) and its remote-write routing hash.
    pub fn fingerprint(&self) -> u64 {
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(fp)
    }

    /// The `labels` fields of the series' `TimeSeries`.
    pub fn encoded(&self) -> &[u8] {
        &self.0[8..]
    }
}

impl std::fmt::Debug for CachedSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedSeries({:016x}, {} bytes)", self.fingerprint(), self.encoded().len())
    }
}

struct Entry {
    /// `None`: metric relabeling dropped the series.
    series: Option<CachedSeries>,
    last_seen: u64,
}

/// Hashes a byte key in one xxh3 call (the std `Hash` of `[u8]` writes the length, then the
/// bytes), and passes a `u64` or `u128` key (already a hash) through.
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
type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

/// The digest a raw series is cached under: xxh3-128 as two words (an array of `u64` keeps the
/// map's buckets 8-byte aligned, where `u128` would pad them to 16). It hashes as its first
/// word, already a hash: the `Hash` of an array would write its length and then its 16 bytes,
/// one more xxh3 per lookup.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RawKey([u64; 2]);

impl std::hash::Hash for RawKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

fn raw_key(raw: &[u8]) -> RawKey {
    let h = xxhash_rust::xxh3::xxh3_128(raw);
    RawKey([h as u64, (h >> 64) as u64])
}

/// Marks a fingerprint of a series seen with its own timestamp in `current_fingerprints` (a
/// 64-bit fingerprint meeting another's marked form is as unlikely as any collision).
const TIMESTAMPED: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the cache says about a raw series.
pub(crate) enum Lookup {
    Hit(Option<CachedSeries>),
    Miss,
}

#[derive(Default)]
pub(crate) struct SeriesCache {
    entries: FastMap<RawKey, Entry>,
    /// Series of the last successful scrape without an explicit timestamp, to send staleness
    /// markers when they disappear.
    previous: Vec<CachedSeries>,
    /// This scrape's series, and their fingerprints (a series relabeled from two lines is one).
    current: Vec<CachedSeries>,
    /// Also holds, as `fingerprint ^ TIMESTAMPED`, this scrape's series that came with their
    /// own timestamps (not tracked for staleness): one set keeps the scrape loop's future small.
    current_fingerprints: FastSet<u64>,
    iteration: u64,
    /// Whether `current_fingerprints` holds a timestamped series: without one, tracking a
    /// series is one probe of the set instead of two.
    timestamped: bool,
}

impl SeriesCache {
    /// Starts a scrape.
    pub fn begin(&mut self) {
        self.iteration += 1;
        self.current.clear();
        self.current_fingerprints.clear();
        self.timestamped = false;
    }

    pub fn lookup(&mut self, raw: &[u8]) -> Lookup {
        match self.entries.get_mut(&raw_key(raw)) {
            Some(e) => {
                e.last_seen = self.iteration;
                Lookup::Hit(e.series.clone())
            }
            None => Lookup::Miss,
        }
    }

    pub fn insert(&mut self, raw: &[u8], series: Option<CachedSeries>) {
        self.entries.insert(raw_key(raw), Entry { series, last_seen: self.iteration });
    }

    /// Records a series of this scrape for staleness tracking. `false`: it was already seen in
    /// this scrape (a duplicate line), with or without a timestamp of its own (Prometheus 3
    /// refuses a sample without one after any sample of the series in the same scrape).
    /// Returns the series as kept (moved, not cloned: a clone is an atomic increment and, once
    /// the scrape is over, a decrement, per sample), or `None` for a duplicate.
    pub fn track(&mut self, series: CachedSeries) -> Option<&CachedSeries> {
        let fp = series.fingerprint();
        if (self.timestamped && self.current_fingerprints.contains(&(fp ^ TIMESTAMPED)))
            || !self.current_fingerprints.insert(fp)
        {
            return None;
        }
        self.current.push(series);
        self.current.last()
    }

    /// Records a series of this scrape that has its own timestamp: not tracked for staleness,
    /// but a later sample of it without a timestamp is a duplicate.
    pub fn seen_with_timestamp(&mut self, series: &CachedSeries) {
        self.current_fingerprints.insert(series.fingerprint() ^ TIMESTAMPED);
        self.timestamped = true;
    }

    /// Ends a successful scrape: calls `stale` for each series of the previous scrape that
    /// this one lacks, then makes this scrape the previous one and evicts old entries.
    pub fn commit(&mut self, stale: impl FnMut(&CachedSeries)) {
        self.abandon(stale);
        let oldest = self.iteration.saturating_sub(1);
        self.entries.retain(|_, e| e.last_seen >= oldest);
    }

    /// Ends a scrape whose body failed part way (a parse error, a limit), as Prometheus does:
    /// the series read before the failure count as seen (their samples are not sent), so only
    /// the last scrape's series not read before it go stale, and those read become the last
    /// scrape's series. The cache keeps its entries.
    pub fn abandon(&mut self, mut stale: impl FnMut(&CachedSeries)) {
        for s in &self.previous {
            if !self.current_fingerprints.contains(&s.fingerprint()) {
                stale(s);
            }
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
        self.current_fingerprints.clear();
        self.timestamped = false;
    }

    /// Ends a failed scrape (or the target's life): every series of the previous scrape goes
    /// stale, and none is tracked any more.
    pub fn fail(&mut self, mut stale: impl FnMut(&CachedSeries)) {
        for s in &self.previous {
            stale(s);
        }
        self.previous.clear();
        self.current.clear();
        self.current_fingerprints.clear();
        self.timestamped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(fp: u64, labels: &[u8]) -> CachedSeries {
        CachedSeries::new(fp, labels)
    }

    #[test]
    fn cached_series_keeps_fingerprint_and_labels_in_one_allocation() {
        let s = series(0x0123_4567_89ab_cdef, b"\x0a\x03abc");
        assert_eq!(s.fingerprint(), 0x0123_4567_89ab_cdef);
        assert_eq!(s.encoded(), b"\x0a\x03abc");
    }

    #[test]
    fn series_missing_from_a_scrape_go_stale_once_and_duplicates_are_refused() {
        let (a, b) = (series(1, b"a"), series(2, b"b"));
        let mut cache = SeriesCache::default();
        cache.begin();
        assert!(matches!(cache.lookup(b"a{}"), Lookup::Miss));
        cache.insert(b"a{}", Some(a.clone()));
        cache.insert(b"b{}", Some(b.clone()));
        assert!(cache.track(a.clone()).is_some() && cache.track(b.clone()).is_some());
        assert!(cache.track(series(1, b"a")).is_none(), "same fingerprint twice in one scrape");
        cache.commit(|_| panic!("nothing was there before"));

        cache.begin();
        assert!(matches!(cache.lookup(b"a{}"), Lookup::Hit(Some(s)) if s == a));
        assert!(cache.track(a.clone()).is_some());
        let mut stale = Vec::new();
        cache.commit(|s| stale.push(s.fingerprint()));
        assert_eq!(stale, [2]);

        cache.begin();
        cache.commit(|s| stale.push(s.fingerprint()));
        assert_eq!(stale, [2, 1]);
        // Unseen for two scrapes: evicted.
        cache.begin();
        assert!(matches!(cache.lookup(b"b{}"), Lookup::Miss));
    }

    #[test]
    fn a_failed_scrape_makes_every_series_of_the_last_one_stale() {
        let mut cache = SeriesCache::default();
        cache.begin();
        for (fp, raw) in [(1, b"x"), (2, b"y")] {
            let s = series(fp, raw);
            cache.insert(raw, Some(s.clone()));
            cache.track(s);
        }
        cache.commit(|_| {});
        cache.begin();
        let mut stale = Vec::new();
        cache.fail(|s| stale.push(s.fingerprint()));
        stale.sort();
        assert_eq!(stale, [1, 2]);
        cache.fail(|_| panic!("already stale"));
    }
}
