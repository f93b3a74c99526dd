//! Buffers kept between uses and shared by all loops of the process: the bodies scrapes are read
//! into ([`BODIES`]) and the remote-write batches they are encoded into (`encode`'s pool).
//!
//! A loop needs a body buffer only while its scrape runs, and scrapes are spread over the
//! interval, so a few buffers serve hundreds of targets. One buffer per target would keep every
//! target's largest body resident (at 2,000 series a body is about 200 KiB: 10 MiB for 50
//! targets).

use std::sync::Mutex;

/// Up to `kept` empty buffers; more users at once allocate their own, and a buffer grown beyond
/// `max_capacity` (one huge body or batch) is freed rather than kept.
pub(crate) struct BufferPool {
    kept: usize,
    max_capacity: usize,
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Scrape bodies.
pub(crate) static BODIES: BufferPool = BufferPool::new(4, 8 * 1024 * 1024);

impl BufferPool {
    pub(crate) const fn new(kept: usize, max_capacity: usize) -> BufferPool {
        BufferPool { kept, max_capacity, buffers: Mutex::new(Vec::new()) }
    }

    /// An empty buffer of at least `capacity`, a kept one if there is one.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let kept = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = kept.unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    /// Keeps `buf` for the next user (or frees it when enough are kept or it is too large).
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        if buffers.len() < self.kept {
            buffers.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_oversized_ones_are_freed() {
        let pool = BufferPool::new(1, 1024);
        let mut big = Vec::with_capacity(1025);
        big.push(1u8);
        pool.give(big);
        assert_eq!(pool.take(0).capacity(), 0, "an oversized buffer is not kept");
        let mut small = pool.take(10);
        assert!(small.capacity() >= 10);
        small.extend_from_slice(b"body");
        let (ptr, second) = (small.as_ptr(), vec![0u8; 8]);
        pool.give(small);
        pool.give(second);
        let again = pool.take(0);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the first buffer given back is kept, the one over `kept` freed");
        assert_eq!(pool.take(0).capacity(), 0);
    }
}
