//! The queue's bookkeeping, changed only under its lock: the records in order, the segments that
//! hold them on disk, and the bounds.
//!
//! Every method here is synchronous and short. File work that may take long (fsync of a finished
//! segment) is not done here but handed back in [`AfterUnlock`], for the caller to do once the
//! lock is released. Deleting a segment file is done here: its bytes count against `max_disk`
//! until it is gone. Appends are done under the lock, because the order of records in
//! a segment must be the order of their sequence numbers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_config::WhenFull;

use super::commit::io_error;
use super::{segment, PushError, QueueError, QueueOptions};
use crate::ack::{AckSender, Delivery};
use crate::metrics;

/// How long after a full device (ENOSPC) the configured disk limit is tried again, if no segment
/// was deleted meanwhile.
pub(super) const DEVICE_FULL_RETRY: Duration = Duration::from_secs(1);

/// A full device is logged at most this often (it is counted every time).
const DEVICE_FULL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Why an append did not happen.
enum Appending {
    Closed,
    Failed(io::Error, PathBuf),
}

/// ENOSPC (or EDQUOT): the device, not the queue's limit, is full.
fn is_device_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// One record, from push until commit.
pub(super) struct Entry {
    pub seq: u64,
    pub items: u32,
    /// Payload length.
    pub len: usize,
    /// The payload while it is held in memory; `None` when it is only on disk, or once completed.
    pub payload: Option<Bytes>,
    /// Where its frame starts in its segment (with a disk).
    pub offset: u64,
    pub enqueued_at: Instant,
    pub ack: Option<AckSender>,
    pub outcome: Option<Delivery>,
    pub handed_out: bool,
}

impl Entry {
    /// Waiting to be handed out.
    fn unsent(&self) -> bool {
        !self.handed_out && self.outcome.is_none()
    }

    fn in_flight(&self) -> bool {
        self.handed_out && self.outcome.is_none()
    }
}

/// One segment file. It holds the records from `first_seq` up to the next segment's `first_seq`.
pub(super) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes in the file.
    pub size: u64,
    /// Records in it that have no outcome yet. At 0 the file is deleted.
    pub pending: usize,
}

pub(super) struct Disk {
    pub dir: PathBuf,
    /// Oldest first.
    pub segments: VecDeque<Segment>,
    /// Whether the newest segment takes appends (a replayed segment never does).
    pub appending: bool,
    /// Sum of the segments' sizes.
    pub bytes: u64,
    /// The bound in force: `limit`, or less while the device is full (see [`Disk::device_full`]).
    pub max_bytes: u64,
    /// `max_disk` as configured.
    pub limit: u64,
    /// When an append last failed because the device was full (ENOSPC). From then on the bound
    /// in force is what the segments held at that moment, so that `when_full` applies (block, or
    /// evict the oldest) as if the limit were reached; the configured limit is tried again once
    /// a segment is deleted or [`DEVICE_FULL_RETRY`] has passed.
    pub device_full: Option<Instant>,
    /// A segment is finished once the next record would take it past this.
    pub segment_max: u64,
}

impl Disk {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> Disk {
        const MAX_SEGMENT: u64 = 64 * 1024 * 1024;
        Disk {
            dir,
            segments: VecDeque::new(),
            appending: false,
            bytes: 0,
            max_bytes,
            limit: max_bytes,
            device_full: None,
            segment_max: (max_bytes / 8).min(MAX_SEGMENT),
        }
    }

    /// The segment holding record `seq`.
    fn segment_of(&self, seq: u64) -> Option<usize> {
        self.segments.partition_point(|s| s.first_seq <= seq).checked_sub(1)
    }

    fn remove_segment(&mut self, i: usize, after: &mut AfterUnlock) {
        let Some(seg) = self.segments.remove(i) else { return };
        self.bytes -= seg.size;
        self.max_bytes = self.limit;
        if i == self.segments.len() {
            self.appending = false;
        }
        // Deleted here, under the lock, not after it: until the file is gone its bytes are on
        // the disk, and an append in between would take the disk past `max_bytes`.
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "deleting a queue segment failed");
        }
        after.freed = true;
    }
}

pub(super) struct State {
    /// Uncommitted records in sequence order (with gaps where records were evicted).
    pub entries: VecDeque<Entry>,
    pub next_seq: u64,
    pub memory_bytes: u64,
    /// Entries that are [`Entry::unsent`].
    pub unsent: usize,
    pub evicted: u64,
    pub corrupt: u64,
    pub closed: bool,
    /// `None`: memory only.
    pub disk: Option<Disk>,
}

/// Work decided under the lock, to do after releasing it.
#[derive(Default)]
pub(super) struct AfterUnlock {
    /// A finished segment to fsync.
    pub sync: Option<(Arc<File>, PathBuf)>,
    /// Room was made: wake blocked pushers.
    pub freed: bool,
}

/// A record being handed out; the payload is read from disk after the lock is released.
pub(super) struct Pick {
    pub seq: u64,
    pub items: u32,
    pub len: usize,
    pub enqueued_at: Instant,
    pub payload: Option<Bytes>,
    /// The segment file and the frame's offset, when the payload is only on disk.
    pub on_disk: Option<(Arc<File>, PathBuf, u64)>,
}

impl State {
    pub(super) fn new(disk: Option<Disk>) -> State {
        State {
            entries: VecDeque::new(),
            next_seq: 0,
            memory_bytes: 0,
            unsent: 0,
            evicted: 0,
            corrupt: 0,
            closed: false,
            disk,
        }
    }

    /// Every record below this is committed.
    pub(super) fn committed(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// Appends a replayed record (no acknowledgement; it was pushed by an earlier run).
    pub(super) fn push_replayed(&mut self, seq: u64, items: u32, payload: Bytes, offset: u64, max_memory: u64) {
        self.enqueue_on_disk(seq, items, payload, offset, max_memory, None);
    }

    /// Records a record that is in a segment at `offset`, keeping its payload in memory too if
    /// `max_memory` allows.
    fn enqueue_on_disk(
        &mut self,
        seq: u64,
        items: u32,
        payload: Bytes,
        offset: u64,
        max_memory: u64,
        ack: Option<AckSender>,
    ) {
        let len = payload.len();
        let keep = self.memory_bytes + len as u64 <= max_memory;
        if keep {
            self.memory_bytes += len as u64;
        }
        self.entries.push_back(Entry {
            seq,
            items,
            len,
            payload: keep.then_some(payload),
            offset,
            enqueued_at: Instant::now(),
            ack,
            outcome: None,
            handed_out: false,
        });
        self.unsent += 1;
    }

    /// Memory only: evicts single records (oldest not in flight) to stay under `limit`.
    pub(super) fn push_memory(
        &mut self,
        opts: &QueueOptions,
        limit: u64,
        payload: Bytes,
        items: u32,
        ack: Option<AckSender>,
    ) -> Result<(), PushError> {
        let size = payload.len() as u64;
        while self.memory_bytes + size > limit {
            if opts.when_full == WhenFull::Block {
                return Err(PushError::Full(ack));
            }
            let Some(pos) = self.entries.iter().position(Entry::unsent) else {
                return Err(PushError::Full(ack));
            };
            let Some(e) = self.entries.remove(pos) else { break };
            self.unsent -= 1;
            self.evict(&opts.name, e);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.memory_bytes += size;
        self.unsent += 1;
        let len = payload.len();
        self.entries.push_back(Entry {
            seq,
            items,
            len,
            payload: Some(payload),
            offset: 0,
            enqueued_at: Instant::now(),
            ack,
            outcome: None,
            handed_out: false,
        });
        Ok(())
    }

    /// With a disk: appends the record to the newest segment (starting a new one when it is full),
    /// keeping the payload in memory too if `max_memory` allows. At the disk limit, `block` reports
    /// full and `drop_oldest` evicts whole segments, oldest first.
    pub(super) fn push_disk(
        &mut self,
        opts: &QueueOptions,
        payload: Bytes,
        items: u32,
        ack: Option<AckSender>,
        after: &mut AfterUnlock,
    ) -> Result<(), PushError> {
        let frame = segment::frame_len(payload.len());
        if let Some(disk) = self.disk.as_mut() {
            if disk.device_full.is_some_and(|at| at.elapsed() >= DEVICE_FULL_RETRY) {
                disk.max_bytes = disk.limit;
            }
        }
        let (seq, offset) = loop {
            while self.disk.as_ref().is_some_and(|d| d.bytes + frame > d.max_bytes) {
                if opts.when_full == WhenFull::Block || !self.evict_segment(&opts.name, after) {
                    return Err(PushError::Full(ack));
                }
            }
            match self.append(&payload, items, after) {
                Ok(appended) => break appended,
                Err(Appending::Closed) => return Err(PushError::Other(QueueError::Closed(opts.name.clone()))),
                Err(Appending::Failed(e, path)) if is_device_full(&e) => {
                    let Some(disk) = self.disk.as_mut() else { continue };
                    if disk.device_full.is_none_or(|at| at.elapsed() >= DEVICE_FULL_WARN_EVERY) {
                        tracing::warn!(
                            queue = %opts.name, path = %path.display(), held = disk.bytes, limit = disk.limit,
                            when_full = ?opts.when_full,
                            "the queue's disk is full: its bound is what it holds until space frees up"
                        );
                    }
                    metrics::pipeline().queue_device_full.with_label_values(&[&opts.name]).inc();
                    disk.device_full = Some(Instant::now());
                    // `frame` more than what is held is over the bound: the loop above blocks
                    // or evicts, as at the configured limit.
                    disk.max_bytes = disk.bytes;
                }
                Err(Appending::Failed(e, path)) => {
                    return Err(PushError::Other(io_error(&opts.name, "appending to", &path, e)))
                }
            }
        };
        self.enqueue_on_disk(seq, items, payload, offset, opts.max_memory, ack);
        Ok(())
    }

    /// Writes the record's frame to the newest segment (starting a new one when it is finished):
    /// its sequence number and offset there. A failed append spends the sequence number (a
    /// segment's records must be consecutive) and finishes the segment.
    fn append(&mut self, payload: &Bytes, items: u32, after: &mut AfterUnlock) -> Result<(u64, u64), Appending> {
        let frame = segment::frame_len(payload.len());
        let seq = self.next_seq;
        let Some(disk) = self.disk.as_mut() else { return Err(Appending::Closed) };
        if disk.appending {
            if let Some(seg) = disk.segments.back() {
                if seg.size > 0 && seg.size + frame > disk.segment_max {
                    after.sync = Some((seg.file.clone(), seg.path.clone()));
                    disk.appending = false;
                }
            }
        }
        if !disk.appending || disk.segments.is_empty() {
            let path = segment::path(&disk.dir, seq);
            let file = create_segment(&path).map_err(|e| Appending::Failed(e, path.clone()))?;
            disk.segments.push_back(Segment { first_seq: seq, path, file: Arc::new(file), size: 0, pending: 0 });
            disk.appending = true;
        }
        let last = disk.segments.len() - 1;
        let seg = &mut disk.segments[last];
        let offset = seg.size;
        match segment::append(&seg.file, seq, items, payload) {
            Ok(written) => {
                seg.size += written;
                seg.pending += 1;
                disk.bytes += written;
                self.next_seq += 1;
                Ok((seq, offset))
            }
            Err(e) => {
                // Cut off whatever part of the frame reached the file, so the next record starts
                // a new segment.
                let _ = seg.file.set_len(offset);
                let path = seg.path.clone();
                disk.appending = false;
                if seg.pending == 0 {
                    disk.remove_segment(last, after);
                }
                self.next_seq += 1;
                Err(Appending::Failed(e, path))
            }
        }
    }

    /// Evicts every waiting record of the oldest segment that has nothing in flight, and deletes
    /// it. Records already completed there stay until they are committed. `false` when no segment
    /// qualifies.
    fn evict_segment(&mut self, name: &str, after: &mut AfterUnlock) -> bool {
        let Some(disk) = self.disk.as_ref() else { return false };
        let victim = (0..disk.segments.len()).find_map(|i| {
            let lo = disk.segments[i].first_seq;
            let hi = disk.segments.get(i + 1).map_or(self.next_seq, |s| s.first_seq);
            let start = self.entries.partition_point(|e| e.seq < lo);
            let end = self.entries.partition_point(|e| e.seq < hi);
            (!self.entries.range(start..end).any(Entry::in_flight)).then_some((i, start, end))
        });
        let Some((i, start, end)) = victim else { return false };
        let mut rest = self.entries.split_off(start);
        for e in rest.drain(..end - start) {
            if e.outcome.is_some() {
                self.entries.push_back(e);
            } else {
                self.unsent -= 1;
                self.evict(name, e);
            }
        }
        self.entries.append(&mut rest);
        if let Some(disk) = self.disk.as_mut() {
            disk.remove_segment(i, after);
        }
        true
    }

    /// Drops a waiting record to make room: resolved as evicted and counted.
    fn evict(&mut self, name: &str, e: Entry) {
        if let Some(p) = &e.payload {
            self.memory_bytes -= p.len() as u64;
        }
        self.evicted += 1;
        metrics::pipeline().dropped.with_label_values(&[name, "evicted"]).inc_by(u64::from(e.items));
        if let Some(a) = e.ack {
            a.resolve(Delivery::Evicted);
        }
    }

    /// Records the outcome of `seq` (the first one reported wins), deletes its segment once nothing
    /// in it is pending, and commits the contiguous prefix of completed records.
    pub(super) fn complete(&mut self, seq: u64, outcome: Delivery, after: &mut AfterUnlock) {
        if let Some(i) = self.index_of(seq) {
            let e = &mut self.entries[i];
            if e.outcome.is_none() {
                if !e.handed_out {
                    self.unsent -= 1;
                }
                e.outcome = Some(outcome);
                if let Some(p) = e.payload.take() {
                    self.memory_bytes -= p.len() as u64;
                    after.freed = true;
                }
                if let Some(disk) = self.disk.as_mut() {
                    if let Some(s) = disk.segment_of(seq) {
                        let seg = &mut disk.segments[s];
                        seg.pending = seg.pending.saturating_sub(1);
                        if seg.pending == 0 {
                            disk.remove_segment(s, after);
                        }
                    }
                }
            }
        }
        while self.entries.front().is_some_and(|e| e.outcome.is_some()) {
            let Some(e) = self.entries.pop_front() else { break };
            after.freed = true;
            if let (Some(a), Some(o)) = (e.ack, e.outcome) {
                a.resolve(o);
            }
        }
    }

    /// Makes a handed-out record available again. `false` if there was nothing to release.
    pub(super) fn release(&mut self, seq: u64) -> bool {
        let Some(i) = self.index_of(seq) else { return false };
        let e = &mut self.entries[i];
        if !e.in_flight() {
            return false;
        }
        e.handed_out = false;
        self.unsent += 1;
        true
    }

    /// How many of the next waiting records fit in one batch, and their bytes and items.
    pub(super) fn batch_size(&self, max_bytes: usize, max_items: usize) -> (usize, usize, usize) {
        let (mut bytes, mut items, mut count) = (0usize, 0usize, 0usize);
        for e in self.entries.iter().filter(|e| e.unsent()) {
            if count > 0 && (bytes + e.len > max_bytes || items + e.items as usize > max_items) {
                break;
            }
            bytes += e.len;
            items += e.items as usize;
            count += 1;
        }
        (count, bytes, items)
    }

    /// Marks the next `count` waiting records as handed out.
    pub(super) fn hand_out(&mut self, count: usize) -> Vec<Pick> {
        let mut out = Vec::with_capacity(count);
        let disk = self.disk.as_ref();
        for e in self.entries.iter_mut().filter(|e| e.unsent()).take(count) {
            e.handed_out = true;
            let on_disk = match (&e.payload, disk) {
                (None, Some(d)) => d.segment_of(e.seq).map(|s| {
                    let seg = &d.segments[s];
                    (seg.file.clone(), seg.path.clone(), e.offset)
                }),
                _ => None,
            };
            out.push(Pick {
                seq: e.seq,
                items: e.items,
                len: e.len,
                enqueued_at: e.enqueued_at,
                payload: e.payload.clone(),
                on_disk,
            });
        }
        self.unsent -= out.len();
        out
    }
}

/// Opens a new segment for appending. A leftover file of the same name cannot hold a live record
/// (a reopened queue numbers new records past every record left on disk), so it is replaced.
fn create_segment(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().read(true).append(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::warn!(path = %path.display(), "replacing a leftover segment file");
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}
