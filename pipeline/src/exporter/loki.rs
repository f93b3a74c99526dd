//! Loki push: each batch of queued `PushRequest`s is sent as one snappy-compressed protobuf POST
//! to `/loki/api/v1/push`. Up to `shards` requests are in flight at once, never two with a stream
//! in common, so the entries of each stream arrive in order ([`Flight`]).
//!
//! The common case sends the queued records' bytes as they are. Loki's limits make it take a
//! request apart ([`loki_wire`]) in these cases, so that one refused request never stops a node:
//!
//! - **structured metadata refused** (400 "... includes structured metadata, but this feature is
//!   disallowed", Loki 2.9 by default, 3.x on an old schema): the request is sent again without
//!   it, and so is every later one of this exporter (its tenant); logged once, counted in
//!   `lgtm_agent_loki_structured_metadata_dropped_total` (entries sent without it).
//!   `exporters.loki.structured_metadata: false` never sends it.
//! - **413**: the request is cut in halves, by streams then by entries, down to a single entry,
//!   which alone is dropped and counted (`reason="http_413"`), with Loki's message logged.
//! - **stream limit** (429 "Maximum active stream limit exceeded when trying to create stream
//!   {...}"): the limit refuses only new streams, and Loki stored the others of the request. The
//!   streams this exporter delivered before are taken as stored; the new ones are held back,
//!   each retried on its own with backoff (later entries of them join them), while the rest
//!   flows. After `stream_limit_hold_back` a held stream is dropped and counted
//!   (`reason="stream_limit"`). A new stream that Loki did create in the refused request is
//!   stored twice (its entries of that one request).
//! - **per-stream rate**: Loki stores what fits its `per_stream_rate_limit` and answers 429 for
//!   the rest, so a resent request stores lines twice. Requests wait until each of their streams
//!   is within `per_stream_rate` (default Loki's 3MB/s) after a burst of `per_stream_burst`
//!   (Loki's 15MB), so a long catch-up of one container is paced.
//! - **400 for some entries** (too old, too long, ...): Loki stored the others. The body lists
//!   the refusals ("N errors: a; b"); what was refused is counted by Loki's reason
//!   (`lgtm_agent_exporter_failed_total{reason="greater_than_max_sample_age"}`, ...) and only
//!   that is counted as dropped, the rest as sent.
//! - **Loki's validation limits** (`exporters.loki.limits`, Loki's defaults): what Loki would
//!   certainly refuse (too old, too far in the future, a line too long, too many or too long
//!   labels) is dropped before sending and counted by Loki's reason, warned once per reason, so
//!   it never rides with healthy entries ([`loki_limits`]); `max_line_size_truncate` cuts lines
//!   as Loki would.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lgtm_config::ExporterConfig;
use reqwest::StatusCode;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::{snappy, Failure, HttpSender, Refusal};
use super::loki_limits::{Limits, Verdict};
use super::loki_wire::{self, Stream};
use super::outcome::{concatenate, release, LogThrottle, Piece, RecordTracker, Reporter};
use super::retry::{Attempt, Backoff, Decision, Retrier};
use crate::metrics;
use crate::queue::{DurableQueue, Record};

const EXPORTER: &str = "loki";

const PROTOCOL_HEADERS: &[(&str, &str)] = &[("Content-Type", "application/x-protobuf")];

/// Loki's answer to structured metadata when `allow_structured_metadata` is off.
const METADATA_REFUSED: &str = "includes structured metadata, but this feature is disallowed";
/// Loki's stream-limit refusal (429).
const STREAM_LIMIT: &str = "Maximum active stream limit exceeded";

/// What an answer means for the request.
#[derive(Debug)]
enum Answer {
    Delivered,
    MetadataRefused(String),
    TooLarge(String),
    StreamLimit(Refusal),
    /// A final refusal (4xx), perhaps of part of the request.
    Refused(Refusal),
}

fn answer_of(result: Result<(), Failure>) -> Attempt<Answer> {
    match result {
        Ok(()) => Attempt::Delivered(Answer::Delivered),
        Err(Failure::Retry(Attempt::Retry { reason, detail, retry_after })) => {
            Attempt::Retry { reason, detail, retry_after }
        }
        Err(Failure::Retry(_)) => unreachable!("send only retries"),
        Err(Failure::Refused(r)) => match r.status {
            StatusCode::BAD_REQUEST if r.body.contains(METADATA_REFUSED) => {
                Attempt::Delivered(Answer::MetadataRefused(r.message()))
            }
            StatusCode::PAYLOAD_TOO_LARGE => Attempt::Delivered(Answer::TooLarge(r.message())),
            StatusCode::TOO_MANY_REQUESTS if r.body.contains(STREAM_LIMIT) => {
                Attempt::Delivered(Answer::StreamLimit(r))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => r.classify(),
            _ => Attempt::Delivered(Answer::Refused(r)),
        },
    }
}

/// Part of a queued record: some entries of one stream. Dropped unsettled, it hands its record
/// back to the queue.
struct Part {
    labels: Bytes,
    entries: Vec<Bytes>,
    record: Arc<RecordTracker>,
    settled: bool,
}

impl Part {
    fn settle(mut self, piece: Piece) {
        self.settled = true;
        self.record.piece_done(piece);
    }

    /// The part cut in two halves of its entries; `None` for a single entry.
    fn halve(mut self) -> Result<(Part, Part), Part> {
        if self.entries.len() < 2 {
            return Err(self);
        }
        let second = self.entries.split_off(self.entries.len() / 2);
        self.record.add_piece();
        let other = Part { labels: self.labels.clone(), entries: second, record: self.record.clone(), settled: false };
        Ok((self, other))
    }

    /// The entries from `at` on, as a part of their own (`at` at least 1, below the length).
    fn split_off(&mut self, at: usize) -> Part {
        let rest = self.entries.split_off(at);
        self.record.add_piece();
        Part { labels: self.labels.clone(), entries: rest, record: self.record.clone(), settled: false }
    }
}

/// Protobuf bytes a stream adds to a request besides its labels and entries (field tags and
/// lengths), and each entry besides its own bytes: an upper bound for the sizes seen in practice.
const STREAM_OVERHEAD: usize = 12;
const ENTRY_OVERHEAD: usize = 6;

/// `parts` cut into requests of at most `max_items` entries and at most `max_bytes` protobuf
/// bytes each (`batch.max_items` / `batch.max_bytes`, as documented), in order. A part that does
/// not fit is split between requests; an entry larger than `max_bytes` on its own goes alone.
/// The queue hands out records within these bounds, but one record (a tailer's batch, a large
/// OTLP logs request) can exceed them by itself.
fn cut(parts: Vec<Part>, max_items: usize, max_bytes: usize) -> Vec<Vec<Part>> {
    let (max_items, max_bytes) = (max_items.max(1), max_bytes.max(1));
    let mut requests = Vec::new();
    let mut current: Vec<Part> = Vec::new();
    let (mut items, mut bytes) = (0usize, 0usize);
    for mut part in parts {
        loop {
            let mut size = bytes + part.labels.len() + STREAM_OVERHEAD;
            let mut fit = 0;
            while fit < part.entries.len() && items + fit < max_items {
                let entry = part.entries[fit].len() + ENTRY_OVERHEAD;
                if size + entry > max_bytes && !(current.is_empty() && fit == 0) {
                    break;
                }
                size += entry;
                fit += 1;
            }
            if fit == part.entries.len() {
                items += fit;
                bytes = size;
                current.push(part);
                break;
            }
            if fit > 0 {
                let rest = part.split_off(fit);
                current.push(part);
                part = rest;
            }
            requests.push(std::mem::take(&mut current));
            (items, bytes) = (0, 0);
        }
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.settled {
            self.record.piece_done(Piece::Abandoned);
        }
    }
}

/// A token bucket per stream (bytes, refilled at `rate` per second, at most one second's worth):
/// a request waits until every stream in it is within the rate. Idle streams are forgotten.
struct Pacer {
    rate: f64,
    /// The most a bucket holds (Loki's `per_stream_rate_limit_burst`), at least `rate`.
    burst: f64,
    streams: HashMap<Bytes, (f64, Instant)>,
}

/// Streams paced at once before idle ones are forgotten.
const MAX_PACED_STREAMS: usize = 20_000;

impl Pacer {
    /// How long to wait before sending `request` (taking its bytes from each stream's bucket).
    fn delay(&mut self, request: &[u8]) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        if self.streams.len() > MAX_PACED_STREAMS {
            // A bucket idle for burst / rate seconds is full again: forgetting it changes nothing.
            let full_after = Duration::from_secs_f64(self.burst.max(self.rate) / self.rate);
            self.streams.retain(|_, (_, at)| now.duration_since(*at) < full_after);
        }
        let (rate, burst, streams) = (self.rate, self.burst.max(self.rate), &mut self.streams);
        let mut wait = 0.0f64;
        loki_wire::for_each_stream(request, |labels, len| {
            let (tokens, at) = match streams.get_mut(labels) {
                Some(b) => b,
                None => streams.entry(Bytes::copy_from_slice(labels)).or_insert((burst, now)),
            };
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst) - len as f64;
            *at = now;
            if *tokens < 0.0 {
                wait = wait.max(-*tokens / rate);
            }
        });
        Duration::from_secs_f64(wait)
    }
}

/// Parts to send, with Loki's answer to them (and whether they carried their structured
/// metadata) once it is known.
type Work = (Vec<Part>, Option<(Answer, bool)>);

/// Entries of a stream Loki refused for its stream limit, waiting to be tried again.
/// Entries of a stream Loki refused for its stream limit, waiting to be tried again.
struct Held {
    labels: Bytes,
    parts: Vec<Part>,
    since: Instant,
    next_try: Instant,
    backoff: Backoff,
}

/// What the senders share: the exporter's connection and settings, and what it learnt of Loki.
struct Loki {
    sender: HttpSender,
    retrier: Retrier,
    reporter: Reporter,
    queue: DurableQueue,
    /// Whether entries go with their structured metadata (off by config, or once Loki refused it).
    send_metadata: AtomicBool,
    /// `batch.max_items` and `batch.max_bytes`: no request exceeds them (see [`cut`]).
    max_items: usize,
    max_bytes: usize,
    hold_back: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    held_logged: LogThrottle,
    /// Loki's validation limits, checked before sending.
    limits: Limits,
    stop: CancellationToken,
    state: Mutex<State>,
}

/// What the senders learn and change, each holding the lock for a moment (never across a send).
struct State {
    held: Vec<Held>,
    /// Streams Loki took before: they exist there, so its stream limit never refuses them.
    known: HashSet<Bytes>,
    pacer: Pacer,
    /// Reasons of entries dropped before sending already warned about.
    warned: HashSet<&'static str>,
}

/// Streams remembered in [`State::known`] (Loki's default limit is 5,000 per tenant).
const MAX_KNOWN_STREAMS: usize = 50_000;

pub async fn run(cfg: ExporterConfig, tenant: String, queue: DurableQueue, stop: CancellationToken) {
    let Some(sender) = HttpSender::new_until_stopped(EXPORTER, &cfg, &tenant, PROTOCOL_HEADERS, &stop).await else {
        return;
    };
    // Loki's own families exist from the start, at 0.
    let _ = metrics::loki();
    let loki = Arc::new(Loki {
        sender,
        retrier: Retrier::new(EXPORTER, &cfg.retry, stop.clone()),
        reporter: Reporter::new(EXPORTER),
        queue: queue.clone(),
        send_metadata: AtomicBool::new(cfg.structured_metadata),
        max_items: cfg.batch.max_items,
        max_bytes: cfg.batch.max_bytes.bytes() as usize,
        hold_back: cfg.stream_limit_hold_back.get(),
        initial_backoff: cfg.retry.initial_backoff.get(),
        max_backoff: cfg.retry.max_backoff.get(),
        held_logged: LogThrottle::every(Duration::from_secs(10)),
        limits: Limits::new(&cfg.limits),
        stop: stop.clone(),
        state: Mutex::new(State {
            held: Vec::new(),
            known: HashSet::new(),
            pacer: Pacer {
                rate: cfg.per_stream_rate.bytes() as f64,
                burst: cfg.per_stream_burst.bytes() as f64,
                streams: HashMap::new(),
            },
            warned: HashSet::new(),
        }),
    });
    let mut flight = Flight::new(cfg.shards.max(1));
    let (max_bytes, max_items, max_wait) =
        (cfg.batch.max_bytes.bytes() as usize, cfg.batch.max_items, cfg.batch.max_wait.get());
    let mut open = true;
    loop {
        flight.start_ready(&loki);
        if !open && flight.is_idle() {
            break;
        }
        let due = flight.held_due(&loki);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = flight.running.join_next_with_id(), if !flight.running.is_empty() => flight.finished(done),
            batch = queue.next(max_bytes, max_items, max_wait), if open && flight.has_room() => match batch {
                Some(records) => flight.wait(records),
                None => open = false,
            },
            _ = sleep_until(due), if due.is_some() => {}
        }
    }
    // Stopped, or the queue closed and drained: what waits goes back to the queue, and so does
    // what the senders and the held streams still have (dropped unsettled).
    for (records, _) in flight.waiting.drain(..) {
        release(&queue, &records);
    }
    while flight.running.join_next().await.is_some() {}
    loki.state().held.clear();
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Up to `shards` requests in flight, none two with a stream in common: a batch from the queue
/// starts once no earlier batch or held stream with one of its streams is in flight or waiting
/// before it, so the entries of each stream go out one request after another, in order, while
/// batches of other streams go alongside (one container's catch-up is one stream at a time;
/// a node's many files are many streams). Records are completed as their pieces are settled,
/// in any order (the queue and the tailer's checkpoints advance over the contiguous prefix).
struct Flight {
    lanes: usize,
    running: JoinSet<()>,
    /// Streams of each running sender's work (hashes of their selectors: a collision only makes
    /// two batches wait for each other).
    busy: HashMap<tokio::task::Id, Vec<u64>>,
    /// Batches taken from the queue, not started yet, in queue order (at most `lanes`).
    waiting: VecDeque<(Vec<Record>, Vec<u64>)>,
    hasher: RandomState,
}

impl Flight {
    fn new(lanes: usize) -> Flight {
        Flight {
            lanes,
            running: JoinSet::new(),
            busy: HashMap::new(),
            waiting: VecDeque::new(),
            hasher: RandomState::new(),
        }
    }

    fn key(&self, labels: &[u8]) -> u64 {
        self.hasher.hash_one(labels)
    }

    fn has_room(&self) -> bool {
        self.waiting.len() < self.lanes
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    fn is_busy(&self, key: u64) -> bool {
        self.busy.values().any(|s| s.contains(&key))
    }

    fn wait(&mut self, records: Vec<Record>) {
        let mut keys = Vec::new();
        for r in &records {
            loki_wire::for_each_labels(&r.payload, |l| {
                let k = self.key(l);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            });
        }
        self.waiting.push_back((records, keys));
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(exporter = EXPORTER, error = %e, "a Loki sender panicked; its records go back to the queue");
                }
                e.id()
            }
        };
        self.busy.remove(&id);
    }

    /// Starts what may start, oldest first: held streams that are due (their entries are older
    /// than any waiting batch's), then waiting batches none of whose streams is busy or in an
    /// earlier waiting batch.
    fn start_ready(&mut self, loki: &Arc<Loki>) {
        if self.running.len() < self.lanes {
            let now = Instant::now();
            let room = self.lanes - self.running.len();
            let due: Vec<Held> = {
                let mut st = loki.state();
                let mut due = Vec::new();
                let mut i = 0;
                while i < st.held.len() && due.len() < room {
                    if st.held[i].next_try <= now && !self.is_busy(self.key(&st.held[i].labels)) {
                        due.push(st.held.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                metrics::loki().held_streams.set(st.held.len() as i64);
                due
            };
            for held in due {
                let key = self.key(&held.labels);
                let loki = loki.clone();
                let handle = self.running.spawn(async move { loki.retry_held(held).await });
                self.busy.insert(handle.id(), vec![key]);
            }
        }
        let mut i = 0;
        while i < self.waiting.len() && self.running.len() < self.lanes {
            let (_, keys) = &self.waiting[i];
            let blocked =
                keys.iter().any(|k| self.is_busy(*k) || self.waiting.range(..i).any(|(_, ks)| ks.contains(k)));
            if blocked {
                i += 1;
                continue;
            }
            let Some((records, keys)) = self.waiting.remove(i) else { break };
            let loki = loki.clone();
            let handle = self.running.spawn(async move {
                loki.send_records(records).await;
            });
            self.busy.insert(handle.id(), keys);
        }
    }

    /// When the next held stream that could start is due (`None` with every lane busy: a
    /// finished sender wakes the loop).
    fn held_due(&self, loki: &Loki) -> Option<Instant> {
        if self.running.len() >= self.lanes {
            return None;
        }
        loki.state().held.iter().filter(|h| !self.is_busy(self.key(&h.labels))).map(|h| h.next_try).min()
    }
}

impl Loki {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state holds what was learnt (known streams, pacing, held parts); a sender that
        // panicked while holding the lock leaves nothing half-done that matters more than that.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metadata(&self) -> bool {
        self.send_metadata.load(Ordering::Relaxed)
    }

    /// Sends a batch of records; `false` when stopped (records handed back).
    async fn send_records(&self, records: Vec<Record>) -> bool {
        let items: usize = records.iter().map(|r| r.items as usize).sum();
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        let within = items <= self.max_items && bytes <= self.max_bytes;
        let now = unix_nanos();
        let clean = records.iter().all(|r| self.limits.all_pass(&r.payload, now));
        if clean && within && self.metadata() && self.state().held.is_empty() {
            let body = concatenate(&records);
            match self.push_bytes(&body).await {
                None => {
                    release(&self.queue, &records);
                    return false;
                }
                Some(Answer::Delivered) => {
                    {
                        let mut st = self.state();
                        loki_wire::for_each_labels(&body, |l| remember(&mut st, l));
                    }
                    self.reporter.settle(&self.queue, &records, Some(Decision::Delivered(())));
                    return true;
                }
                Some(answer) => {
                    let Some(parts) = self.parts_of(&records) else { return true };
                    return self.handle(parts, answer, true).await;
                }
            }
        }
        let Some(parts) = self.parts_of(&records) else { return true };
        let parts = if clean { parts } else { self.precheck(parts, now) };
        let parts = self.hold_if_held(parts);
        if parts.is_empty() {
            return true;
        }
        self.send_parts(parts).await
    }

    /// Drops from `parts` what Loki would refuse (counted by Loki's reason, warned once per
    /// reason) and cuts the lines it would truncate; returns the rest.
    fn precheck(&self, parts: Vec<Part>, now: i64) -> Vec<Part> {
        let mut kept = Vec::with_capacity(parts.len());
        let mut truncated = 0u64;
        for mut p in parts {
            if let Some(reason) = self.limits.stream(&p.labels) {
                let message = self.refused_here(reason, p.entries.len() as u64, &p.labels);
                p.settle(Piece::Rejected(message));
                continue;
            }
            let mut entries = Vec::with_capacity(p.entries.len());
            let mut refused: Vec<Bytes> = Vec::new();
            let mut reasons: Vec<(&'static str, u64)> = Vec::new();
            for e in p.entries.drain(..) {
                match self.limits.entry(&e, now) {
                    Verdict::Pass => entries.push(e),
                    Verdict::Truncate(max) => {
                        truncated += 1;
                        entries.push(loki_wire::truncate_entry(&e, max));
                    }
                    Verdict::Refuse(reason) => {
                        refused.push(e);
                        match reasons.iter_mut().find(|(r, _)| *r == reason) {
                            Some((_, n)) => *n += 1,
                            None => reasons.push((reason, 1)),
                        }
                    }
                }
            }
            p.entries = entries;
            let mut message = String::new();
            for (reason, n) in reasons {
                message = self.refused_here(reason, n, &p.labels);
            }
            if p.entries.is_empty() {
                p.settle(Piece::Rejected(message));
                continue;
            }
            if !refused.is_empty() {
                p.record.add_piece();
                let dropped =
                    Part { labels: p.labels.clone(), entries: refused, record: p.record.clone(), settled: false };
                dropped.settle(Piece::Rejected(message));
            }
            kept.push(p);
        }
        if truncated > 0 {
            metrics::loki().truncated.inc_by(truncated);
            if self.state().warned.insert("truncated") {
                tracing::warn!(
                    exporter = EXPORTER,
                    max_line_size = self.limits.describe("line_too_long"),
                    "cutting lines longer than Loki's max_line_size, as Loki does with max_line_size_truncate \
                     (lgtm_agent_loki_lines_truncated_total; logged once)"
                );
            }
        }
        kept
    }

    /// Counts `n` entries of `stream` dropped before sending for `reason`, warns once per
    /// reason; the message their records are settled with.
    fn refused_here(&self, reason: &'static str, n: u64, stream: &[u8]) -> String {
        self.reporter.refused_before_sending(n, reason);
        let message = self.limits.describe(reason);
        if self.state().warned.insert(reason) {
            tracing::warn!(
                exporter = EXPORTER,
                %reason,
                stream = %String::from_utf8_lossy(stream),
                entries = n,
                "dropping entries before sending: {message}; counted in lgtm_agent_exporter_failed_total{{reason=\"{reason}\"}} (logged once per reason)"
            );
        }
        format!("dropped before sending: {message}")
    }

    /// The records cut into parts (one per stream of each record). A record that does not read
    /// is rejected on its own. `None` when none is left.
    fn parts_of(&self, records: &[Record]) -> Option<Vec<Part>> {
        let mut parts = Vec::new();
        for r in records {
            match loki_wire::streams(&r.payload) {
                Ok(streams) => {
                    let tracker = Arc::new(RecordTracker::new(r.seq, self.queue.clone()));
                    for Stream { labels, entries } in streams.into_iter().filter(|s| !s.entries.is_empty()) {
                        tracker.add_piece();
                        parts.push(Part { labels, entries, record: tracker.clone(), settled: false });
                    }
                    if parts.iter().all(|p| !Arc::ptr_eq(&p.record, &tracker)) {
                        self.queue.complete(r.seq, crate::Delivery::Accepted);
                    }
                }
                Err(e) => {
                    let message = format!("queued record is not a PushRequest: {e}");
                    self.reporter.rejected(r.items as u64, "decode", &message);
                    self.queue.complete(r.seq, crate::Delivery::Rejected(message));
                }
            }
        }
        (!parts.is_empty()).then_some(parts)
    }

    /// Moves the parts of streams being held back to them (their entries go after the held ones).
    fn hold_if_held(&self, parts: Vec<Part>) -> Vec<Part> {
        let mut st = self.state();
        if st.held.is_empty() {
            return parts;
        }
        let mut rest = Vec::with_capacity(parts.len());
        for p in parts {
            match st.held.iter_mut().find(|h| h.labels == p.labels) {
                Some(h) => h.parts.push(p),
                None => rest.push(p),
            }
        }
        rest
    }

    /// `parts` as a request, and whether it carries their structured metadata.
    fn encode(&self, parts: &[Part]) -> (Bytes, bool) {
        let metadata = self.metadata();
        let mut out = Vec::new();
        for p in parts {
            loki_wire::encode_stream(&mut out, &p.labels, &p.entries, !metadata);
        }
        (Bytes::from(out), metadata)
    }

    /// Sends `raw` (an encoded `PushRequest`) until Loki decides, after waiting for each of its
    /// streams to be within `per_stream_rate`; `None` when stopped.
    async fn push_bytes(&self, raw: &[u8]) -> Option<Answer> {
        let wait = self.state().pacer.delay(raw);
        if !wait.is_zero() {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let body = match snappy(raw) {
            Ok(b) => b,
            Err(message) => return Some(Answer::Refused(encode_failure(message))),
        };
        match self.retrier.run(|| async { answer_of(self.sender.send(body.clone()).await) }).await? {
            Decision::Delivered(answer) => Some(answer),
            Decision::Rejected { .. } => unreachable!("answer_of never rejects"),
        }
    }

    /// Sends parts, taking them apart as Loki's answers require; `false` when stopped.
    async fn send_parts(&self, parts: Vec<Part>) -> bool {
        for (i, request) in cut(parts, self.max_items, self.max_bytes).into_iter().enumerate() {
            // A stream an earlier request of these got held back for: its later entries wait too.
            let request = if i == 0 { request } else { self.hold_if_held(request) };
            if request.is_empty() {
                continue;
            }
            let (body, metadata) = self.encode(&request);
            let sent = match self.push_bytes(&body).await {
                None => false,
                Some(answer) => self.handle(request, answer, metadata).await,
            };
            if !sent {
                // Stopped: the requests not sent are dropped unsettled, their records handed back.
                return false;
            }
        }
        true
    }

    /// Acts on Loki's answer to `parts` (sent with their structured metadata if `metadata`),
    /// sending again what has to be; `false` when stopped.
    async fn handle(&self, parts: Vec<Part>, answer: Answer, metadata: bool) -> bool {
        // Depth first, so that the entries of a stream go out in order.
        let mut work: VecDeque<Work> = VecDeque::from([(parts, Some((answer, metadata)))]);
        while let Some((parts, answer)) = work.pop_front() {
            let (answer, metadata) = match answer {
                Some(a) => a,
                None => {
                    if parts.is_empty() {
                        continue;
                    }
                    let (body, metadata) = self.encode(&parts);
                    match self.push_bytes(&body).await {
                        None => return false,
                        Some(a) => (a, metadata),
                    }
                }
            };
            let next = match answer {
                Answer::Delivered => {
                    {
                        let mut st = self.state();
                        parts.iter().for_each(|p| remember(&mut st, &p.labels));
                    }
                    self.reporter.delivered(entries(&parts));
                    parts.into_iter().for_each(|p| p.settle(Piece::Accepted));
                    continue;
                }
                // Sent with metadata: sent again without (the first sender to learn it says so).
                Answer::MetadataRefused(message) if metadata => {
                    if self.send_metadata.swap(false, Ordering::Relaxed) {
                        metrics::loki().structured_metadata_refused.inc();
                        tracing::warn!(
                            exporter = EXPORTER,
                            %message,
                            "Loki refuses structured metadata for this tenant (limits_config.allow_structured_metadata); \
                             sending entries without it from now on (`stream` and `part` are lost; a `stream` label keeps stdout and stderr apart)"
                        );
                    }
                    // Loki refuses entry by entry: those without metadata were stored.
                    let mut again = Vec::with_capacity(parts.len());
                    let mut stored = 0;
                    for mut p in parts {
                        let before = p.entries.len();
                        p.entries.retain(loki_wire::has_metadata);
                        stored += (before - p.entries.len()) as u64;
                        if p.entries.is_empty() {
                            p.settle(Piece::Accepted);
                        } else {
                            again.push(p);
                        }
                    }
                    self.reporter.delivered(stored);
                    vec![again]
                }
                Answer::MetadataRefused(message) => {
                    self.refuse_all(parts, "http_400", &message);
                    continue;
                }
                Answer::TooLarge(message) => match halve(parts) {
                    Ok((a, b)) => vec![a, b],
                    Err(single) => {
                        self.refuse_all(single, "http_413", &message);
                        continue;
                    }
                },
                Answer::StreamLimit(refusal) => {
                    self.stream_limited(parts, &refusal);
                    continue;
                }
                Answer::Refused(refusal) => {
                    self.partly_refused(parts, &refusal);
                    continue;
                }
            };
            for parts in next.into_iter().rev() {
                work.push_front((parts, None));
            }
        }
        true
    }

    /// Acts on a stream-limit refusal of `parts`: streams delivered before exist in Loki, which
    /// stored them (the limit refuses only new streams); the others are held back, each to be
    /// tried on its own. When every stream is one Loki had, those it names are held, and all if it
    /// names none.
    fn stream_limited(&self, parts: Vec<Part>, refusal: &Refusal) {
        let (known, new): (Vec<Part>, Vec<Part>) = {
            let st = self.state();
            parts.into_iter().partition(|p| st.known.contains(&p.labels))
        };
        if !new.is_empty() {
            self.reporter.delivered(entries(&known));
            known.into_iter().for_each(|p| p.settle(Piece::Accepted));
            self.hold(new, refusal);
            return;
        }
        let named = |p: &Part| std::str::from_utf8(&p.labels).is_ok_and(|l| refusal.body.contains(l));
        let (refused, stored): (Vec<Part>, Vec<Part>) =
            if known.iter().any(named) { known.into_iter().partition(named) } else { (known, Vec::new()) };
        self.reporter.delivered(entries(&stored));
        stored.into_iter().for_each(|p| p.settle(Piece::Accepted));
        self.hold(refused, refusal);
    }

    /// Holds back the parts of streams Loki refused for its stream limit.
    fn hold(&self, parts: Vec<Part>, refusal: &Refusal) {
        let now = Instant::now();
        let mut st = self.state();
        for p in parts {
            metrics::loki().held_back.inc_by(p.entries.len() as u64);
            match st.held.iter_mut().find(|h| h.labels == p.labels) {
                Some(h) => h.parts.push(p),
                None => {
                    if self.held_logged.allow() {
                        tracing::warn!(
                            exporter = EXPORTER,
                            stream = %String::from_utf8_lossy(&p.labels),
                            message = %refusal.message(),
                            hold_back = ?self.hold_back,
                            "Loki's stream limit refuses a new stream: holding it back, the other streams go on"
                        );
                    }
                    let mut backoff = Backoff::new(self.initial_backoff, self.max_backoff);
                    let next_try = now + backoff.next_delay(refusal.retry_after);
                    st.held.push(Held { labels: p.labels.clone(), parts: vec![p], since: now, next_try, backoff });
                }
            }
        }
        metrics::loki().held_streams.set(st.held.len() as i64);
    }

    /// Tries one held stream that is due, on its own, once (the flight keeps its stream out of
    /// other requests meanwhile); back to the held ones if Loki still refuses it.
    async fn retry_held(&self, mut held: Held) {
        let (raw, metadata) = self.encode(&held.parts);
        // A body that does not compress is dropped unsettled: its records go back to the queue.
        let Ok(body) = snappy(&raw) else { return };
        let answer = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return,
            a = self.sender.send(body) => answer_of(a),
        };
        match answer {
            Attempt::Delivered(Answer::StreamLimit(refusal)) if held.since.elapsed() >= self.hold_back => {
                let message = format!("held back {:?} for the stream limit: {}", self.hold_back, refusal.message());
                self.refuse_all(std::mem::take(&mut held.parts), "stream_limit", &message);
            }
            Attempt::Delivered(Answer::StreamLimit(refusal)) => {
                held.next_try = Instant::now() + held.backoff.next_delay(refusal.retry_after);
                self.hold_again(held);
            }
            // Loki down or busy: not this stream's doing; it waits like everything else.
            Attempt::Retry { retry_after, .. } => {
                held.next_try = Instant::now() + held.backoff.next_delay(retry_after);
                self.hold_again(held);
            }
            Attempt::Delivered(answer) => {
                self.handle(std::mem::take(&mut held.parts), answer, metadata).await;
            }
            Attempt::Reject { .. } => unreachable!("answer_of never rejects"),
        }
    }

    fn hold_again(&self, held: Held) {
        let mut st = self.state();
        st.held.push(held);
        metrics::loki().held_streams.set(st.held.len() as i64);
    }

    /// Drops `parts` for good, counted under `reason`.
    fn refuse_all(&self, parts: Vec<Part>, reason: &str, message: &str) {
        self.reporter.rejected(entries(&parts), reason, message);
        parts.into_iter().for_each(|p| p.settle(Piece::Rejected(message.to_string())));
    }

    /// A final 4xx: Loki stored the valid entries and lists the refused ones; counted by reason.
    fn partly_refused(&self, parts: Vec<Part>, refusal: &Refusal) {
        let total = entries(&parts);
        let reasons = refused_by_reason(&refusal.body, total);
        let refused: u64 = reasons.iter().map(|(_, n)| n).sum::<u64>().min(total);
        let message = refusal.message();
        for (reason, n) in &reasons {
            self.reporter.rejected(*n, reason, &message);
        }
        self.reporter.delivered(total - refused);
        let piece = if refused >= total { Piece::Rejected(message) } else { Piece::Accepted };
        parts.into_iter().for_each(|p| p.settle(piece.clone()));
    }
}

/// Remembers a stream Loki has (bounded: forgotten all at once past [`MAX_KNOWN_STREAMS`]).
fn remember(st: &mut State, labels: &[u8]) {
    if !st.known.contains(labels) {
        if st.known.len() >= MAX_KNOWN_STREAMS {
            st.known.clear();
        }
        st.known.insert(Bytes::copy_from_slice(labels));
    }
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn encode_failure(message: String) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, body: format!("encode: {message}"), retry_after: None }
}

fn entries(parts: &[Part]) -> u64 {
    parts.iter().map(|p| p.entries.len() as u64).sum()
}

/// Parts cut in two: by parts, else the single part by entries. `Err` for a single entry.
fn halve(mut parts: Vec<Part>) -> Result<(Vec<Part>, Vec<Part>), Vec<Part>> {
    if parts.len() > 1 {
        let second = parts.split_off(parts.len() / 2);
        return Ok((parts, second));
    }
    let Some(part) = parts.pop() else { return Err(parts) };
    match part.halve() {
        Ok((a, b)) => Ok((vec![a], vec![b])),
        Err(single) => Err(vec![single]),
    }
}

/// Loki's reason label for one of its refusal messages (`pkg/validation`), `http_400` otherwise.
fn loki_reason(message: &str) -> &'static str {
    const REASONS: &[(&str, &str)] = &[
        ("has timestamp too old", "greater_than_max_sample_age"),
        ("has timestamp too new", "too_far_in_future"),
        ("Max entry size", "line_too_long"),
        ("label names; limit", "max_label_names_per_series"),
        ("has label name too long", "label_name_too_long"),
        ("has label value too long", "label_value_too_long"),
        ("has duplicate label name", "duplicate_label_names"),
        ("too far behind", "too_far_behind"),
        ("out of order", "out_of_order"),
        (METADATA_REFUSED, "disallowed_structured_metadata"),
        ("structured metadata too large", "structured_metadata_too_large"),
        ("too many structured metadata labels", "structured_metadata_too_many"),
        ("error parsing labels", "invalid_labels"),
        ("at least one label pair is required", "missing_labels"),
    ];
    let lower = message.to_ascii_lowercase();
    REASONS.iter().find(|(text, _)| lower.contains(&text.to_ascii_lowercase())).map_or("http_400", |(_, r)| r)
}

/// The refusals a Loki 400 body lists, counted by reason. Loki joins them as `N errors: a; b; c`
/// (one per refused entry or stream); a body without that form is one refusal of the whole
/// request (`total` entries).
fn refused_by_reason(body: &str, total: u64) -> Vec<(&'static str, u64)> {
    let listed = body
        .split_once(" errors: ")
        .and_then(|(n, rest)| n.trim().parse::<u64>().ok().map(|n| (n, rest)))
        .map(|(n, rest)| (n, rest.split("; ").collect::<Vec<_>>()));
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    let mut add = |reason: &'static str, n: u64| match out.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, c)) => *c += n,
        None => out.push((reason, n)),
    };
    match listed {
        Some((n, items)) if !items.is_empty() => {
            let per_item = items.iter().map(|i| loki_reason(i)).collect::<Vec<_>>();
            for r in &per_item {
                add(r, 1);
            }
            // The body is quoted up to a bound: the unread refusals take the last reason seen.
            let seen = per_item.len() as u64;
            if n > seen {
                add(per_item[per_item.len() - 1], n - seen);
            }
        }
        _ => add(loki_reason(body), total),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::testing::{fast_config, push_and_run, Capture, Reply};
    use crate::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
    use crate::Delivery;
    use prost::Message;

    fn push(labels: &str, lines: &[&str]) -> PushRequest {
        let now = unix_nanos();
        let timed: Vec<(&str, i64)> = lines.iter().enumerate().map(|(i, l)| (*l, now + i as i64)).collect();
        push_at(labels, &timed)
    }

    /// Entries with their own timestamps (Unix nanoseconds).
    fn push_at(labels: &str, lines: &[(&str, i64)]) -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: labels.into(),
                entries: lines
                    .iter()
                    .map(|(l, ts)| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(*ts)),
                        line: l.to_string(),
                        structured_metadata: vec![LabelPairAdapter { name: "stream".into(), value: "stdout".into() }],
                    })
                    .collect(),
                hash: 0,
            }],
        }
    }

    fn decoded(body: &[u8]) -> PushRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).expect("snappy block");
        PushRequest::decode(raw.as_slice()).expect("PushRequest")
    }

    fn lines(req: &PushRequest) -> Vec<(String, String)> {
        req.streams.iter().flat_map(|s| s.entries.iter().map(|e| (s.labels.clone(), e.line.clone()))).collect()
    }

    #[tokio::test]
    async fn push_is_snappy_protobuf_with_tenant_and_extra_headers() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/loki/api/v1/push"));
        cfg.headers.insert("X-Extra".into(), "yes".into());
        let records = vec![
            push(r#"{app="a"}"#, &["one", "two"]).encode_to_vec(),
            push(r#"{app="b"}"#, &["three"]).encode_to_vec(),
        ];
        let acks = push_and_run(run, cfg, "team-logs", records, 3).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");

        let reqs = capture.requests();
        let mut all = Vec::new();
        for r in &reqs {
            assert_eq!(r.path, "/loki/api/v1/push");
            assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
            assert_eq!(r.header("x-scope-orgid"), Some("team-logs"));
            assert_eq!(r.header("x-extra"), Some("yes"));
            all.extend(lines(&decoded(&r.body)));
        }
        let expected: Vec<(String, String)> =
            [(r#"{app="a"}"#, "one"), (r#"{app="a"}"#, "two"), (r#"{app="b"}"#, "three")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn no_request_exceeds_batch_max_items_or_max_bytes_even_for_one_large_record() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/loki/api/v1/push"));
        cfg.batch.max_items = 7;
        cfg.batch.max_bytes = lgtm_config::ByteSize::from_bytes(600);
        // One record of 40 entries in two streams (a tailer's batch can be that), and a second one.
        let a: Vec<String> = (0..25).map(|i| format!("a-{i:02} {}", "x".repeat(20))).collect();
        let b: Vec<String> = (0..15).map(|i| format!("b-{i:02} {}", "y".repeat(40))).collect();
        let mut first = push(r#"{app="a"}"#, &a.iter().map(String::as_str).collect::<Vec<_>>());
        first.streams.extend(push(r#"{app="b"}"#, &b.iter().map(String::as_str).collect::<Vec<_>>()).streams);
        let records = vec![first.encode_to_vec(), push(r#"{app="c"}"#, &["c-00"]).encode_to_vec()];
        let acks = push_and_run(run, cfg, "t", records, 40).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted), Some(Delivery::Accepted)]);

        let reqs = capture.requests();
        let mut all = Vec::new();
        for r in &reqs {
            let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
            let req = decoded(&r.body);
            assert!(lines(&req).len() <= 7, "{} entries in one request", lines(&req).len());
            assert!(raw.len() <= 600, "{} bytes in one request", raw.len());
            all.extend(lines(&req).into_iter().map(|(_, l)| l));
        }
        // Every entry once, each stream's in order (streams go in parallel).
        let stream = |p: &str| all.iter().filter(|l| l.starts_with(p)).cloned().collect::<Vec<_>>();
        assert_eq!(stream("a-"), a);
        assert_eq!(stream("b-"), b);
        assert_eq!(stream("c-"), vec!["c-00".to_string()]);
        assert_eq!(all.len(), a.len() + b.len() + 1);
        assert!(reqs.len() >= 7, "{} requests", reqs.len());
    }

    #[tokio::test]
    async fn what_loki_would_refuse_is_dropped_before_sending_and_the_rest_goes_in_one_request() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/loki/api/v1/push"));
        cfg.limits.max_line_size = lgtm_config::ByteSize::from_bytes(10);
        cfg.limits.max_label_value_length = 5;
        let now = unix_nanos();
        let sec = 1_000_000_000i64;
        let records = vec![
            push_at(
                r#"{a="1"}"#,
                &[
                    ("ok-1", now),
                    ("too old", now - 8 * 86_400 * sec),
                    ("a line too long", now),
                    ("future", now + 3600 * sec),
                    ("ok-2", now + 1),
                ],
            )
            .encode_to_vec(),
            push(r#"{a="123456"}"#, &["label value too long"]).encode_to_vec(),
            push(r#"{a="2"}"#, &["ok-3"]).encode_to_vec(),
        ];
        let acks = push_and_run(run, cfg, "t", records, 1).await;
        assert!(matches!(&acks[0], Some(Delivery::Rejected(m)) if m.contains("before sending")), "{acks:?}");
        assert!(matches!(&acks[1], Some(Delivery::Rejected(m)) if m.contains("max_label_value_length")), "{acks:?}");
        assert_eq!(acks[2], Some(Delivery::Accepted));
        let reqs = capture.requests();
        assert_eq!(reqs.len(), 1, "the healthy entries in one request, never refused");
        let expected: Vec<(String, String)> = [(r#"{a="1"}"#, "ok-1"), (r#"{a="1"}"#, "ok-2"), (r#"{a="2"}"#, "ok-3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(lines(&decoded(&reqs[0].body)), expected);
    }

    #[tokio::test]
    async fn max_line_size_truncate_cuts_lines_as_loki_would() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/loki/api/v1/push"));
        cfg.limits.max_line_size = lgtm_config::ByteSize::from_bytes(10);
        cfg.limits.max_line_size_truncate = true;
        let records = vec![push(r#"{a="1"}"#, &["short", "0123456789abc", "123456789\u{e9}x"]).encode_to_vec()];
        let acks = push_and_run(run, cfg, "t", records, 3).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let got: Vec<String> =
            capture.requests().iter().flat_map(|r| lines(&decoded(&r.body))).map(|(_, l)| l).collect();
        assert_eq!(got, vec!["short", "0123456789", "123456789"], "cut at 10 bytes, on a character");
    }

    /// A backend that takes 100 ms per request and records, for each, its streams and lines and
    /// how many other requests were in flight meanwhile.
    async fn slow_backend() -> (String, Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, usize)>>>) {
        use std::sync::atomic::AtomicUsize;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (s, f) = (seen.clone(), in_flight.clone());
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (seen, in_flight) = (s.clone(), f.clone());
            async move {
                let others = in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let others = others.max(in_flight.load(Ordering::SeqCst) - 1);
                seen.lock().unwrap().push((lines(&decoded(&body)), others));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/loki/api/v1/push", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, seen)
    }

    #[tokio::test]
    async fn several_requests_are_in_flight_but_never_two_of_one_stream() {
        let (url, seen) = slow_backend().await;
        let mut cfg = fast_config(&url);
        cfg.shards = 4;
        // One record per request: two entries each.
        cfg.batch.max_items = 2;
        let records: Vec<Vec<u8>> = (0..24)
            .map(|i| {
                let stream = format!("{{s=\"{}\"}}", i % 4);
                let (a, b) = (format!("{}-{:02}a", i % 4, i / 4), format!("{}-{:02}b", i % 4, i / 4));
                push(&stream, &[a.as_str(), b.as_str()]).encode_to_vec()
            })
            .collect();
        let started = std::time::Instant::now();
        let acks = push_and_run(run, cfg, "t", records, 2).await;
        let took = started.elapsed();
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 24);
        let most = seen.iter().map(|(_, others)| *others).max().unwrap_or(0);
        assert!(most >= 2, "at most {most} other requests in flight at once");
        // Each stream's entries in order, each once.
        for s in 0..4 {
            let got: Vec<String> = seen
                .iter()
                .flat_map(|(ls, _)| ls.iter())
                .filter(|(labels, _)| labels == &format!("{{s=\"{s}\"}}"))
                .map(|(_, l)| l.clone())
                .collect();
            let want: Vec<String> = (0..6).flat_map(|k| [format!("{s}-{k:02}a"), format!("{s}-{k:02}b")]).collect();
            assert_eq!(got, want, "stream {s}");
        }
        // 24 requests of 100 ms one at a time would take 2.4 s.
        assert!(took < Duration::from_millis(1800), "{took:?}");
    }

    #[tokio::test]
    async fn one_stream_goes_one_request_at_a_time() {
        let (url, seen) = slow_backend().await;
        let mut cfg = fast_config(&url);
        cfg.shards = 4;
        cfg.batch.max_items = 2;
        let records: Vec<Vec<u8>> = (0..8)
            .map(|i| push("{s=\"only\"}", &[format!("{i}a").as_str(), format!("{i}b").as_str()]).encode_to_vec())
            .collect();
        let acks = push_and_run(run, cfg, "t", records, 2).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(_, others)| *others == 0), "two requests of one stream in flight: {seen:?}");
        let got: Vec<String> = seen.iter().flat_map(|(ls, _)| ls.iter().map(|(_, l)| l.clone())).collect();
        let want: Vec<String> = (0..8).flat_map(|i| [format!("{i}a"), format!("{i}b")]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_entry_larger_than_max_bytes_goes_alone() {
        let queue = crate::queue::DurableQueue::open(crate::queue::QueueOptions {
            name: "loki-cut".into(),
            dir: None,
            max_memory: 1 << 20,
            max_disk: 0,
            when_full: lgtm_config::WhenFull::Block,
        })
        .unwrap();
        let tracker = Arc::new(RecordTracker::new(0, queue));
        tracker.add_piece();
        let big = Bytes::from(vec![b'x'; 1000]);
        let part = Part {
            labels: Bytes::from_static(b"{a=\"1\"}"),
            entries: vec![Bytes::from_static(b"small"), big.clone(), Bytes::from_static(b"small")],
            record: tracker,
            settled: false,
        };
        let requests = cut(vec![part], 100, 100);
        let sizes: Vec<Vec<usize>> =
            requests.iter().map(|r| r.iter().flat_map(|p| p.entries.iter().map(|e| e.len())).collect()).collect();
        assert_eq!(sizes, vec![vec![5], vec![1000], vec![5]]);
    }

    #[tokio::test]
    async fn bad_request_is_rejected_not_retried() {
        let capture = Capture::start(vec![(400, "entry too far behind").into()]).await;
        let cfg = fast_config(&capture.url("/loki/api/v1/push"));
        let acks = push_and_run(run, cfg, "t", vec![push("{a=\"1\"}", &["x"]).encode_to_vec()], 1).await;
        match &acks[0] {
            Some(Delivery::Rejected(msg)) => assert!(msg.contains("entry too far behind"), "{msg}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(capture.requests().len(), 1);
    }

    #[tokio::test]
    async fn refused_structured_metadata_is_sent_again_without_it_and_not_again() {
        let refused = "stream '{a=\"1\"}' includes structured metadata, but this feature is disallowed. Please see `limits_config.allow_structured_metadata` or contact your Loki administrator to enable it.";
        let capture = Capture::start(vec![Reply { status: 400, body: refused, retry_after: None }]).await;
        let cfg = fast_config(&capture.url("/loki/api/v1/push"));
        let records = vec![push("{a=\"1\"}", &["x", "y"]).encode_to_vec()];
        let acks = push_and_run(run, cfg, "t", records, 2).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let reqs = capture.requests();
        assert_eq!(reqs.len(), 2);
        let again = decoded(&reqs[1].body);
        assert_eq!(lines(&again).len(), 2);
        assert!(again.streams.iter().flat_map(|s| &s.entries).all(|e| e.structured_metadata.is_empty()));
    }

    #[tokio::test]
    async fn payload_too_large_is_halved_down_to_the_entry_that_is() {
        // Four entries; whatever holds "big" is refused with 413.
        let capture = Capture::start_with(|body: &[u8]| {
            let req = decoded(body);
            if lines(&req).iter().any(|(_, l)| l == "big") {
                (413, "request too large".to_string())
            } else {
                (204, String::new())
            }
        })
        .await;
        let cfg = fast_config(&capture.url("/loki/api/v1/push"));
        let records = vec![
            push("{a=\"1\"}", &["one", "big", "three"]).encode_to_vec(),
            push("{a=\"2\"}", &["four"]).encode_to_vec(),
        ];
        let acks = push_and_run(run, cfg, "t", records, 3).await;
        assert!(matches!(&acks[0], Some(Delivery::Rejected(m)) if m.contains("413")), "{acks:?}");
        assert_eq!(acks[1], Some(Delivery::Accepted));
        let stored: Vec<String> = capture
            .requests()
            .iter()
            .filter(|r| r.status == 204)
            .flat_map(|r| lines(&decoded(&r.body)))
            .map(|(_, l)| l)
            .collect();
        assert_eq!(stored, vec!["one", "three", "four"]);
    }

    #[test]
    fn the_pacer_delays_a_stream_past_its_rate_and_not_the_others() {
        let a = push("{a=\"1\"}", &["x".repeat(1000).as_str()]).encode_to_vec();
        let b = push("{a=\"2\"}", &["y".repeat(1000).as_str()]).encode_to_vec();
        let mut pacer = Pacer { rate: a.len() as f64, burst: 0.0, streams: HashMap::new() };
        assert_eq!(pacer.delay(&a), Duration::ZERO, "a second's worth passes");
        let again = pacer.delay(&a);
        assert!(again > Duration::from_millis(900) && again <= Duration::from_secs(1), "{again:?}");
        assert_eq!(pacer.delay(&b), Duration::ZERO, "another stream has its own bucket");
        // With a burst of three seconds' worth, three requests pass at once, the fourth waits.
        let mut burst = Pacer { rate: a.len() as f64, burst: 3.0 * a.len() as f64, streams: HashMap::new() };
        for _ in 0..3 {
            assert_eq!(burst.delay(&a), Duration::ZERO, "within the burst");
        }
        let fourth = burst.delay(&a);
        assert!(fourth > Duration::from_millis(900) && fourth <= Duration::from_secs(1), "{fourth:?}");
        let mut off = Pacer { rate: 0.0, burst: 0.0, streams: HashMap::new() };
        assert_eq!(off.delay(&a), Duration::ZERO);
        assert_eq!(off.delay(&a), Duration::ZERO);
    }

    #[test]
    fn loki_400_bodies_are_counted_by_reason() {
        let body = "3 errors: entry for stream '{a=\"1\"}' has timestamp too old: 2020-01-01, oldest acceptable timestamp is: 2026-11-29; \
                    entry for stream '{a=\"1\"}' has timestamp too old: 2020-01-02, oldest acceptable timestamp is: 2026-11-29; \
                    Max entry size '262144' bytes exceeded for stream '{a=\"1\"}' while adding an entry with length '300000' bytes";
        assert_eq!(refused_by_reason(body, 10), vec![("greater_than_max_sample_age", 2), ("line_too_long", 1)]);
        assert_eq!(refused_by_reason("entry too far behind", 4), vec![("too_far_behind", 4)]);
        assert_eq!(refused_by_reason("something else", 4), vec![("http_400", 4)]);
    }
}
