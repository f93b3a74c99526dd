//! Membership from DNS: the A (and AAAA) records of the headless Service, resolved every
//! `resolve_every`. A failed lookup keeps the last members (a DNS hiccup must not reroute every
//! trace); an empty answer empties them (no replica is ready).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::TraceRouter;

/// `host:port`, validated once.
#[derive(Debug, Clone)]
pub struct Target(String);

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.trim().trim_start_matches("http://").trim_start_matches("dns:///");
        let (host, port) = s.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| Target(s.to_string()))
    }
}

pub async fn run(router: Arc<TraceRouter>, target: Target, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(router.options.resolve_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        match tokio::net::lookup_host(target.0.as_str()).await {
            Ok(addrs) => {
                let members: Vec<SocketAddr> = addrs.collect();
                if members.is_empty() {
                    tracing::warn!(target = %target.0, "no cluster-mode replica resolved; spans wait");
                }
                router.set_endpoints(members);
            }
            Err(e) => {
                tracing::warn!(target = %target.0, error = %e, "resolving the cluster-mode replicas failed; keeping the last members")
            }
        }
    }
    router.drain(router.options.drain_grace).await;
}
