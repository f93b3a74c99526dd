//! The retry delay of everything in the agent that waits out a failing peer: the exporters
//! (Mimir, Loki, Tempo, and their set-up), the trace route to the cluster replicas
//! (`lgtm_pipeline`), the Kubernetes watches and the events shipper (`lgtm_k8s::backoff`, which
//! adds the watches' reset rule and logging). One type, [`Backoff`]: each attempt's ceiling
//! grows exponentially from the initial delay (backon's [`ExponentialBuilder`], factor 2, no
//! limit on attempts) up to the maximum; the delay is drawn from the ceiling with one of two
//! [`Jitter`]s; a peer's own hint (`Retry-After`) is honoured up to the maximum; [`Backoff::reset`]
//! starts again from the initial delay.
//!
//! Its own crate because both users need it and neither depends on the other: `lgtm-pipeline`
//! (exporters, route) does not link kube, and `lgtm-k8s` does not link the pipeline.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

/// How a delay is drawn from the attempt's ceiling (`min(max, initial * 2^n)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`: the maximum stays the longest wait, as the exporters'
    /// `max_backoff` says, and senders that failed together do not retry together.
    Full,
    /// The ceiling plus up to as much again (backon's own jitter): never shorter than the
    /// ceiling, at most twice the maximum. The Kubernetes watches: a resource that keeps failing
    /// costs a known number of requests (about 8 a minute at a 5 s maximum).
    Added,
}

/// Capped exponential backoff with jitter; see the crate doc.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    ceilings: ExponentialBackoff,
    max: Duration,
    jitter: Jitter,
}

impl Clone for Backoff {
    /// A clone starts from the first delay.
    fn clone(&self) -> Backoff {
        Backoff { builder: self.builder, ceilings: self.builder.build(), max: self.max, jitter: self.jitter }
    }
}

impl Backoff {
    /// From `initial` to `max` with [`Jitter::Full`] (a `max` below `initial` is `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(initial, max, Jitter::Full)
    }

    pub fn with_jitter(initial: Duration, max: Duration, jitter: Jitter) -> Backoff {
        let max = max.max(initial);
        let builder =
            ExponentialBuilder::new().with_min_delay(initial).with_max_delay(max).with_factor(2.0).without_max_times();
        Backoff { ceilings: builder.build(), builder, max, jitter }
    }

    /// The delay before the next attempt: drawn from this attempt's ceiling (see [`Jitter`]),
    /// or `hint` (capped at the maximum) when that is longer.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceilings.next().unwrap_or(self.max).min(self.max);
        let jittered = match self.jitter {
            Jitter::Full => Duration::from_nanos(rand::rng().random_range(0..=ceiling.as_nanos() as u64)),
            Jitter::Added => ceiling.saturating_add(ceiling.mul_f64(rand::rng().random::<f64>())),
        };
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
    fn added_jitter_stays_between_the_ceiling_and_twice_it() {
        // Ceilings 100, 200, 400, 800, 1000, 1000 ms; each delay in [ceiling, 2 * ceiling).
        for (attempt, ceiling) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            let ceiling = Duration::from_millis(ceiling);
            let draws: Vec<Duration> = (0..500)
                .map(|_| {
                    let mut b = Backoff::with_jitter(Duration::from_millis(100), Duration::from_secs(1), Jitter::Added);
                    for _ in 0..attempt {
                        b.next_delay(None);
                    }
                    b.next_delay(None)
                })
                .collect();
            assert!(draws.iter().all(|d| *d >= ceiling && *d < ceiling * 2), "attempt {attempt}: {draws:?}");
            let (least, most) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
            assert!(*least < ceiling * 11 / 10 && *most > ceiling * 19 / 10, "attempt {attempt}: {least:?}..{most:?}");
        }
    }

    #[test]
    fn reset_starts_from_the_first_delay_again() {
        for jitter in [Jitter::Full, Jitter::Added] {
            let mut b = Backoff::with_jitter(Duration::from_millis(10), Duration::from_secs(60), jitter);
            for _ in 0..20 {
                b.next_delay(None);
            }
            b.reset();
            let most = if jitter == Jitter::Full { 10 } else { 20 };
            assert!(b.next_delay(None) <= Duration::from_millis(most), "{jitter:?}");
        }
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
