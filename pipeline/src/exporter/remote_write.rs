//! Prometheus remote write 1.0 to Mimir, sent by parallel shards.
//!
//! Each batch from the queue is split by series: a series always goes to shard
//! `hash(labels) % shards`, and a shard sends its sub-batches strictly one after another (a failed
//! one is retried before the next goes out), so the samples of a series arrive in order while the
//! shards send in parallel. A queue record is completed once every shard that got a piece of it is
//! done with that piece; a few batches per shard may be waiting, which keeps every shard busy
//! without letting the exporter run far ahead of the backend.
//!
//! A shard's requests hold at most `batch.max_items` samples and `batch.max_bytes` bytes (as
//! Prometheus's `max_samples_per_send`), however large the scrape a record came from: Mimir's
//! ingestion rate limiter refuses a request larger than its burst forever (429 "ingestion rate
//! limit ... exceeded while adding N samples"), so only the rate, never the size, may be refused.
//! On 429 a shard waits with the retry backoff (doubling up to `retry.max_backoff`, or
//! `Retry-After`) before that request and every later one of the shard: sustained 429 slows the
//! shards down, the queue fills up to its limits, and `when_full` decides what happens then.

use std::sync::Arc;

use bytes::Bytes;
use lgtm_config::ExporterConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::http::{snappy, HttpSender};
use super::outcome::{concatenate, release, Piece, RecordTracker, Reporter};
use super::retry::{Decision, Retrier};
use crate::ack::Delivery;
use crate::queue::{DurableQueue, Record};

const EXPORTER: &str = "mimir";

const PROTOCOL_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

/// Sub-batches that may wait for a shard besides the one it is sending.
const SHARD_BACKLOG: usize = 2;

pub async fn run(cfg: ExporterConfig, tenant: String, queue: DurableQueue, stop: CancellationToken) {
    let Some(sender) = HttpSender::new_until_stopped(EXPORTER, &cfg, &tenant, PROTOCOL_HEADERS, &stop).await else {
        return;
    };
    let sender = Arc::new(sender);
    let retrier = Retrier::new(EXPORTER, &cfg.retry, stop.clone());
    let reporter = Reporter::new(EXPORTER);
    let shard_count = cfg.shards.max(1);
    let limits = Limits {
        max_samples: (cfg.batch.max_items as u64).max(1),
        max_bytes: (cfg.batch.max_bytes.bytes() as usize).max(1),
    };

    let mut shards = Vec::with_capacity(shard_count);
    let mut workers = Vec::with_capacity(shard_count);
    for shard in 0..shard_count {
        let (tx, rx) = mpsc::channel(SHARD_BACKLOG);
        shards.push(tx);
        let worker = send_shard(rx, sender.clone(), retrier.clone(), reporter.clone(), stop.clone());
        workers.push(tokio::spawn(worker.instrument(tracing::info_span!("shard", exporter = EXPORTER, shard))));
    }

    // Records are taken from the queue for all the shards at once: up to the bounds of one
    // request per shard, so that each shard's request fills up to `batch.max_items` (taken up to
    // one request's worth, a scrape of 2,000 series went out as four requests of 500, one per
    // shard, four times the requests Prometheus sends for the same samples).
    let take_bytes = limits.max_bytes.saturating_mul(shard_count);
    let take_items = (limits.max_samples as usize).saturating_mul(shard_count);
    loop {
        let batch = tokio::select! {
            b = queue.next(take_bytes, take_items, cfg.batch.max_wait.get()) => b,
            _ = stop.cancelled() => None,
        };
        let Some(records) = batch else { break };
        if stop.is_cancelled() {
            release(&queue, &records);
            break;
        }
        let pieces = split(&records, shard_count, limits, &queue, &reporter);
        // Round-robin over the shards so that one shard's long list does not hold the others idle.
        let mut pieces: Vec<std::vec::IntoIter<ShardBatch>> = pieces.into_iter().map(Vec::into_iter).collect();
        loop {
            let mut any = false;
            for (shard, list) in pieces.iter_mut().enumerate() {
                let Some(piece) = list.next() else { continue };
                any = true;
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => None,
                    p = shards[shard].reserve() => p.ok(),
                };
                // Without a permit the piece is dropped, which hands its records back to the queue.
                if let Some(permit) = permit {
                    permit.send(piece);
                }
            }
            if !any {
                break;
            }
        }
    }
    // Closing the channels lets each shard finish what it has (or abandon it if stopping).
    drop(shards);
    for w in workers {
        let _ = w.await;
    }
}

/// One shard's sender: sub-batches strictly in the order received.
async fn send_shard(
    mut rx: mpsc::Receiver<ShardBatch>,
    sender: Arc<HttpSender>,
    retrier: Retrier,
    reporter: Reporter,
    stop: CancellationToken,
) {
    while let Some(batch) = rx.recv().await {
        if stop.is_cancelled() {
            // Dropping abandons it: its records go back to the queue.
            continue;
        }
        let body = if batch.compressed { Ok(batch.request.clone()) } else { snappy(&batch.request) };
        let decision = match body {
            Ok(body) => retrier.run(|| sender.post(body.clone())).await,
            Err(message) => Some(Decision::Rejected { reason: "encode".into(), message }),
        };
        match decision {
            None => {}
            Some(Decision::Delivered(())) => {
                reporter.delivered(batch.samples);
                batch.settle(Piece::Accepted);
            }
            Some(Decision::Rejected { reason, message }) => {
                reporter.rejected(batch.samples, &reason, &message);
                batch.settle(Piece::Rejected(message));
            }
        }
    }
}

/// Bounds of one request, `batch.max_items` samples and `batch.max_bytes` encoded bytes (as
/// Prometheus's `max_samples_per_send`): a backend's token bucket (Mimir's ingestion burst) can
/// then refuse a request for the rate only, never for its size. A single series over the bounds
/// goes alone.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_samples: u64,
    max_bytes: usize,
}

/// The request a shard is filling, and the ones it has already cut.
#[derive(Default)]
struct ShardRequests {
    /// `timeseries` entries, to be compressed when sent.
    current: Vec<u8>,
    /// Or compressed parts of routed records ([`routed`]), sent as they are (one) or joined,
    /// and their size decompressed. A request is one or the other.
    blocks: Vec<Bytes>,
    blocks_raw: usize,
    samples: u64,
    records: Vec<Arc<RecordTracker>>,
    cut: Vec<ShardBatch>,
}

impl ShardRequests {
    fn cut(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let (request, compressed) = match self.blocks.len() {
            0 => (Bytes::from(std::mem::take(&mut self.current)), false),
            1 => (self.blocks.pop().expect("one block"), true),
            _ => (Bytes::from(routed::join_blocks(&self.blocks, self.blocks_raw)), true),
        };
        self.blocks.clear();
        self.blocks_raw = 0;
        self.cut.push(ShardBatch {
            request,
            compressed,
            samples: std::mem::take(&mut self.samples),
            records: std::mem::take(&mut self.records),
            settled: false,
        });
    }

    /// Cuts a request first when `samples` and `bytes` (decompressed) more would go over
    /// `limits`, or when the request holds the other kind (`compressed` or not), and counts the
    /// request as a piece of the record `tracker`.
    fn make_room(
        &mut self,
        bytes: usize,
        samples: u64,
        compressed: bool,
        tracker: &Arc<RecordTracker>,
        limits: Limits,
    ) {
        let other_kind = if compressed { !self.current.is_empty() } else { !self.blocks.is_empty() };
        let over = self.samples + samples > limits.max_samples
            || self.current.len() + self.blocks_raw + bytes > limits.max_bytes;
        if (over || other_kind) && !self.records.is_empty() {
            self.cut();
        }
        if !self.records.last().is_some_and(|t| Arc::ptr_eq(t, tracker)) {
            tracker.add_piece();
            self.records.push(tracker.clone());
        }
        self.samples += samples;
    }

    /// Adds one encoded `timeseries` entry of the record `tracker`, cutting a request first when
    /// this one would go over `limits`.
    fn add(&mut self, entry: &[u8], samples: u64, tracker: &Arc<RecordTracker>, limits: Limits) {
        self.make_room(entry.len(), samples, false, tracker, limits);
        self.current.extend_from_slice(entry);
    }

    /// Adds a compressed part of a routed record (entries within `limits`, `raw_len` bytes
    /// decompressed), as [`ShardRequests::add`] adds one entry.
    fn add_block(&mut self, block: Bytes, raw_len: usize, samples: u64, tracker: &Arc<RecordTracker>, limits: Limits) {
        self.make_room(raw_len, samples, true, tracker, limits);
        self.blocks.push(block);
        self.blocks_raw += raw_len;
    }
}

/// Splits a batch of records into requests per shard, each within `limits`, in order.
fn split(
    records: &[Record],
    shards: usize,
    limits: Limits,
    queue: &DurableQueue,
    reporter: &Reporter,
) -> Vec<Vec<ShardBatch>> {
    let total: u64 = records.iter().map(|r| r.items as u64).sum();
    let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    if shards == 1
        && total <= limits.max_samples
        && bytes <= limits.max_bytes
        && !records.iter().any(|r| routed::is_routed(&r.payload))
    {
        // One shard keeps everything in order anyway, and it fits in one request: no need to walk.
        let trackers = records
            .iter()
            .map(|r| {
                let t = Arc::new(RecordTracker::new(r.seq, queue.clone()));
                t.add_piece();
                t
            })
            .collect();
        return vec![vec![ShardBatch {
            request: concatenate(records),
            compressed: false,
            samples: total,
            records: trackers,
            settled: false,
        }]];
    }
    // Series are routed by walking the encoded records: each `TimeSeries` entry is copied as raw
    // bytes into its shard's request, so no label is decoded into a `String` (decoding every
    // series was most of the exporter's CPU at 100k series).
    let mut per_shard: Vec<ShardRequests> = (0..shards).map(|_| ShardRequests::default()).collect();
    let mut series: Vec<(usize, std::ops::Range<usize>, u64)> = Vec::new();
    // A large part of a routed record, decompressed, and its series.
    let (mut raw, mut entries) = (Vec::new(), Vec::new());
    for r in records {
        series.clear();
        let walked = match routed::parse(&r.payload) {
            // Grouped by shard at the source for this shard count: each section goes whole to
            // its shard, without walking (and hashing) its series.
            Ok(Some(parts)) if parts.len() == shards => {
                // Parts larger than a request are decompressed and cut between their series,
                // walked without hashing (the shard is known). All are checked before any piece
                // is handed out, one at a time in one buffer: kept decompressed all at once, they
                // were the exporter's largest allocation at a node's scrape burst (cAdvisor's
                // parts are over a request each). The part checked last is the one added first,
                // so one large part (the usual case) is decompressed once.
                let mut whole = Vec::new();
                let mut large = Vec::new();
                for (shard, part) in parts.into_iter().enumerate() {
                    let samples = u64::from(part.samples);
                    if part.range.is_empty() {
                        continue;
                    }
                    if samples <= limits.max_samples && part.raw_len <= limits.max_bytes {
                        whole.push((shard, part, samples));
                    } else {
                        large.push((shard, part.range));
                    }
                }
                let bad = large
                    .iter()
                    .rev()
                    .find_map(|(shard, range)| walk_part(&r.payload, *shard, range, &mut raw, &mut entries).err());
                if let Some(e) = bad {
                    let message = format!("queued record is not a WriteRequest: {e}");
                    reporter.rejected(r.items as u64, "decode", &message);
                    queue.complete(r.seq, Delivery::Rejected(message));
                    continue;
                }
                if whole.is_empty() && large.is_empty() {
                    queue.complete(r.seq, Delivery::Accepted);
                    continue;
                }
                let tracker = Arc::new(RecordTracker::new(r.seq, queue.clone()));
                for (shard, part, samples) in whole {
                    per_shard[shard].add_block(r.payload.slice(part.range), part.raw_len, samples, &tracker, limits);
                }
                for (i, (shard, range)) in large.iter().enumerate() {
                    if i > 0 {
                        // Checked above: it decompresses and walks as it did then.
                        walk_part(&r.payload, *shard, range, &mut raw, &mut entries)
                            .expect("a part that was checked walks again");
                    }
                    for (shard, range, n) in &entries {
                        per_shard[*shard].add(&raw[range.clone()], *n, &tracker, limits);
                    }
                }
                continue;
            }
            // A plain record, or one grouped for another shard count (the config changed): its
            // series are walked and routed one by one.
            Ok(_) => routed::write_request(&r.payload)
                .and_then(|body| wire::route_series(&body, shards, &mut series).map(|()| body)),
            Err(e) => Err(e),
        };
        let body = match walked {
            Ok(body) => body,
            Err(e) => {
                let message = format!("queued record is not a WriteRequest: {e}");
                reporter.rejected(r.items as u64, "decode", &message);
                queue.complete(r.seq, Delivery::Rejected(message));
                continue;
            }
        };
        if series.is_empty() {
            queue.complete(r.seq, Delivery::Accepted);
            continue;
        }
        let tracker = Arc::new(RecordTracker::new(r.seq, queue.clone()));
        for (shard, range, n) in &series {
            per_shard[*shard].add(&body[range.clone()], *n, &tracker, limits);
        }
    }
    per_shard
        .into_iter()
        .map(|mut s| {
            s.cut();
            s.cut
        })
        .collect()
}

/// Decompresses the routed record part at `range` of `payload` into `raw` and lists its series
/// (all of `shard`) in `entries`, both cleared first.
fn walk_part(
    payload: &[u8],
    shard: usize,
    range: &std::ops::Range<usize>,
    raw: &mut Vec<u8>,
    entries: &mut Vec<(usize, std::ops::Range<usize>, u64)>,
) -> Result<(), wire::WireError> {
    entries.clear();
    routed::decompress_into(payload, range.clone(), raw)?;
    wire::series_entries(raw, shard, 0..raw.len(), entries)
}

/// Queue records whose series the source already grouped by shard and compressed: a header,
/// then the `timeseries` entries of shard 0, of shard 1, and so on, each part compressed on its
/// own (snappy block format, as remote write sends it). The scrape loops write them
/// (`lgtm_scrape`'s batch builder): they hold each series' routing hash from its first scrape
/// on, where the exporter walked and hashed every series of every record (about a tenth of the
/// agent's CPU under `bench scrape`); a shard's part goes out as it is, neither copied nor
/// compressed again; and the queue writes a fifth of the bytes to its segments.
///
/// ```text
/// offset  size   field
///      0     2   0xff 0x03 (0xff cannot start a protobuf message: see the queue's compressed marker)
///      2     1   n: the shard count the series were grouped for (2..=255)
///      3   8*n   per shard: bytes (u32 LE) of its compressed part, then its samples (u32 LE)
///  3+8*n         the parts, shard 0 first
/// ```
///
/// A series goes to shard `xxh3_64(its labels fields as encoded) % n`, the hash
/// [`wire::route_series`] computes, so a record grouped for `n` shards and a plain one put a
/// series on the same shard. Parts of one shard from several records make one request by
/// concatenation: a snappy block is a length and then elements that refer only backwards
/// within their own block's output, so blocks with their lengths replaced by the sum of them
/// decompress to the concatenated parts. An exporter with another shard count (after a config
/// change, or on replay) decompresses the parts and walks them like a plain record. Records
/// written before this format are plain `WriteRequest`s and are read as before.
pub mod routed {
    use std::borrow::Cow;
    use std::ops::Range;

    use super::wire::WireError;

    pub const MARKER: [u8; 2] = [0xff, 0x03];

    /// Most shards a record can be grouped for.
    pub const MAX_SHARDS: usize = 255;

    /// Bytes before the first part of a record grouped for `shards` shards.
    pub fn header_len(shards: usize) -> usize {
        MARKER.len() + 1 + 8 * shards
    }

    /// The shard of a series whose labels fields hash (xxh3-64) to `hash`.
    pub fn shard_of_hash(hash: u64, shards: usize) -> usize {
        (hash % shards as u64) as usize
    }

    /// Appends the header of a record whose compressed parts are `parts` (bytes, samples), in
    /// shard order.
    pub fn put_header(out: &mut Vec<u8>, parts: &[(u32, u32)]) {
        debug_assert!((2..=MAX_SHARDS).contains(&parts.len()));
        out.extend_from_slice(&MARKER);
        out.push(parts.len() as u8);
        for (bytes, samples) in parts {
            out.extend_from_slice(&bytes.to_le_bytes());
            out.extend_from_slice(&samples.to_le_bytes());
        }
    }

    /// Overwrites the bytes of part `i` in a header written by [`put_header`] at the start of
    /// `out` (the compressed size is known once the part is written behind it).
    pub fn set_part_bytes(out: &mut [u8], i: usize, bytes: u32) {
        let at = MARKER.len() + 1 + 8 * i;
        out[at..at + 4].copy_from_slice(&bytes.to_le_bytes());
    }

    pub fn is_routed(payload: &[u8]) -> bool {
        payload.starts_with(&MARKER)
    }

    /// One shard's part of a routed record.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Part {
        /// Byte range of the compressed part in the record.
        pub range: Range<usize>,
        pub samples: u32,
        /// Its size decompressed (what counts against `batch.max_bytes`).
        pub raw_len: usize,
    }

    /// The parts of a routed record, in shard order; `None` for a plain record.
    pub fn parse(payload: &[u8]) -> Result<Option<Vec<Part>>, WireError> {
        if !is_routed(payload) {
            return Ok(None);
        }
        let n = usize::from(*payload.get(2).ok_or(WireError("routed record without a shard count"))?);
        let mut pos = header_len(n);
        if n < 2 || payload.len() < pos {
            return Err(WireError("routed record with a damaged header"));
        }
        let mut parts = Vec::with_capacity(n);
        for i in 0..n {
            let at = MARKER.len() + 1 + 8 * i;
            let field = |o: usize| u32::from_le_bytes(payload[at + o..at + o + 4].try_into().expect("4 bytes"));
            let (bytes, samples) = (field(0) as usize, field(4));
            let end = pos.checked_add(bytes).filter(|e| *e <= payload.len());
            let end = end.ok_or(WireError("routed record part past the end"))?;
            let raw_len = if bytes == 0 {
                0
            } else {
                snap::raw::decompress_len(&payload[pos..end])
                    .map_err(|_| WireError("routed record part is not snappy"))?
            };
            parts.push(Part { range: pos..end, samples, raw_len });
            pos = end;
        }
        if pos != payload.len() {
            return Err(WireError("routed record longer than its parts"));
        }
        Ok(Some(parts))
    }

    /// The part at `range` of `payload`, decompressed.
    pub fn decompress(payload: &[u8], range: Range<usize>) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        decompress_into(payload, range, &mut out)?;
        Ok(out)
    }

    /// The part at `range` of `payload`, decompressed into `out` (cleared first; its capacity is
    /// reused).
    pub fn decompress_into(payload: &[u8], range: Range<usize>, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        if range.is_empty() {
            return Ok(());
        }
        let src = &payload[range];
        let len = snap::raw::decompress_len(src).map_err(|_| WireError("routed record part is not snappy"))?;
        out.resize(len, 0);
        match snap::raw::Decoder::new().decompress(src, out) {
            Ok(n) if n == len => Ok(()),
            _ => {
                out.clear();
                Err(WireError("routed record part does not decompress"))
            }
        }
    }

    /// The `WriteRequest` a record holds: a plain record as it is, the parts of a routed one
    /// decompressed one after the other.
    pub fn write_request(payload: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
        let Some(parts) = parse(payload)? else { return Ok(Cow::Borrowed(payload)) };
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.raw_len).sum());
        for p in parts {
            out.extend_from_slice(&decompress(payload, p.range)?);
        }
        Ok(Cow::Owned(out))
    }

    /// Snappy blocks joined into one that decompresses to their contents one after the other
    /// (see the module's comment); `raw_len`: the sum of their decompressed sizes.
    pub fn join_blocks(blocks: &[bytes::Bytes], raw_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + blocks.iter().map(|b| b.len()).sum::<usize>());
        let mut n = raw_len as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        for b in blocks {
            // Each block starts with its length as a varint: skipped.
            let header = b.iter().position(|byte| byte & 0x80 == 0).map_or(b.len(), |i| i + 1);
            out.extend_from_slice(&b[header..]);
        }
        out
    }
}

/// A minimal walker over the protobuf encoding of `WriteRequest`, written by hand because prost
/// only decodes into owned messages and the point here is not to. Public for its bench
/// (`benches/remote_write.rs`).
pub mod wire {
    use xxhash_rust::xxh3::Xxh3;

    #[derive(Debug)]
    pub struct WireError(pub(super) &'static str);

    impl std::fmt::Display for WireError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos).ok_or(WireError("truncated varint"))?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError("varint too long"))
    }

    /// Reads one field's tag and returns (field number, wire type).
    fn tag(buf: &[u8], pos: &mut usize) -> Result<(u64, u8), WireError> {
        let t = varint(buf, pos)?;
        Ok((t >> 3, (t & 7) as u8))
    }

    /// The byte range of a length-delimited payload starting at `pos`.
    fn len_delimited(buf: &[u8], pos: &mut usize) -> Result<std::ops::Range<usize>, WireError> {
        let len = varint(buf, pos)? as usize;
        let start = *pos;
        let end = start.checked_add(len).filter(|e| *e <= buf.len()).ok_or(WireError("length past the end"))?;
        *pos = end;
        Ok(start..end)
    }

    fn skip(buf: &[u8], pos: &mut usize, wire_type: u8) -> Result<(), WireError> {
        match wire_type {
            0 => varint(buf, pos).map(|_| ()),
            1 => advance(buf, pos, 8),
            2 => len_delimited(buf, pos).map(|_| ()),
            5 => advance(buf, pos, 4),
            _ => Err(WireError("unsupported wire type")),
        }
    }

    fn advance(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), WireError> {
        *pos = pos.checked_add(n).filter(|e| *e <= buf.len()).ok_or(WireError("truncated field"))?;
        Ok(())
    }

    /// For every `timeseries` entry of an encoded `WriteRequest`: its shard (the same hash of
    /// label names and values as `shard_of`), the byte range of the whole entry (tag included, so
    /// concatenated entries form a valid `WriteRequest`) and its number of samples.
    pub fn route_series(
        buf: &[u8],
        shards: usize,
        out: &mut Vec<(usize, std::ops::Range<usize>, u64)>,
    ) -> Result<(), WireError> {
        each_series(buf, |entry, series| {
            let (hash, samples) = hash_series(series)?;
            out.push(((hash % shards as u64) as usize, entry, samples));
            Ok(())
        })
    }

    /// Calls `f` with the byte range of every `timeseries` entry of an encoded `WriteRequest`
    /// (tag included) and the encoded `TimeSeries` it holds. Metadata (field 3) and unknown
    /// fields are skipped: they are not forwarded.
    fn each_series(
        buf: &[u8],
        mut f: impl FnMut(std::ops::Range<usize>, &[u8]) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let mut pos = 0;
        while pos < buf.len() {
            let entry_start = pos;
            let (field, wt) = tag(buf, &mut pos)?;
            if field != 1 || wt != 2 {
                skip(buf, &mut pos, wt)?;
                continue;
            }
            let series = len_delimited(buf, &mut pos)?;
            f(entry_start..pos, &buf[series])?;
        }
        Ok(())
    }

    /// Every `timeseries` entry in `range` of `buf` as `(shard, byte range in buf, samples)`,
    /// without hashing (the caller knows the shard); other fields are skipped as in
    /// [`route_series`].
    pub fn series_entries(
        buf: &[u8],
        shard: usize,
        range: std::ops::Range<usize>,
        out: &mut Vec<(usize, std::ops::Range<usize>, u64)>,
    ) -> Result<(), WireError> {
        let part = buf.get(range.clone()).ok_or(WireError("range past the end"))?;
        each_series(part, |entry, series| {
            out.push((shard, range.start + entry.start..range.start + entry.end, count_samples(series)?));
            Ok(())
        })
    }

    fn count_samples(ts: &[u8]) -> Result<u64, WireError> {
        let (mut pos, mut samples) = (0, 0);
        while pos < ts.len() {
            let (field, wt) = tag(ts, &mut pos)?;
            if (field, wt) == (2, 2) {
                samples += 1;
            }
            skip(ts, &mut pos, wt)?;
        }
        Ok(samples)
    }

    /// The routing hash of one encoded `TimeSeries` (xxh3 of its `labels` fields as encoded,
    /// in order: tag, length, name and value of each) and its number of samples. The fields are
    /// hashed as bytes in one call when they are contiguous, as every encoder of the agent
    /// writes them (labels first, sorted, then the samples): hashing name and value of each
    /// label apart was four streaming updates per label, most of this walk's cost. The same
    /// series encodes to the same bytes in every record, so it keeps its shard. Label messages
    /// are not opened: queued records come from the agent's own encoders.
    fn hash_series(ts: &[u8]) -> Result<(u64, u64), WireError> {
        let mut samples = 0u64;
        let mut pos = 0;
        // The current run of contiguous label fields, and the hasher of earlier runs (only
        // when something else came between labels).
        let mut run = 0..0;
        let mut earlier: Option<Xxh3> = None;
        while pos < ts.len() {
            let field_start = pos;
            let (field, wt) = tag(ts, &mut pos)?;
            match (field, wt) {
                (1, 2) => {
                    len_delimited(ts, &mut pos)?;
                    if run.end != field_start || run.is_empty() {
                        if !run.is_empty() {
                            earlier.get_or_insert_with(Xxh3::new).update(&ts[run.clone()]);
                        }
                        run.start = field_start;
                    }
                    run.end = pos;
                }
                (2, 2) => {
                    len_delimited(ts, &mut pos)?;
                    samples += 1;
                }
                _ => skip(ts, &mut pos, wt)?,
            }
        }
        let hash = match earlier {
            None => xxhash_rust::xxh3::xxh3_64(&ts[run]),
            Some(mut h) => {
                h.update(&ts[run]);
                h.digest()
            }
        };
        Ok((hash, samples))
    }
}

/// The shard of a series: a hash of its (sorted) labels as encoded; `wire::route_series`
/// computes the same on encoded bytes.
#[cfg(test)]
fn shard_of(labels: &[crate::proto::Label], shards: usize) -> usize {
    let mut encoded = Vec::new();
    for l in labels {
        prost::encoding::message::encode(1, l, &mut encoded);
    }
    (xxhash_rust::xxh3::xxh3_64(&encoded) % shards as u64) as usize
}

/// One shard's request: an encoded (uncompressed) `WriteRequest` and the records it has pieces of.
/// Dropped without being settled, it abandons those pieces.
struct ShardBatch {
    request: Bytes,
    /// `request` is already snappy-compressed (parts of routed records).
    compressed: bool,
    samples: u64,
    records: Vec<Arc<RecordTracker>>,
    settled: bool,
}

impl ShardBatch {
    fn settle(mut self, piece: Piece) {
        self.settled = true;
        for r in &self.records {
            r.piece_done(piece.clone());
        }
    }
}

impl Drop for ShardBatch {
    fn drop(&mut self) {
        if !self.settled {
            for r in &self.records {
                r.piece_done(Piece::Abandoned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use prost::Message;

    use super::*;
    use crate::exporter::testing::{fast_config, memory_queue, push_and_run, Capture, Reply};
    use crate::metrics;
    use crate::proto::Sample;
    use crate::proto::{Label, TimeSeries, WriteRequest};
    use crate::Ack;

    fn series(name: &str, instance: usize, samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: vec![Label::new("__name__", name), Label::new("instance", format!("host-{instance}"))],
            samples: samples.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
        }
    }

    fn write_request(series: Vec<TimeSeries>) -> Vec<u8> {
        WriteRequest { timeseries: series }.encode_to_vec()
    }

    fn decode(body: &[u8]) -> WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).expect("snappy block format");
        WriteRequest::decode(raw.as_slice()).expect("WriteRequest")
    }

    fn delivered_series(capture: &Capture) -> Vec<TimeSeries> {
        capture.requests().iter().filter(|r| r.status == 200).flat_map(|r| decode(&r.body).timeseries).collect()
    }

    #[tokio::test]
    async fn request_has_remote_write_headers_and_snappy_body() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 3;
        cfg.headers.insert("X-Extra".into(), "1".into());
        let sent = vec![series("up", 1, &[(1000, 1.0)]), series("up", 2, &[(1000, 0.0)])];
        let records = vec![write_request(sent[..1].to_vec()), write_request(sent[1..].to_vec())];
        let acks = push_and_run(run, cfg, "tenant-a", records, 1).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");

        for r in capture.requests() {
            assert_eq!(r.path, "/api/v1/push");
            assert_eq!(r.header("content-encoding"), Some("snappy"));
            assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
            assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
            assert_eq!(r.header("x-scope-orgid"), Some("tenant-a"));
            assert_eq!(r.header("x-extra"), Some("1"));
            assert_eq!(r.header("user-agent"), Some(super::super::http::USER_AGENT));
            assert_eq!(r.header("authorization"), None);
        }
        let mut got = delivered_series(&capture);
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn server_error_is_retried_and_delivered_once() {
        let capture = Capture::start(vec![(500, "overloaded").into(), (503, "again").into()]).await;
        let cfg = fast_config(&capture.url("/api/v1/push"));
        let retries_before = metrics::pipeline().retries.with_label_values(&[EXPORTER]).get();
        let acks = push_and_run(run, cfg, "t", vec![write_request(vec![series("up", 1, &[(1, 1.0)])])], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let statuses: Vec<u16> = capture.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![500, 503, 200]);
        assert_eq!(delivered_series(&capture).len(), 1);
        assert!(metrics::pipeline().retries.with_label_values(&[EXPORTER]).get() >= retries_before + 2);
    }

    #[tokio::test]
    async fn too_many_requests_waits_for_retry_after() {
        let capture = Capture::start(vec![Reply { status: 429, body: "slow down", retry_after: Some(1) }]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.retry.max_backoff = lgtm_config::Duration::from_secs(5);
        let acks = push_and_run(run, cfg, "t", vec![write_request(vec![series("up", 1, &[(1, 1.0)])])], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let reqs = capture.requests();
        assert_eq!(reqs.len(), 2);
        let waited = reqs[1].at - reqs[0].at;
        assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");
    }

    #[tokio::test]
    async fn bad_request_is_rejected_counted_and_not_retried() {
        let capture = Capture::start(vec![(400, "out of order sample").into()]).await;
        let cfg = fast_config(&capture.url("/api/v1/push"));
        let m = metrics::pipeline();
        let failed_before = m.failed.with_label_values(&[EXPORTER, "http_400"]).get();
        let dropped_before = m.dropped.with_label_values(&[EXPORTER, "rejected"]).get();
        let acks =
            push_and_run(run, cfg, "t", vec![write_request(vec![series("up", 1, &[(1, 1.0), (2, 1.0)])])], 2).await;
        match &acks[0] {
            Some(Delivery::Rejected(msg)) => assert!(msg.contains("400") && msg.contains("out of order"), "{msg}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(capture.requests().len(), 1);
        assert!(m.failed.with_label_values(&[EXPORTER, "http_400"]).get() >= failed_before + 2);
        assert!(m.dropped.with_label_values(&[EXPORTER, "rejected"]).get() >= dropped_before + 2);
    }

    #[tokio::test]
    async fn shards_keep_each_series_in_order_across_retries() {
        // Every fourth request fails, so shards retry while others move on.
        let replies: Vec<Reply> = (0..400).map(|i| if i % 4 == 1 { (503, "busy") } else { (200, "") }.into()).collect();
        let capture = Capture::start(replies).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 4;
        cfg.batch.max_items = 60;
        let (series_count, rounds) = (30usize, 40i64);
        let records: Vec<Vec<u8>> = (0..rounds)
            .map(|round| write_request((0..series_count).map(|s| series("m", s, &[(round, round as f64)])).collect()))
            .collect();
        let acks = push_and_run(run, cfg, "t", records, series_count as u32).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)));

        let mut per_series: BTreeMap<Vec<Label>, Vec<i64>> = BTreeMap::new();
        for ts in delivered_series(&capture) {
            per_series.entry(ts.labels).or_default().extend(ts.samples.iter().map(|s| s.timestamp));
        }
        assert_eq!(per_series.len(), series_count);
        for (labels, timestamps) in per_series {
            assert_eq!(timestamps, (0..rounds).collect::<Vec<_>>(), "series {labels:?}");
        }
        let shards_used: BTreeSet<usize> =
            (0..series_count).map(|s| shard_of(&series("m", s, &[]).labels, 4)).collect();
        assert!(shards_used.len() > 1);
    }

    #[tokio::test]
    async fn stop_during_endless_retries_hands_records_back() {
        let replies: Vec<Reply> = (0..10_000).map(|_| (503, "down").into()).collect();
        let capture = Capture::start(replies).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 2;
        let queue = memory_queue("mimir-stop");
        let (tx, mut ack) = Ack::pair();
        let payload = write_request((0..10).map(|s| series("m", s, &[(1, 1.0)])).collect());
        queue.push(payload.into(), 10, Some(tx)).await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(cfg, "t".into(), queue.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(capture.requests().len() > 2, "retrying");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops promptly").unwrap();
        assert_eq!(ack.try_outcome(), None, "not resolved: still queued");
        assert_eq!(queue.stats().records, 1);
        // Handed back: the next reader gets it again.
        let again = queue.next(1 << 20, 1000, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1);
    }

    #[tokio::test]
    async fn a_large_scrape_is_sent_in_requests_of_at_most_max_items() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 2;
        cfg.batch.max_items = 500;
        let big = write_request((0..3_000).map(|s| series("m", s, &[(1, 1.0)])).collect());
        let small = write_request(vec![series("up", 1, &[(1, 1.0)])]);
        let acks = push_and_run(run, cfg, "t", vec![big, small], 3_001).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted), Some(Delivery::Accepted)]);
        let sizes: Vec<usize> = capture.requests().iter().map(|r| decode(&r.body).timeseries.len()).collect();
        assert!(sizes.iter().all(|n| *n <= 500), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 3_001);
        assert!(sizes.len() >= 6, "{sizes:?}");

        // One shard: split too (before, one shard sent the records whole).
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 1;
        cfg.batch.max_items = 1_000;
        let big = write_request((0..2_500).map(|s| series("m", s, &[(1, 1.0)])).collect());
        let acks = push_and_run(run, cfg, "t", vec![big], 2_500).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let sizes: Vec<usize> = capture.requests().iter().map(|r| decode(&r.body).timeseries.len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
    }

    #[tokio::test]
    async fn a_record_split_over_requests_is_rejected_if_one_of_them_is() {
        let capture = Capture::start(vec![(200, "").into(), (400, "out of order sample").into()]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 1;
        cfg.batch.max_items = 10;
        let big = write_request((0..20).map(|s| series("m", s, &[(1, 1.0)])).collect());
        let acks = push_and_run(run, cfg, "t", vec![big], 20).await;
        assert!(matches!(&acks[0], Some(Delivery::Rejected(m)) if m.contains("out of order")), "{acks:?}");
        assert_eq!(capture.requests().len(), 2);
    }

    #[test]
    fn routing_on_encoded_bytes_matches_decoded_labels_and_keeps_every_series() {
        let input: Vec<TimeSeries> =
            (0..200).map(|i| series(&format!("m{}", i % 7), i, &[(i as i64, i as f64), (i as i64 + 1, 1.0)])).collect();
        let buf = write_request(input.clone());
        let mut routed = Vec::new();
        wire::route_series(&buf, 4, &mut routed).expect("valid request");
        assert_eq!(routed.len(), 200);
        let mut per_shard: Vec<Vec<u8>> = vec![Vec::new(); 4];
        for (i, (shard, range, samples)) in routed.iter().enumerate() {
            assert_eq!(*shard, shard_of(&input[i].labels, 4), "series {i}");
            assert_eq!(*samples, 2);
            per_shard[*shard].extend_from_slice(&buf[range.clone()]);
        }
        let mut back: Vec<TimeSeries> = per_shard
            .iter()
            .flat_map(|b| WriteRequest::decode(b.as_slice()).expect("shard request decodes").timeseries)
            .collect();
        let mut expected = input;
        let key = |t: &TimeSeries| t.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect::<Vec<_>>();
        back.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(back, expected);
        assert!(wire::route_series(&buf[..buf.len() - 3], 4, &mut routed).is_err(), "a truncated record is an error");
    }

    /// The routing hash covers the label fields as encoded, also when a writer put a sample
    /// between them: the same labels go to the same shard however the fields are laid out.
    #[test]
    fn routing_hashes_labels_split_by_a_sample_as_if_contiguous() {
        for i in 0..50 {
            let ts = series(&format!("m{i}"), i, &[(7, 1.5)]);
            let labels: Vec<u8> = ts
                .labels
                .iter()
                .flat_map(|l| {
                    let mut b = Vec::new();
                    prost::encoding::message::encode(1, l, &mut b);
                    b
                })
                .collect();
            let mut sample = Vec::new();
            prost::encoding::message::encode(2, &ts.samples[0], &mut sample);
            // The first label, the sample, then the other labels.
            let first = 2 + usize::from(labels[1]);
            let mut body = labels[..first].to_vec();
            body.extend_from_slice(&sample);
            body.extend_from_slice(&labels[first..]);
            let mut buf = vec![0x0a];
            prost::encoding::encode_varint(body.len() as u64, &mut buf);
            buf.extend_from_slice(&body);
            let mut routed = Vec::new();
            wire::route_series(&buf, 4, &mut routed).expect("valid request");
            assert_eq!(routed, [(shard_of(&ts.labels, 4), 0..buf.len(), 1)], "series {i}");
            let decoded = WriteRequest::decode(buf.as_slice()).expect("decodes");
            assert_eq!(decoded.timeseries[0].labels, ts.labels);
        }
    }
    /// `plain` grouped for `shards` shards as a source writes it ([`routed`]).
    fn routed_record(plain: &[u8], shards: usize) -> Vec<u8> {
        let mut walked = Vec::new();
        wire::route_series(plain, shards, &mut walked).expect("valid request");
        let mut parts = vec![(Vec::new(), 0u32); shards];
        for (shard, range, n) in walked {
            parts[shard].0.extend_from_slice(&plain[range]);
            parts[shard].1 += n as u32;
        }
        let compressed: Vec<Vec<u8>> = parts
            .iter()
            .map(|(b, _)| if b.is_empty() { Vec::new() } else { snap::raw::Encoder::new().compress_vec(b).unwrap() })
            .collect();
        let mut out = Vec::new();
        let sizes: Vec<(u32, u32)> = compressed.iter().zip(&parts).map(|(c, (_, n))| (c.len() as u32, *n)).collect();
        routed::put_header(&mut out, &sizes);
        for c in &compressed {
            out.extend_from_slice(c);
        }
        out
    }

    /// Snappy blocks joined decompress to the concatenation of their contents, also blocks
    /// whose lengths take several varint bytes and blocks full of back-references.
    #[test]
    fn joined_snappy_blocks_decompress_to_the_concatenation() {
        let inputs: Vec<Vec<u8>> = vec![
            b"abcabcabcabcabcabc".repeat(1000),
            (0..70_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect(),
            b"x".to_vec(),
            b"the same labels again and again, ".repeat(3000),
        ];
        let blocks: Vec<Bytes> =
            inputs.iter().map(|i| Bytes::from(snap::raw::Encoder::new().compress_vec(i).unwrap())).collect();
        let raw_len = inputs.iter().map(Vec::len).sum();
        let joined = routed::join_blocks(&blocks, raw_len);
        let back = snap::raw::Decoder::new().decompress_vec(&joined).expect("a valid snappy block");
        assert_eq!(back, inputs.concat());
    }

    /// Records grouped by shard at the source go out part by part: each request holds only
    /// series of one shard, every series arrives once and in order across retries, as with
    /// plain records; a record grouped for another shard count is routed series by series.
    #[tokio::test]
    async fn routed_records_deliver_each_series_once_in_order_on_its_shard() {
        for (grouped_for, shards) in [(4, 4), (4, 3), (2, 1)] {
            let replies: Vec<Reply> =
                (0..400).map(|i| if i % 5 == 2 { (503, "busy") } else { (200, "") }.into()).collect();
            let capture = Capture::start(replies).await;
            let mut cfg = fast_config(&capture.url("/api/v1/push"));
            cfg.shards = shards;
            let (series_count, rounds) = (30usize, 20i64);
            let records: Vec<Vec<u8>> = (0..rounds)
                .map(|round| {
                    let plain =
                        write_request((0..series_count).map(|s| series("m", s, &[(round, round as f64)])).collect());
                    routed_record(&plain, grouped_for)
                })
                .collect();
            let acks = push_and_run(run, cfg, "t", records, series_count as u32).await;
            assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
            let mut per_series: BTreeMap<Vec<Label>, Vec<i64>> = BTreeMap::new();
            for r in capture.requests().iter().filter(|r| r.status == 200) {
                let request = decode(&r.body).timeseries;
                let request_shards: BTreeSet<usize> = request.iter().map(|t| shard_of(&t.labels, shards)).collect();
                assert_eq!(request_shards.len(), 1, "one shard's series per request ({grouped_for} -> {shards})");
                for ts in request {
                    per_series.entry(ts.labels).or_default().extend(ts.samples.iter().map(|s| s.timestamp));
                }
            }
            assert_eq!(per_series.len(), series_count);
            for (labels, timestamps) in per_series {
                assert_eq!(
                    timestamps,
                    (0..rounds).collect::<Vec<_>>(),
                    "series {labels:?} ({grouped_for} -> {shards})"
                );
            }
        }
    }

    /// A shard's part larger than a request is cut between series within `max_items`; a
    /// routed record whose header does not match its length is rejected as undecodable, and
    /// the records around it are delivered.
    #[tokio::test]
    async fn a_large_routed_part_is_cut_and_a_damaged_one_rejected() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 2;
        cfg.batch.max_items = 100;
        let big = routed_record(&write_request((0..1_000).map(|s| series("m", s, &[(1, 1.0)])).collect()), 2);
        let mut damaged = routed_record(&write_request((0..10).map(|s| series("d", s, &[(1, 1.0)])).collect()), 2);
        damaged.truncate(damaged.len() - 1);
        // Both parts over a request; the first one's snappy length is off by one, so it does
        // not decompress (its header still parses): the second part, checked first, is not
        // sent either.
        let mut half = routed_record(&write_request((0..500).map(|s| series("h", s, &[(1, 1.0)])).collect()), 2);
        let first = routed::header_len(2);
        half[first] = if half[first] & 0x7f < 0x7f { half[first] + 1 } else { half[first] - 1 };
        let small = routed_record(&write_request(vec![series("up", 1, &[(1, 1.0)])]), 2);
        let acks = push_and_run(run, cfg, "t", vec![big, damaged, half, small], 1_000).await;
        assert_eq!(acks[0], Some(Delivery::Accepted));
        assert!(matches!(&acks[1], Some(Delivery::Rejected(m)) if m.contains("not a WriteRequest")), "{acks:?}");
        assert!(matches!(&acks[2], Some(Delivery::Rejected(m)) if m.contains("does not decompress")), "{acks:?}");
        assert_eq!(acks[3], Some(Delivery::Accepted));
        let sizes: Vec<usize> = capture.requests().iter().map(|r| decode(&r.body).timeseries.len()).collect();
        assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 1_001);
    }
    /// The exporter takes records for every shard at once: each shard's request fills up to
    /// `max_items` from several records, instead of one request per shard per record.
    #[tokio::test]
    async fn each_shard_fills_its_request_from_several_records() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/api/v1/push"));
        cfg.shards = 4;
        cfg.batch.max_items = 100;
        cfg.batch.max_wait = lgtm_config::Duration::from_millis(300);
        // 8 records of 30 series (all queued before the exporter starts): 240 samples, about 60 per shard.
        let records: Vec<Vec<u8>> =
            (0..8i64).map(|round| write_request((0..30).map(|s| series("m", s, &[(round, 1.0)])).collect())).collect();
        let acks = push_and_run(run, cfg, "t", records, 30).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
        let sizes: Vec<usize> = capture.requests().iter().map(|r| decode(&r.body).timeseries.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 240);
        assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
        // Taken one request's worth at a time (3 records), it was 12 requests.
        assert!(sizes.len() <= 4, "{sizes:?}");
    }
}
