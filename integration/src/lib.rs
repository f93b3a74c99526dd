//! Support for the end-to-end tests and the bench command: the real peers (Prometheus, rotel),
//! small fakes that speak the real wire formats (Loki push, an OTLP trace receiver), and a handle on
//! the `lgtm-agent` binary.
//!
//! A peer that is not installed makes its test skip with a printed reason, except under `CI=true`,
//! where it is a failure: `scripts/install-test-deps.sh` installs every peer.

pub mod agent;
pub mod agent_config;
pub mod bench_cluster_state;
pub mod bench_discovery;
pub mod bench_jaeger;
pub mod bench_logs;
pub mod bench_node;
pub mod bench_outage;
pub mod bench_request_memory;
pub mod bench_scrape;
pub mod bench_traces;
pub mod fake_apiserver;
pub mod fake_loki;
pub mod fake_mimir;
pub mod fake_target;
pub mod otlp_receiver;
pub mod peers;
pub mod procstat;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Serves `app` on `listener` in a task of its own until the sender is used or dropped; the
/// handle ends with it. Every stand-in server of the tests and benches starts this way.
pub fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Whether missing peers must fail instead of skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Skips (returns `None` with a message) or fails (under CI) when a peer is missing.
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    match found {
        Some(t) => Some(t),
        None if in_ci() => panic!("{what} is not installed; scripts/install-test-deps.sh installs it"),
        None => {
            eprintln!("SKIP: {what} is not installed (run scripts/install-test-deps.sh)");
            None
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
