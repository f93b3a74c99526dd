//! The one retry policy of the agent's Kubernetes watches (discovery, cluster state, the node's
//! pod index): [`retry_watch`] wraps a `kube` watcher stream (used without kube's own backoff).
//!
//! Why not kube-runtime's `default_backoff()`: it resets on any `Ok` item, and the watcher yields
//! `Event::Init` before every list attempt, so a list that keeps failing (404 for a CRD that is
//! not installed, 403 for a resource the Role does not grant) was retried about once a second
//! forever. Here only proof that the API server serves the watch again resets the backoff (told
//! by `is_recovery`): a completed list (`InitDone`), or a change (`Apply`, `Delete`), which only a
//! running watch delivers. The change matters: after a failed WATCH (the API server restarting)
//! the watcher resumes from its resource version without listing again, so a completed list may
//! never come; a quiet resumed watch is seen recovered at its first change.
//!
//! The policy (measured against a kube-apiserver restart, issue 22), the agent's one backoff
//! type ([`lgtm_backoff::Backoff`], as the exporters'): exponential from 500 ms, factor 2,
//! capped at 5 s, with jitter of up to the delay itself ([`Jitter::Added`], so at most 10 s
//! between attempts). A failing resource costs about 8 requests a minute. When any watch of the process
//! completes a list after failing, the API server is back: every other watch waiting in its
//! backoff retries at once, so all resume within a moment of the first.
//!
//! Logging, the same for every watch: one WARN when a watch starts failing, then at most one WARN
//! per [`WARN_EVERY`] while it keeps failing (with the count of failures), and one INFO "watch
//! recovered" when a list completes again.

use std::sync::LazyLock;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lgtm_backoff::{Backoff, Jitter};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a watch that keeps failing warns again.
pub const WARN_EVERY: Duration = Duration::from_secs(600);

/// The first delay after a failure.
pub const MIN_DELAY: Duration = Duration::from_millis(500);
/// The cap before jitter (jitter adds up to as much again).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Bumped each time a watch completes a list after failing: the API server answers again.
static RECOVERED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// The watches' policy (also the events shipper's and the monitor CRDs' discovery): from
/// [`MIN_DELAY`] doubling to [`MAX_DELAY`] plus jitter, never giving up; only
/// [`Backoff::reset`] restarts it.
pub fn watch_backoff() -> Backoff {
    Backoff::with_jitter(MIN_DELAY, MAX_DELAY, Jitter::Added)
}

/// Tells every watch waiting in its backoff that the API server answers again.
pub fn api_recovered() {
    RECOVERED.send_modify(|n| *n += 1);
}

/// Sleeps `delay`, or less if some watch recovers meanwhile.
async fn sleep_unless_recovered(delay: Duration) {
    let mut recovered = RECOVERED.subscribe();
    recovered.borrow_and_update();
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = recovered.changed() => {}
    }
}

struct State<S> {
    stream: S,
    backoff: Backoff,
    delay: Option<Duration>,
    failing: bool,
    failures: u64,
    warned_at: Option<Instant>,
}

/// Wraps a watcher stream: after an error it waits the backoff before polling the watcher again
/// (which retries); an item proving the watch works again (`is_recovery`: a completed list or
/// a change) resets the backoff. Errors are still yielded (for counters); logging is done here
/// (see the module doc), under the caller's span.
pub fn retry_watch<S, T, E>(stream: S, is_recovery: fn(&T) -> bool) -> impl Stream<Item = Result<T, E>> + Send
where
    S: Stream<Item = Result<T, E>> + Send + Unpin,
    T: Send,
    E: std::fmt::Display + Send,
{
    retry_with(stream, is_recovery, watch_backoff())
}

fn retry_with<S, T, E>(
    stream: S,
    is_recovery: fn(&T) -> bool,
    backoff: Backoff,
) -> impl Stream<Item = Result<T, E>> + Send
where
    S: Stream<Item = Result<T, E>> + Send + Unpin,
    T: Send,
    E: std::fmt::Display + Send,
{
    let state = State { stream, backoff, delay: None, failing: false, failures: 0, warned_at: None };
    futures::stream::unfold(state, move |mut st| async move {
        if let Some(delay) = st.delay.take() {
            sleep_unless_recovered(delay).await;
        }
        let item = st.stream.next().await?;
        match &item {
            Ok(event) if is_recovery(event) => {
                st.backoff.reset();
                if st.failing {
                    tracing::info!(failures = st.failures, "watch recovered");
                    st.failing = false;
                    st.failures = 0;
                    st.warned_at = None;
                    api_recovered();
                }
            }
            Ok(_) => {}
            Err(e) => {
                st.failures += 1;
                let delay = st.backoff.next_delay(None);
                st.delay = Some(delay);
                st.failing = true;
                let now = Instant::now();
                if st.warned_at.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                    tracing::warn!(error = %e, failures = st.failures, retry_in = ?delay, "watch failing; retrying with backoff");
                    st.warned_at = Some(now);
                } else {
                    tracing::debug!(error = %e, failures = st.failures, retry_in = ?delay, "watch still failing");
                }
            }
        }
        Some((item, st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recovery signal is process-wide: the tests that recover or time waits take turns.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = watch_backoff();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay(None)).collect();
        assert!(delays[0] >= MIN_DELAY && delays[0] <= MIN_DELAY * 2, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[8..].iter().all(|d| *d >= MAX_DELAY), "{delays:?}");
        b.reset();
        assert!(b.next_delay(None) <= MIN_DELAY * 2);
    }

    /// After a failed WATCH the watcher resumes without listing: its first change proves the
    /// watch works again, so the next failure starts from the first delay.
    #[tokio::test]
    async fn a_change_after_failures_resets_the_backoff() {
        let _turn = SERIAL.lock().await;
        // 0: Init, 1: InitDone, 2: a change (Apply or Delete). Delays of 20 ms doubling.
        let items = vec![Err("down"), Err("down"), Err("down"), Err("down"), Ok(2u8), Err("down"), Ok(1)];
        let fast = Backoff::with_jitter(Duration::from_millis(20), MAX_DELAY, Jitter::Added);
        let mut s = Box::pin(retry_with(futures::stream::iter(items), |e| *e >= 1, fast));
        for _ in 0..6 {
            s.next().await;
        }
        let started = Instant::now();
        assert_eq!(s.next().await, Some(Ok(1)));
        // 20-40 ms; without the reset the fifth delay, 320-640 ms.
        assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    }

    /// One test (real time, 4-9 s): the recovery signal is process-wide.
    #[tokio::test]
    async fn only_list_done_resets_and_a_recovery_elsewhere_cuts_the_wait() {
        let _turn = SERIAL.lock().await;
        // A watcher whose list keeps failing yields Ok(Init) (here 0) before each attempt.
        let items = futures::stream::iter(vec![Err("403"), Ok(0u8), Err("403"), Ok(0), Err("403"), Ok(0)]);
        let started = Instant::now();
        assert_eq!(retry_watch(items, |e| *e == 1).count().await, 6);
        // 0.5-1 s, 1-2 s, 2-4 s; a reset on every Ok would make it at most 3 s.
        assert!(started.elapsed() >= Duration::from_millis(3400), "{:?}", started.elapsed());

        let items = futures::stream::iter(vec![Err("down"), Err("down"), Ok(0u8)]);
        let mut s = Box::pin(retry_watch(items, |e| *e == 1));
        for _ in 0..2 {
            s.next().await;
        }
        // The second failure waits 1-2 s, unless another watch recovers.
        let started = Instant::now();
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            api_recovered();
        });
        assert!(s.next().await.unwrap().is_ok());
        assert!(started.elapsed() < Duration::from_millis(800), "{:?}", started.elapsed());
    }
}
