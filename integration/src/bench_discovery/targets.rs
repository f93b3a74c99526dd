//! The scrape targets of the `discovery` bench: one HTTP listener per target, each on its own
//! loopback address (`127.10.x.y`, all on one port), recording when a scrape arrives. A scrape
//! may carry a `gen` query parameter (set by a monitor's relabeling): the first arrival of each
//! `gen` is kept, so the bench sees when a changed monitor's scrape loops are running.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

/// `gen` of a scrape without that parameter.
pub const NO_GEN: u64 = 0;

/// What one target has seen.
#[derive(Debug, Default, Clone)]
pub struct Arrivals {
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// The first arrival of each `gen`.
    pub first_of_gen: HashMap<u64, Instant>,
}

/// The address of target `i`: `127.10.0.1`, `127.10.0.2`, ... (never `.0` nor `.255`).
pub fn address(i: usize) -> Ipv4Addr {
    let (i, host) = (i / 250, (i % 250) as u8 + 1);
    Ipv4Addr::new(127, 10u8.saturating_add((i / 250) as u8), (i % 250) as u8, host)
}

/// The running listeners; dropping it stops them.
pub struct TargetServers {
    pub port: u16,
    arrivals: Arc<Vec<Mutex<Arrivals>>>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct Target {
    index: usize,
    arrivals: Arc<Vec<Mutex<Arrivals>>>,
}

const BODY: &str = "# TYPE bench_up gauge\nbench_up 1\n# TYPE bench_requests_total counter\n\
                    bench_requests_total{code=\"200\"} 17\nbench_requests_total{code=\"500\"} 1\n";

async fn metrics(State(t): State<Target>, Query(query): Query<HashMap<String, String>>) -> &'static str {
    let now = Instant::now();
    let gen = query.get("gen").and_then(|g| g.parse().ok()).unwrap_or(NO_GEN);
    let mut a = t.arrivals[t.index].lock().unwrap_or_else(|p| p.into_inner());
    a.first.get_or_insert(now);
    a.last = Some(now);
    a.first_of_gen.entry(gen).or_insert(now);
    BODY
}

impl TargetServers {
    /// Binds `count` listeners (`address(0)..address(count - 1)`, one port shared by all,
    /// picked so that every bind succeeds) and serves `/metrics` on each.
    pub async fn start(count: usize) -> anyhow::Result<TargetServers> {
        let mut last_error = None;
        for _ in 0..10 {
            let port = crate::free_port();
            match bind_all(count, port).await {
                Ok(listeners) => return Ok(TargetServers::serve(port, listeners)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no port"))).context("binding the target listeners")
    }

    fn serve(port: u16, listeners: Vec<tokio::net::TcpListener>) -> TargetServers {
        let arrivals: Arc<Vec<Mutex<Arrivals>>> =
            Arc::new((0..listeners.len()).map(|_| Mutex::new(Arrivals::default())).collect());
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(index, listener)| {
                let app = Router::new()
                    .route("/metrics", get(metrics))
                    .with_state(Target { index, arrivals: arrivals.clone() });
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            })
            .collect();
        TargetServers { port, arrivals, tasks }
    }

    pub fn first(&self, i: usize) -> Option<Instant> {
        self.arrivals[i].lock().unwrap_or_else(|p| p.into_inner()).first
    }

    pub fn last(&self, i: usize) -> Option<Instant> {
        self.arrivals[i].lock().unwrap_or_else(|p| p.into_inner()).last
    }

    pub fn first_of_gen(&self, i: usize, gen: u64) -> Option<Instant> {
        self.arrivals[i].lock().unwrap_or_else(|p| p.into_inner()).first_of_gen.get(&gen).copied()
    }
}

impl Drop for TargetServers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind_all(count: usize, port: u16) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    for i in 0..count {
        let addr = SocketAddr::from((address(i), port));
        listeners.push(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_hosts() {
        let all: std::collections::HashSet<Ipv4Addr> = (0..70_000).map(address).collect();
        assert_eq!(all.len(), 70_000);
        assert!(all.iter().all(|a| a.is_loopback() && a.octets()[3] != 0 && a.octets()[3] != 255));
        assert_eq!(address(0), Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(address(250), Ipv4Addr::new(127, 10, 1, 1));
    }

    #[tokio::test]
    async fn a_scrape_is_recorded_with_its_gen() {
        let servers = TargetServers::start(2).await.expect("bind");
        let url = format!("http://{}:{}/metrics?gen=7", address(1), servers.port);
        let body = reqwest::get(&url).await.expect("scrape").text().await.expect("body");
        assert!(body.contains("bench_up 1"));
        assert!(servers.first(0).is_none());
        assert!(servers.first_of_gen(1, 7).is_some());
        assert!(servers.first_of_gen(1, NO_GEN).is_none());
        assert_eq!(servers.first(1), servers.last(1));
    }
}
