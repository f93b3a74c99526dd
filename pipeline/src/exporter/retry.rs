//! Sending one request until the backend has decided: retryable failures (HTTP 5xx and 429,
//! connection errors and timeouts, gRPC UNAVAILABLE and the like) are retried without limit with
//! the agent's one backoff policy ([`crate::backoff`]: capped exponential, full jitter,
//! `Retry-After` honoured up to the cap); anything else is final.
//!
//! Data is never given up on a retryable error; the only way out of a retry loop other than a
//! decision is the exporter's stop token, and then the caller hands its records back to the queue.

use std::future::Future;
use std::time::Duration;

use lgtm_config::RetryConfig;
use tokio_util::sync::CancellationToken;

use super::outcome::LogThrottle;
pub use crate::backoff::Backoff;
use crate::metrics;

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// The backend took it; `T` carries what the exporter needs from the answer.
    Delivered(T),
    /// Worth trying again. `retry_after` is the backend's own hint (`Retry-After`).
    Retry { reason: String, detail: String, retry_after: Option<Duration> },
    /// The backend will never take it (`reason` is the metric label, e.g. `http_400`).
    Reject { reason: String, message: String },
}

/// What a request finally came to.
#[derive(Debug, PartialEq)]
pub enum Decision<T> {
    Delivered(T),
    Rejected { reason: String, message: String },
}

/// Keeps running `setup` (a missing certificate file may appear later) until it works or `stop`
/// is cancelled, backing off between failures. An error `is_unconfigured` says means there is
/// nothing to send to: it is logged once and the exporter waits for `stop`.
pub async fn set_up_until_stopped<T, E, Fut>(
    exporter: &'static str,
    max_backoff: Duration,
    stop: &CancellationToken,
    is_unconfigured: impl Fn(&E) -> bool,
    mut setup: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    // What `/readyz` reads (see `crate::health`).
    let health = crate::health::handle(&format!("exporter/{exporter}"));
    loop {
        match setup().await {
            Ok(t) => {
                health.running();
                return Some(t);
            }
            Err(e) if is_unconfigured(&e) => {
                health.failed(e.to_string());
                tracing::error!(exporter, "{e}; nothing is sent");
                stop.cancelled().await;
                return None;
            }
            Err(e) => {
                health.failed(e.to_string());
                let delay = backoff.next_delay(Some(Duration::from_secs(1)));
                tracing::error!(exporter, error = %e, ?delay, "cannot set up the exporter; nothing is sent until this is fixed");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Runs attempts for one exporter until a decision or until `stop`.
#[derive(Clone)]
pub struct Retrier {
    exporter: &'static str,
    retry: RetryConfig,
    stop: CancellationToken,
    throttle: LogThrottle,
}

impl Retrier {
    pub fn new(exporter: &'static str, retry: &RetryConfig, stop: CancellationToken) -> Retrier {
        Retrier { exporter, retry: retry.clone(), stop, throttle: LogThrottle::every(Duration::from_secs(10)) }
    }

    /// Calls `attempt` until it delivers or rejects. `None` when `stop` was cancelled first (an
    /// attempt in progress is abandoned; the backend may or may not have taken it).
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Option<Decision<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut backoff = Backoff::new(self.retry.initial_backoff.get(), self.retry.max_backoff.get());
        loop {
            let outcome = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                a = attempt() => a,
            };
            match outcome {
                Attempt::Delivered(t) => return Some(Decision::Delivered(t)),
                Attempt::Reject { reason, message } => return Some(Decision::Rejected { reason, message }),
                Attempt::Retry { reason, detail, retry_after } => {
                    let delay = backoff.next_delay(retry_after);
                    metrics::pipeline().retries.with_label_values(&[self.exporter]).inc();
                    if self.throttle.allow() {
                        tracing::warn!(exporter = self.exporter, %reason, %detail, ?delay, "request failed; retrying");
                    }
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast_retry() -> RetryConfig {
        RetryConfig {
            initial_backoff: lgtm_config::Duration::from_millis(1),
            max_backoff: lgtm_config::Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_until_delivered() {
        let r = Retrier::new("test", &fast_retry(), CancellationToken::new());
        let calls = AtomicU32::new(0);
        let d = r
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Attempt::Retry { reason: "http_503".into(), detail: String::new(), retry_after: None }
                } else {
                    Attempt::Delivered(7)
                }
            })
            .await;
        assert_eq!(d, Some(Decision::Delivered(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn stop_ends_an_endless_retry() {
        let stop = CancellationToken::new();
        let r = Retrier::new("test", &fast_retry(), stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            stop.cancel();
        });
        let d: Option<Decision<()>> = r
            .run(|| async { Attempt::Retry { reason: "connection".into(), detail: String::new(), retry_after: None } })
            .await;
        assert_eq!(d, None);
    }
}
