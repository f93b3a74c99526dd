//! The buffers scrape bodies are read into, shared by all loops of the process.
//!
//! A loop needs a buffer only while its scrape runs, and scrapes are spread over the interval,
//! so a few buffers serve hundreds of targets. One buffer per target would keep every target's
//! largest body resident (at 2,000 series a body is about 200 KiB: 10 MiB for 50 targets).

use std::sync::Mutex;

/// Buffers kept between scrapes; more scrapes at once allocate their own.
const POOLED: usize = 4;
/// A buffer grown beyond this (one huge body) is freed rather than kept.
const MAX_POOLED_CAPACITY: usize = 8 * 1024 * 1024;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer, with the capacity of an earlier body if one is free.
pub(crate) fn take() -> Vec<u8> {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
}

/// Returns a buffer for the next scrape (or frees it when the pool is full or it is too large).
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOLED {
        pool.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_oversized_ones_are_freed() {
        let mut big = Vec::with_capacity(MAX_POOLED_CAPACITY + 1);
        big.push(1u8);
        give(big);
        let mut small = take();
        // Other tests of the crate may share the pool: what comes back is empty and not huge.
        assert!(small.is_empty() && small.capacity() <= MAX_POOLED_CAPACITY);
        small.extend_from_slice(b"body");
        give(small);
        let again = take();
        assert!(again.is_empty());
    }
}
