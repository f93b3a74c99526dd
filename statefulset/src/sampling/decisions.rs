//! The decisions already made, so spans arriving after a decision follow it. Bounded: the oldest
//! decisions are forgotten first (a span arriving later than that starts a new trace buffer).

use std::collections::{HashMap, VecDeque};

use super::TraceId;

pub struct DecisionCache {
    capacity: usize,
    kept: HashMap<TraceId, bool>,
    order: VecDeque<TraceId>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        let capacity = capacity.max(1);
        DecisionCache { capacity, kept: HashMap::with_capacity(capacity), order: VecDeque::with_capacity(capacity) }
    }

    /// `Some(true)` kept, `Some(false)` dropped, `None` unknown.
    pub fn get(&self, id: &TraceId) -> Option<bool> {
        self.kept.get(id).copied()
    }

    pub fn insert(&mut self, id: TraceId, kept: bool) {
        if self.kept.insert(id, kept).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.kept.remove(&old);
            }
        }
    }
}
