//! How an exporter accounts for what happened to its items: self-metrics, rate-limited logs of
//! rejections, and the outcome handed back to the queue.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::retry::Decision;
use crate::ack::Delivery;
use crate::metrics;
use crate::queue::{DurableQueue, Record};

/// Lets a message through at most once per period; cheap to clone (clones share the period).
#[derive(Clone, Debug)]
pub struct LogThrottle {
    every: Duration,
    last: Arc<Mutex<Option<Instant>>>,
}

impl LogThrottle {
    pub fn every(every: Duration) -> LogThrottle {
        LogThrottle { every, last: Arc::new(Mutex::new(None)) }
    }

    /// Whether to log now.
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().expect("throttle lock");
        match *last {
            Some(t) if t.elapsed() < self.every => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }
}

/// One exporter's accounting; cheap to clone.
#[derive(Clone, Debug)]
pub struct Reporter {
    exporter: &'static str,
    rejections: LogThrottle,
}

impl Reporter {
    pub fn new(exporter: &'static str) -> Reporter {
        metrics::pipeline().init_exporter(exporter);
        Reporter { exporter, rejections: LogThrottle::every(Duration::from_secs(10)) }
    }

    /// The backend accepted `items` items.
    pub fn delivered(&self, items: u64) {
        metrics::pipeline().sent.with_label_values(&[self.exporter]).inc_by(items);
    }

    /// The backend refused `items` items for good; they are counted as failed and dropped.
    pub fn rejected(&self, items: u64, reason: &str, message: &str) {
        let m = metrics::pipeline();
        m.failed.with_label_values(&[self.exporter, reason]).inc_by(items);
        m.dropped.with_label_values(&[self.exporter, "rejected"]).inc_by(items);
        if self.rejections.allow() {
            tracing::warn!(exporter = self.exporter, %reason, items, %message, "backend rejected a batch; not retrying");
        }
    }

    /// `items` the backend would certainly refuse, dropped before sending: counted as failed
    /// (under the backend's own `reason`) and dropped, without a log (the caller says why).
    pub fn refused_before_sending(&self, items: u64, reason: &str) {
        let m = metrics::pipeline();
        m.failed.with_label_values(&[self.exporter, reason]).inc_by(items);
        m.dropped.with_label_values(&[self.exporter, "rejected"]).inc_by(items);
    }

    /// Some items of an accepted request were refused (OTLP partial success): counted as failed.
    pub fn partially_rejected(&self, items: u64, message: &str) {
        metrics::pipeline().failed.with_label_values(&[self.exporter, "partial_success"]).inc_by(items);
        if self.rejections.allow() {
            tracing::warn!(exporter = self.exporter, items, %message, "backend accepted a batch only in part");
        }
    }

    /// Reports one decision for every record of a request, or hands them back to the queue when
    /// there is none (the exporter is stopping).
    pub fn settle(&self, queue: &DurableQueue, records: &[Record], decision: Option<Decision<()>>) {
        let items: u64 = records.iter().map(|r| r.items as u64).sum();
        match decision {
            None => release(queue, records),
            Some(Decision::Delivered(())) => {
                self.delivered(items);
                for r in records {
                    queue.complete(r.seq, Delivery::Accepted);
                }
            }
            Some(Decision::Rejected { reason, message }) => {
                self.rejected(items, &reason, &message);
                for r in records {
                    queue.complete(r.seq, Delivery::Rejected(message.clone()));
                }
            }
        }
    }
}

/// Hands records back to the queue so they are sent again, in order, later or after a restart.
pub fn release(queue: &DurableQueue, records: &[Record]) {
    for r in records {
        queue.release(r.seq);
    }
}

/// One protobuf message holding every record's content: the three request types are a single
/// repeated field 1, and concatenated encodings of such messages decode as their merge.
pub fn concatenate(records: &[Record]) -> bytes::Bytes {
    if let [only] = records {
        return only.payload.clone();
    }
    let mut out = bytes::BytesMut::with_capacity(records.iter().map(|r| r.payload.len()).sum());
    for r in records {
        out.extend_from_slice(&r.payload);
    }
    out.freeze()
}

/// What became of one piece of a record (a record split over several requests).
#[derive(Debug, Clone)]
pub enum Piece {
    Accepted,
    Rejected(String),
    /// Not sent because the exporter is stopping.
    Abandoned,
}

/// A queue record split over requests (shards, or streams held back): completed when its last piece is settled. Any abandoned
/// piece hands the whole record back to the queue (at-least-once: pieces already accepted may be
/// sent again after a restart); otherwise a rejected piece makes it rejected.
pub struct RecordTracker {
    seq: u64,
    queue: DurableQueue,
    state: Mutex<TrackerState>,
}

struct TrackerState {
    pending: usize,
    rejected: Option<String>,
    abandoned: bool,
}

impl RecordTracker {
    /// A tracker with no piece yet: [`RecordTracker::add_piece`] counts each request that carries
    /// part of the record, all before any of them is sent.
    pub fn new(seq: u64, queue: DurableQueue) -> RecordTracker {
        RecordTracker { seq, queue, state: Mutex::new(TrackerState { pending: 0, rejected: None, abandoned: false }) }
    }

    pub fn add_piece(&self) {
        self.state.lock().expect("tracker lock").pending += 1;
    }

    pub fn piece_done(&self, piece: Piece) {
        let mut st = self.state.lock().expect("tracker lock");
        match piece {
            Piece::Accepted => {}
            Piece::Rejected(m) => {
                st.rejected.get_or_insert(m);
            }
            Piece::Abandoned => st.abandoned = true,
        }
        st.pending -= 1;
        if st.pending > 0 {
            return;
        }
        if st.abandoned {
            self.queue.release(self.seq);
        } else if let Some(m) = st.rejected.take() {
            self.queue.complete(self.seq, Delivery::Rejected(m));
        } else {
            self.queue.complete(self.seq, Delivery::Accepted);
        }
    }
}
