//! Membership from DNS: the A (and AAAA) records of the headless Service, resolved every
//! `resolve_every`. A failed lookup keeps the last members (a DNS hiccup must not reroute every
//! trace); an empty answer empties them (no replica is ready).
//!
//! The target may also be a comma-separated list of `host:port` (several Services, or fixed
//! replica addresses, e.g. two replicas on one machine); the members are the union of their
//! records, and any one lookup failing keeps the last members.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::TraceRouter;

/// One or more `host:port`, validated once.
#[derive(Debug, Clone, PartialEq)]
pub struct Target(Vec<String>);

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        let entries = s
            .split(',')
            .map(|entry| {
                let entry = entry.trim().trim_start_matches("http://").trim_start_matches("dns:///");
                let (host, port) = entry.rsplit_once(':')?;
                (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| entry.to_string())
            })
            .collect::<Option<Vec<String>>>()?;
        Some(Target(entries))
    }

    /// Every address of every entry; an error if one lookup failed.
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut members = Vec::new();
        for entry in &self.0 {
            members.extend(tokio::net::lookup_host(entry.as_str()).await?);
        }
        Ok(members)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
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
        match target.resolve().await {
            Ok(members) => {
                if members.is_empty() {
                    tracing::warn!(target = %target, "no cluster-mode replica resolved; spans wait");
                }
                router.set_endpoints(members);
            }
            Err(e) => {
                tracing::warn!(target = %target, error = %e, "resolving the cluster-mode replicas failed; keeping the last members")
            }
        }
    }
    router.drain(router.options.drain_grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_one_or_more_host_ports() {
        let one = Target::parse("lgtm-agent-cluster-headless.observability.svc:4317").unwrap();
        assert_eq!(one, Target(vec!["lgtm-agent-cluster-headless.observability.svc:4317".into()]));
        let two = Target::parse("127.0.0.1:4317, http://127.0.0.1:4318").unwrap();
        assert_eq!(two, Target(vec!["127.0.0.1:4317".into(), "127.0.0.1:4318".into()]));
        assert_eq!(two.to_string(), "127.0.0.1:4317,127.0.0.1:4318");
        for bad in ["", "host", ":4317", "host:port", "a:1,", "a:1,b"] {
            assert_eq!(Target::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_members_are_every_address_of_every_entry() {
        let t = Target::parse("127.0.0.1:4317,localhost:4318").unwrap();
        let members = t.resolve().await.unwrap();
        assert!(members.contains(&"127.0.0.1:4317".parse().unwrap()), "{members:?}");
        assert!(members.iter().any(|m| m.port() == 4318 && m.ip().is_loopback()), "{members:?}");
    }
}
