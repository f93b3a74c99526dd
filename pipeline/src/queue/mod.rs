//! The per-exporter queue between the sinks and an exporter.
//!
//! Records (encoded batches) are handed out in push order, possibly several at once
//! ([`DurableQueue::next`] batches them by bytes, items and age), and stay in the queue until the
//! exporter reports their outcome with [`DurableQueue::complete`]. Completion may arrive in any
//! order; the queue commits the contiguous prefix of completed records, resolves their
//! acknowledgements and (with a disk) persists the commit position, so that after a crash or restart
//! the uncommitted records are replayed, in order.
//!
//! Bounds: `max_memory` bytes of payload are held in memory; with a disk (`dir` set and
//! `max_disk` > 0) every record is also appended to segment files under `dir`, and records beyond
//! the memory bound are read back from disk when their turn comes. When the bound in force is
//! reached, `when_full: block` makes `push` wait (backpressure to the source) and `drop_oldest`
//! evicts the oldest uncommitted records that are not in flight (resolved as [`Delivery::Evicted`]
//! and counted in `lgtm_agent_dropped_total{reason="evicted"}`). With a disk, eviction works on
//! whole segments, since only deleting a file gives disk space back.
//!
//! On disk (see [`segment`] for the format):
//! - `<dir>/<first seq>.seg`: records, checksummed and length-prefixed, each written to the OS
//!   before `push` returns, so killing the process loses none. A segment is fsync'ed when it is
//!   finished (at `min(max_disk / 8, 64 MiB)`) and by [`DurableQueue::persist`], and deleted once
//!   every record in it is completed or evicted.
//! - `<dir>/commit`: the commit position, replaced atomically at most every
//!   [`COMMIT_INTERVAL`] and by `persist`. Because it lags, a restart after a crash may hand out
//!   again a few records that were already delivered: delivery is at-least-once.
//!
//! On open, the segments are replayed from the commit position ([`replay`]): a torn record at the
//! end of the newest segment (a crash in the middle of an append) is cut off, never replayed;
//! damage elsewhere skips the rest of that segment and is counted in [`QueueStats::corrupt`].
//!
//! File I/O is blocking `std::fs` under a `std` mutex, kept off the runtime's async workers: the
//! appends of [`DurableQueue::push`] and [`DurableQueue::try_push`], reading payloads back in
//! [`DurableQueue::next`], writing the commit position and [`DurableQueue::persist`] run through
//! [`off_the_workers`] (`block_in_place`: the worker's other tasks move to another thread while
//! the file work runs). Not `spawn_blocking`: a push or a `next` dropped while its file work ran
//! on another thread would have appended or handed out records its caller never learns about
//! (`push` under a timeout would then queue a batch twice); done in place they stay
//! cancellation-safe, and `try_push` (the receivers' sync path, which answers the client only
//! once the record is written) can use it too. Appends stay under the lock because their order in
//! the file is the order of the sequence numbers; the slow parts (fsync of a finished segment,
//! reading a payload back) run after it is released. Segment deletions stay under the lock, on the
//! completing exporter's thread (one unlink per segment of up to 64 MiB), because a segment's
//! bytes count against `max_disk` until its file is gone.
//!
//! A full device (ENOSPC) is treated as the disk limit: the bound in force becomes what the
//! segments hold, so `when_full` applies (block, or evict the oldest), and the configured limit is
//! tried again once a segment is deleted or after a second; counted in
//! `lgtm_agent_queue_device_full_total`.

mod commit;
mod replay;
mod segment;
mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_config::WhenFull;
use tokio::sync::Notify;

use crate::ack::{AckSender, Delivery};
use crate::metrics;
use commit::{io_error, CommitFile};
use state::{AfterUnlock, Pick, State};

/// How often, at most, completions rewrite the commit position (besides [`DurableQueue::persist`]).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How a queue is bounded and where it keeps its segments.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The exporter's name, for metrics and logs.
    pub name: String,
    /// Segment directory; `None` keeps the queue in memory only.
    pub dir: Option<PathBuf>,
    pub max_memory: u64,
    /// Bytes of segment files; 0 keeps the queue in memory only.
    pub max_disk: u64,
    pub when_full: WhenFull,
}

/// The first bytes of a payload pushed compressed ([`compressed`]): `0xff` cannot start a
/// protobuf message (its wire type, 7, does not exist), so a payload pushed as it is never starts
/// so, on disk from an earlier version either.
const COMPRESSED: [u8; 2] = [0xff, 0x01];

/// `payload` compressed (snappy, behind a marker) for [`DurableQueue::push`]: it is held in memory
/// and on disk that way and handed out decompressed by [`DurableQueue::next`], so an exporter never
/// sees the difference. For what a receiver converts into a much larger form (remote-write series
/// of tiny OTLP points repeat their labels, Loki entries their timestamps), so that a queued
/// request takes about its own size. `None` when compressing does not make it smaller.
pub fn compressed(payload: &[u8]) -> Option<Bytes> {
    let mut out = vec![0u8; COMPRESSED.len() + snap::raw::max_compress_len(payload.len())];
    out[..COMPRESSED.len()].copy_from_slice(&COMPRESSED);
    let n = snap::raw::Encoder::new().compress(payload, &mut out[COMPRESSED.len()..]).ok()?;
    // Copied out: the buffer has room for the worst case, which the queue would hold too.
    let out = &out[..COMPRESSED.len() + n];
    (out.len() < payload.len()).then(|| Bytes::copy_from_slice(out))
}

/// A payload as it was before [`compressed`].
fn decompressed(payload: Bytes) -> Result<Bytes, String> {
    match payload.strip_prefix(&COMPRESSED[..]) {
        Some(data) => snap::raw::Decoder::new()
            .decompress_vec(data)
            .map(Bytes::from)
            .map_err(|e| format!("a compressed record cannot be decompressed: {e}")),
        None => Ok(payload),
    }
}

/// One queued batch as handed to the exporter.
#[derive(Debug, Clone)]
pub struct Record {
    /// Position in the queue; pass it back to [`DurableQueue::complete`].
    pub seq: u64,
    pub payload: Bytes,
    /// Samples, entries or spans in the payload.
    pub items: u32,
    /// When it was pushed (for `lgtm_agent_queue_oldest_age_seconds`). After a restart: the replay time.
    pub enqueued_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {name}: {action} {path}: {source}")]
    Io { name: String, action: &'static str, path: String, source: std::io::Error },
    #[error("queue {0} is closed")]
    Closed(String),
    #[error("queue {name}: record of {size} bytes is larger than the queue ({limit} bytes)")]
    TooLarge { name: String, size: usize, limit: u64 },
}

/// A point-in-time view for self-metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Records not yet committed (queued or in flight).
    pub records: usize,
    /// Payload bytes held in memory.
    pub memory_bytes: u64,
    /// Bytes of segment files.
    pub disk_bytes: u64,
    pub oldest_age: Duration,
    /// Records evicted since start.
    pub evicted: u64,
    /// Damaged places found in the segments since start (on replay or reading a record back).
    /// Each one lost at least one record; replay skips the rest of the damaged segment.
    pub corrupt: u64,
}

/// The commit position file and when it was last written.
struct CommitWriter {
    file: CommitFile,
    last_write: Instant,
}

struct Inner {
    opts: QueueOptions,
    state: Mutex<State>,
    /// With a disk.
    commit: Option<Mutex<CommitWriter>>,
    /// Signalled when records are pushed or the queue closes.
    readable: Notify,
    /// Signalled when room is freed.
    writable: Notify,
    /// [`DurableQueue::pause_readers`]: `next` hands out nothing and returns `None`.
    paused: std::sync::atomic::AtomicBool,
}

/// A bounded FIFO of encoded batches with in-order commit. Cheap to clone.
#[derive(Clone)]
pub struct DurableQueue {
    inner: Arc<Inner>,
}

impl DurableQueue {
    /// Opens the queue; with a directory (and `max_disk` > 0), replays what was left uncommitted
    /// there.
    pub fn open(opts: QueueOptions) -> Result<DurableQueue, QueueError> {
        let (state, commit) = match (&opts.dir, opts.max_disk) {
            (Some(dir), max_disk) if max_disk > 0 => {
                let (state, file) = replay::open_dir(&opts, dir)?;
                (state, Some(Mutex::new(CommitWriter { file, last_write: Instant::now() })))
            }
            _ => (State::new(None), None),
        };
        Ok(DurableQueue {
            inner: Arc::new(Inner {
                opts,
                state: Mutex::new(state),
                commit,
                readable: Notify::new(),
                writable: Notify::new(),
                paused: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.opts.name
    }

    fn has_disk(&self) -> bool {
        self.inner.commit.is_some()
    }

    /// The largest record the queue can ever take.
    fn limit(&self) -> u64 {
        let o = &self.inner.opts;
        if self.has_disk() {
            o.max_disk.saturating_sub(segment::HEADER_LEN)
        } else {
            o.max_memory.max(o.max_disk)
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the bookkeeping as consistent as any other point
        // between two statements here; carry on rather than take every exporter down with it.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a record; with `when_full: block` waits for room.
    pub async fn push(&self, payload: Bytes, items: u32, ack: Option<AckSender>) -> Result<(), QueueError> {
        let mut ack = ack;
        loop {
            let writable = self.inner.writable.notified();
            match self.try_push(payload.clone(), items, ack.take()) {
                Ok(()) => return Ok(()),
                Err(PushError::Full(a)) => ack = a,
                Err(PushError::Other(e)) => return Err(e),
            }
            // Room is signalled when records complete or segments go; a full device frees up
            // without a signal, so look again after a while.
            let _ = tokio::time::timeout(state::DEVICE_FULL_RETRY, writable).await;
        }
    }

    /// Appends a record if there is room (or evicts with `drop_oldest`). With a disk the record is
    /// written to its segment when this returns, off the async workers ([`off_the_workers`]).
    pub fn try_push(&self, payload: Bytes, items: u32, ack: Option<AckSender>) -> Result<(), PushError> {
        if self.has_disk() {
            off_the_workers(|| self.push_now(payload, items, ack))
        } else {
            self.push_now(payload, items, ack)
        }
    }

    fn push_now(&self, payload: Bytes, items: u32, ack: Option<AckSender>) -> Result<(), PushError> {
        let limit = self.limit();
        if payload.len() as u64 > limit || u32::try_from(payload.len()).is_err() {
            return Err(PushError::Other(QueueError::TooLarge {
                name: self.name().into(),
                size: payload.len(),
                limit,
            }));
        }
        let mut after = AfterUnlock::default();
        let mut st = self.lock();
        let pushed = if st.closed {
            Err(PushError::Other(QueueError::Closed(self.name().into())))
        } else if st.disk.is_some() {
            st.push_disk(&self.inner.opts, payload, items, ack, &mut after)
        } else {
            st.push_memory(&self.inner.opts, limit, payload, items, ack)
        };
        drop(st);
        self.after_unlock(after);
        pushed?;
        self.inner.readable.notify_waiters();
        self.inner.readable.notify_one();
        Ok(())
    }

    /// Waits for records and returns the next ones in order, at most `max_bytes` / `max_items`
    /// (at least one record even if it alone exceeds them). Returns as soon as a bound is reached,
    /// or once `max_wait` has passed since the first record became available. `None` when the queue
    /// is closed and nothing is left to hand out.
    pub async fn next(&self, max_bytes: usize, max_items: usize, max_wait: Duration) -> Option<Vec<Record>> {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let readable = self.inner.readable.notified();
            if self.inner.paused.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            let picks = {
                let mut st = self.lock();
                let (count, bytes, items) = st.batch_size(max_bytes, max_items);
                let full = bytes >= max_bytes || items >= max_items || st.unsent > count;
                let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if count > 0 && (full || due || st.closed) {
                    Some(st.hand_out(count))
                } else {
                    if count == 0 && st.closed {
                        return None;
                    }
                    if count == 0 {
                        // Another consumer took what this one was waiting to batch: its
                        // deadline is for records no longer here (kept, a passed deadline made
                        // the wait below return at once, over and over, until the next push).
                        deadline = None;
                    }
                    if count > 0 && deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + max_wait);
                    }
                    None
                }
            };
            if let Some(picks) = picks {
                let records = if picks.iter().any(|p| p.payload.is_none()) {
                    // Some payloads are read back from their segments.
                    off_the_workers(|| self.load(picks))
                } else {
                    self.load(picks)
                };
                if !records.is_empty() {
                    return Some(records);
                }
                // Every one was unreadable (and is now completed as such): look again.
                continue;
            }
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, readable).await;
                }
                None => readable.await,
            }
        }
    }

    /// Turns picks into records, reading from disk the payloads not held in memory. A record that
    /// cannot be read back is lost: it is completed as rejected, logged and counted.
    fn load(&self, picks: Vec<Pick>) -> Vec<Record> {
        let mut out = Vec::with_capacity(picks.len());
        for p in picks {
            let payload = match (p.payload, p.on_disk) {
                (Some(payload), _) => Ok(payload),
                (None, Some((file, path, offset))) => segment::read_at(&file, offset, p.seq, p.len)
                    .map(|(_, payload)| payload)
                    .map_err(|e| format!("reading record {} back from {}: {e}", p.seq, path.display())),
                (None, None) => Err(format!("record {} has no payload in memory nor on disk", p.seq)),
            };
            let payload =
                payload.and_then(|payload| decompressed(payload).map_err(|e| format!("record {}: {e}", p.seq)));
            match payload {
                Ok(payload) => out.push(Record { seq: p.seq, payload, items: p.items, enqueued_at: p.enqueued_at }),
                Err(reason) => {
                    tracing::error!(queue = self.name(), %reason, "dropping an unreadable record");
                    metrics::pipeline().dropped.with_label_values(&[self.name(), "corrupt"]).inc_by(u64::from(p.items));
                    self.lock().corrupt += 1;
                    self.complete(p.seq, Delivery::Rejected(format!("queue {}: {reason}", self.name())));
                }
            }
        }
        out
    }

    /// Reports the outcome of a handed-out record. Commits the contiguous completed prefix and
    /// resolves its acknowledgements.
    pub fn complete(&self, seq: u64, outcome: Delivery) {
        let mut after = AfterUnlock::default();
        let mut st = self.lock();
        st.complete(seq, outcome, &mut after);
        let committed = st.committed();
        drop(st);
        self.after_unlock(after);
        self.write_commit(committed);
    }

    /// Hands a record back (e.g. the exporter stopped before sending it): it will be handed out
    /// again, in order.
    pub fn release(&self, seq: u64) {
        if self.lock().release(seq) {
            self.inner.readable.notify_waiters();
        }
    }

    /// Ends the current reader without closing the queue (an exporter replaced on a config
    /// reload): every `next`, waiting or to come, returns `None` and hands out nothing, while
    /// pushes go on. What the reader holds it completes or releases as usual; after
    /// [`DurableQueue::resume_readers`] the next reader goes on from the first record not
    /// completed, in order.
    pub fn pause_readers(&self) {
        self.inner.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.readable.notify_waiters();
    }

    /// Undoes [`DurableQueue::pause_readers`].
    pub fn resume_readers(&self) {
        self.inner.paused.store(false, std::sync::atomic::Ordering::SeqCst);
        self.inner.readable.notify_waiters();
    }

    /// No more pushes; `next` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.readable.notify_waiters();
        self.inner.writable.notify_waiters();
    }

    /// Makes everything uncommitted durable and writes the commit position (a no-op without a
    /// disk). Called at shutdown; also safe at any time.
    pub fn persist(&self) -> Result<(), QueueError> {
        if !self.has_disk() {
            return Ok(());
        }
        off_the_workers(|| self.persist_now())
    }

    fn persist_now(&self) -> Result<(), QueueError> {
        let Some(commit) = &self.inner.commit else { return Ok(()) };
        let (files, committed) = {
            let st = self.lock();
            let files: Vec<_> =
                st.disk.iter().flat_map(|d| d.segments.iter().map(|s| (s.file.clone(), s.path.clone()))).collect();
            (files, st.committed())
        };
        for (file, path) in files {
            file.sync_data().map_err(|e| io_error(self.name(), "syncing", &path, e))?;
        }
        let mut c = commit.lock().unwrap_or_else(|p| p.into_inner());
        c.file.store(committed, true)?;
        c.last_write = Instant::now();
        Ok(())
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        QueueStats {
            records: st.entries.len(),
            memory_bytes: st.memory_bytes,
            disk_bytes: st.disk.as_ref().map_or(0, |d| d.bytes),
            oldest_age: st.entries.front().map(|e| e.enqueued_at.elapsed()).unwrap_or_default(),
            evicted: st.evicted,
            corrupt: st.corrupt,
        }
    }

    /// Writes the commit position if it moved and [`COMMIT_INTERVAL`] has passed since the last write.
    fn write_commit(&self, committed: u64) {
        let Some(commit) = &self.inner.commit else { return };
        let mut c = commit.lock().unwrap_or_else(|p| p.into_inner());
        if committed <= c.file.written() || c.last_write.elapsed() < COMMIT_INTERVAL {
            return;
        }
        c.last_write = Instant::now();
        if let Err(e) = off_the_workers(|| c.file.store(committed, false)) {
            tracing::warn!(error = %e, "writing the commit position failed; a restart may replay more");
        }
    }

    /// File work and wake-ups decided under the lock.
    fn after_unlock(&self, after: AfterUnlock) {
        if let Some((file, path)) = after.sync {
            if let Err(e) = file.sync_data() {
                tracing::warn!(queue = self.name(), path = %path.display(), error = %e, "syncing a finished segment failed");
            }
        }
        if after.freed {
            self.inner.writable.notify_waiters();
        }
    }
}

/// Runs `f`, which does file I/O, without holding up the async tasks of a runtime worker: on a
/// worker of a multi-thread runtime (the agent's), the worker's other tasks move to another
/// thread while `f` runs (`tokio::task::block_in_place`); anywhere else (a blocking-pool thread,
/// outside any runtime, or a current-thread runtime as in unit tests, where nothing can move) `f`
/// just runs.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Why [`DurableQueue::try_push`] did not append.
#[derive(Debug)]
pub enum PushError {
    /// No room; the acknowledgement is handed back.
    Full(Option<AckSender>),
    Other(QueueError),
}
