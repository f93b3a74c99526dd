//! Buffers kept between uses and shared by all loops of the process: the bodies scrapes are read
//! into ([`BODIES`]) and the remote-write batches they are encoded into (`encode`'s pool).
//!
//! A loop needs a body buffer only while its scrape runs, and scrapes are spread over the
//! interval, so a few buffers serve hundreds of targets. One buffer per target would keep every
//! target's largest body resident (at 2,000 series a body is about 200 KiB: 10 MiB for 50
//! targets).

//!
//! A buffer kept for longer than [`MAX_IDLE`] without being taken again is freed ([`expire`]):
//! for a few large targets scraped every 30 s (a node's kubelet and cAdvisor), keeping their
//! multi-MiB bodies and batches between scrapes held about 4 MiB resident all the time, to save
//! a few hundred page faults twice a minute. Where scrapes come often (hundreds of targets, short
//! intervals) buffers are taken again well within it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A kept buffer not taken again within this is freed.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(2);

/// Up to `kept` empty buffers; more users at once allocate their own, and a buffer grown beyond
/// `max_capacity` (one huge body or batch) is freed rather than kept.
pub(crate) struct BufferPool {
    kept: usize,
    max_capacity: usize,
    /// Kept buffers and when each was given back.
    buffers: Mutex<Vec<(Vec<u8>, Instant)>>,
}

/// Scrape bodies.
pub(crate) static BODIES: BufferPool = BufferPool::new(4, 8 * 1024 * 1024);

impl BufferPool {
    pub(crate) const fn new(kept: usize, max_capacity: usize) -> BufferPool {
        BufferPool { kept, max_capacity, buffers: Mutex::new(Vec::new()) }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, Instant)>> {
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer of at least `capacity`, a kept one if there is one.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let kept = self.buffers().pop().map(|(buf, _)| buf);
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
        let mut buffers = self.buffers();
        if buffers.len() < self.kept {
            buffers.push((buf, Instant::now()));
        }
    }

    /// Frees the buffers given back more than `max_idle` ago.
    pub(crate) fn expire(&self, max_idle: Duration) {
        let now = Instant::now();
        let expired: Vec<_> = {
            let mut buffers = self.buffers();
            let (old, fresh) = buffers.drain(..).partition(|(_, at)| now.duration_since(*at) > max_idle);
            *buffers = fresh;
            old
        };
        drop(expired);
    }
}

/// Starts the task that frees idle buffers of `pools` every second (see [`MAX_IDLE`]), once per
/// runtime: a second call while it runs does nothing. Called where scrape loops are spawned.
pub(crate) fn start_expiry(pools: &'static [&'static BufferPool]) {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    /// Lets the next runtime start the task again once this one's is dropped.
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }
    let running = Running;
    tokio::spawn(async move {
        let _running = running;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for pool in pools {
                pool.expire(MAX_IDLE);
            }
        }
    });
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

    #[test]
    fn buffers_not_taken_again_within_max_idle_are_freed() {
        let pool = BufferPool::new(2, 1 << 20);
        let give_big = |pool: &BufferPool| {
            let mut b = pool.take(64 * 1024);
            b.push(1);
            pool.give(b);
        };
        give_big(&pool);
        pool.expire(Duration::from_millis(100));
        assert!(pool.take(0).capacity() >= 64 * 1024, "kept: given back just now");
        give_big(&pool);
        std::thread::sleep(Duration::from_millis(150));
        pool.expire(Duration::from_millis(100));
        assert_eq!(pool.take(0).capacity(), 0, "freed: idle for longer than max_idle");
    }
}
