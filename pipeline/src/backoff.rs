//! The retry delay of every sender that waits out a failing peer: the exporters (Mimir, Loki,
//! Tempo, and their set-up), and the trace route to the cluster replicas. One policy: capped
//! exponential growth (backon's [`ExponentialBuilder`], factor 2, never giving up) with full
//! jitter, and the peer's own hint (`Retry-After`) honoured up to the cap.
//!
//! Full jitter (the n-th delay uniform in `[0, min(max, initial * 2^n)]`) rather than backon's
//! own jitter (which adds up to the delay again, so up to twice the cap): `max_backoff` stays the
//! longest a sender ever waits, as the configuration says, and senders that failed together do
//! not retry together. The Kubernetes watches have their own reset rule on top of backon
//! (`crate::watch_backoff`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

/// Capped exponential backoff with full jitter; see the module doc.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    ceilings: ExponentialBackoff,
    max: Duration,
}

impl Clone for Backoff {
    /// A clone starts from the first delay.
    fn clone(&self) -> Backoff {
        Backoff { builder: self.builder, ceilings: self.builder.build(), max: self.max }
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.max(initial);
        let builder =
            ExponentialBuilder::new().with_min_delay(initial).with_max_delay(max).with_factor(2.0).without_max_times();
        Backoff { ceilings: builder.build(), builder, max }
    }

    /// The delay before the next attempt: uniform up to this attempt's ceiling, or `hint`
    /// (capped at the maximum) when that is longer.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceilings.next().unwrap_or(self.max).min(self.max);
        let jittered = Duration::from_nanos(rand::rng().random_range(0..=ceiling.as_nanos() as u64));
        match hint {
            Some(h) => jittered.max(h.min(self.max)),
            None => jittered,
        }
    }

    /// Back to the first delay (the peer answered).
    pub fn reset(&mut self) {
        self.ceilings = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_delay_is_at_most_initial_and_later_ones_at_most_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(b.next_delay(None) <= Duration::from_millis(100));
        for _ in 0..50 {
            assert!(b.next_delay(None) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        // The largest of many draws approaches each attempt's ceiling: 100, 200, 400, 800, 1000.
        for (attempt, ceiling) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            let most = (0..2000)
                .map(|_| {
                    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
                    for _ in 0..attempt {
                        b.next_delay(None);
                    }
                    b.next_delay(None)
                })
                .max()
                .unwrap();
            assert!(most <= Duration::from_millis(ceiling), "attempt {attempt}: {most:?}");
            assert!(most >= Duration::from_millis(ceiling * 9 / 10), "attempt {attempt}: {most:?}");
        }
    }

    #[test]
    fn reset_starts_from_the_first_delay_again() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(60));
        for _ in 0..20 {
            b.next_delay(None);
        }
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(10));
    }

    #[test]
    fn retry_after_hint_is_honoured_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(5));
        assert!(b.next_delay(Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert_eq!(b.next_delay(Some(Duration::from_secs(3600))), Duration::from_secs(5));
    }

    #[test]
    fn an_initial_delay_above_the_cap_is_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        for _ in 0..10 {
            assert!(b.next_delay(None) <= Duration::from_secs(2));
        }
    }
}
