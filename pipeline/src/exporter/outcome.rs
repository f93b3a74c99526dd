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
