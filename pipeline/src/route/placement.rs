//! Rendezvous (highest random weight) hashing: a trace belongs to the member whose hash with the
//! trace ID is highest. Every daemonset pod computes the same owner from the same member list,
//! and removing a member moves only that member's traces.

use xxhash_rust::xxh3::Xxh3;

/// The index in `members` of the owner of `trace_id`; 0 when `members` is empty.
pub fn owner(trace_id: &[u8], members: &[String]) -> usize {
    let mut best = (0usize, 0u64);
    for (i, m) in members.iter().enumerate() {
        let mut h = Xxh3::new();
        h.update(trace_id);
        h.update(m.as_bytes());
        let score = h.digest();
        if i == 0 || score > best.1 {
            best = (i, score);
        }
    }
    best.0
}
