//! Scrape targets that count what they serve: each answer of target `t` is scrape number `seq`
//! of that target, and carries `seq` itself as the value of `outage_scrape_seq`, so the samples
//! in Prometheus can be matched to the scrapes served. Stopped, they answer 503 (not counted).
//!
//! They answer only on a path of their own ([`Targets::metrics_path`]): other scrapers on this
//! shared machine (a bench whose targets held one of these ports before) get a 404 and use up
//! no scrape number.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

/// Every series name the targets serve starts with this.
pub const PREFIX: &str = "outage_";

/// The series carrying the scrape number.
pub const SEQ_METRIC: &str = "outage_scrape_seq";

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];
const FAMILY_SIZE: usize = 50;

struct Target {
    series: usize,
    served: AtomicU64,
    stopped: Arc<AtomicBool>,
}

pub struct Targets {
    pub addrs: Vec<SocketAddr>,
    /// The path they answer on.
    pub metrics_path: String,
    /// Series in each answer (the scrape number included).
    pub series_per_target: usize,
    targets: Vec<Arc<Target>>,
    stopped: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Targets {
    /// `count` targets on loopback ports sharing `total_series` between them (at least two each).
    pub async fn start(count: usize, total_series: usize) -> anyhow::Result<Targets> {
        let series_per_target = total_series.div_ceil(count.max(1)).max(2);
        let stopped = Arc::new(AtomicBool::new(false));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let metrics_path = format!("/outage-{}-{nanos}/metrics", std::process::id());
        let mut t = Targets {
            addrs: Vec::new(),
            metrics_path,
            series_per_target,
            targets: Vec::new(),
            stopped,
            tasks: Vec::new(),
        };
        for _ in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a target")?;
            t.addrs.push(listener.local_addr()?);
            let target =
                Arc::new(Target { series: series_per_target, served: AtomicU64::new(0), stopped: t.stopped.clone() });
            t.targets.push(target.clone());
            let app = Router::new().route(&t.metrics_path, get(metrics)).with_state(target);
            t.tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        Ok(t)
    }

    /// Scrapes answered so far, per target (in the order of `addrs`).
    pub fn served(&self) -> Vec<u64> {
        self.targets.iter().map(|t| t.served.load(Ordering::Acquire)).collect()
    }

    /// From now on every scrape is answered 503.
    pub fn stop_serving(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn metrics(State(target): State<Arc<Target>>) -> Response {
    if target.stopped.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopped").into_response();
    }
    let seq = target.served.fetch_add(1, Ordering::AcqRel) + 1;
    let mut body = String::with_capacity(target.series * 120);
    render(seq, target.series, &mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Scrape number `seq` of a target with `series` series: the scrape number, then families of
/// 50 counters whose values grow with `seq`.
fn render(seq: u64, series: usize, out: &mut String) {
    out.clear();
    let _ = writeln!(out, "# TYPE {SEQ_METRIC} gauge\n{SEQ_METRIC} {seq}");
    for i in 0..series - 1 {
        let family = i / FAMILY_SIZE;
        if i % FAMILY_SIZE == 0 {
            let _ = writeln!(out, "# TYPE {PREFIX}family_{family}_total counter");
        }
        let _ = writeln!(
            out,
            "{PREFIX}family_{family}_total{{handler=\"/api/v1/items/{}\",method=\"{}\",code=\"{}\",series=\"{i}\"}} {}",
            i % 13,
            METHODS[i % METHODS.len()],
            CODES[i % CODES.len()],
            seq * (i as u64 % 7 + 1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_has_the_series_asked_for_and_its_scrape_number() {
        let mut out = String::new();
        render(42, 120, &mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 120);
        assert_eq!(samples[0], "outage_scrape_seq 42");
        assert!(samples.iter().all(|l| l.starts_with(PREFIX)));
        assert_eq!(out.lines().filter(|l| l.starts_with("# TYPE")).count(), 1 + 3);
    }
}
