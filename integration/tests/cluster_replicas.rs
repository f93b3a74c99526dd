//! Cluster mode with several replicas, against the fake Kubernetes API server:
//!
//! - the replicas of the StatefulSet share a ServiceMonitor's targets: each target's series are
//!   in exactly one replica's Prometheus, none is missing; scaling the StatefulSet from 2 to 3
//!   moves only targets to the new replica, about a third of them;
//! - the events leader is killed (SIGKILL): the other replica takes over within the lease
//!   duration and ships from where the leader stopped, no event lost, none stored twice.
//!
//! Each replica ships to a receiver of its own (a Prometheus, a fake Loki), so where a series or
//! an event landed says which replica shipped it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_apiserver::events::{seq_of_line, EventTicker};
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::peers::prometheus::Prometheus;
use lgtm_integration::{eventually, free_port, require};
use serde_json::{json, Value};

/// The agent finds the API server through `KUBECONFIG`, as kubectl does: the tests of this
/// binary take turns, so that each agent starts with its own test's value.
static KUBECONFIG_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NAMESPACE: &str = "observability";
const BACKOFF: Backoff = Backoff("100ms", "1s");

/// A cluster-mode replica `lgtm-agent-<ordinal>` of the StatefulSet `lgtm-agent`, with every
/// source off but what the test turns on.
fn replica(dir: &std::path::Path, ordinal: u32, admin: u16) -> AgentConfig {
    AgentConfig::new("c1", &dir.join(format!("data-{ordinal}")), admin)
        .set("mode", "cluster")
        .set("scrape.monitors.pod_name", format!("lgtm-agent-{ordinal}"))
        .set("scrape.monitors.pod_namespace", NAMESPACE)
        .set("tail_sampling.enabled", false)
        .set("cluster_state.enabled", false)
}

fn statefulset(replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "lgtm-agent", "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "serviceName": "lgtm-agent-headless",
            "selector": {"matchLabels": {"app": "lgtm-agent"}},
            "template": {"metadata": {"labels": {"app": "lgtm-agent"}}, "spec": {"containers": []}}}})
}

/// The `instance` of every target whose `up` is 1 in `prom`.
async fn up_instances(prom: &Prometheus) -> BTreeSet<String> {
    prom.query(r#"up{job="web"} == 1"#).await.into_iter().filter_map(|s| s.labels.get("instance").cloned()).collect()
}

/// Waits until each Prometheus has a share of `all`, none empty, whose sizes add up to
/// `all.len()` and whose union is `all`, and returns the shares. (A replica owning none of 30
/// targets happens once in 200,000 runs with three replicas.)
async fn shares(proms: &[&Prometheus], all: &BTreeSet<String>, what: &str) -> Vec<BTreeSet<String>> {
    eventually(Duration::from_secs(30), what, || async {
        let mut out = Vec::new();
        for p in proms {
            out.push(up_instances(p).await);
        }
        let union: BTreeSet<String> = out.iter().flatten().cloned().collect();
        let sum: usize = out.iter().map(BTreeSet::len).sum();
        let every_replica = out.iter().all(|s| !s.is_empty());
        (&union == all && sum == all.len() && every_replica).then_some(out)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_targets_disjointly_and_scaling_moves_a_third() {
    const TARGETS: usize = 30;
    let _turn = KUBECONFIG_ENV.lock().await;
    let proms = [
        require("prometheus", Prometheus::start().await),
        require("prometheus", Prometheus::start().await),
        require("prometheus", Prometheus::start().await),
    ];
    let [Some(p0), Some(p1), Some(p2)] = proms else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();

    let mut targets = Vec::new();
    for i in 0..TARGETS {
        targets.push(FakeTarget::start(&format!("a {i}\n")).await);
    }
    let all: BTreeSet<String> = targets.iter().map(|t| t.addr.to_string()).collect();
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}}, "spec": {}}))
        .unwrap();
    for (i, t) in targets.iter().enumerate() {
        server
            .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "metrics", "port": t.addr.port()}]}))
            .unwrap();
    }
    server
        .apply(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "metrics", "interval": "1s"}]}}))
        .unwrap();
    server.apply(statefulset(2)).unwrap();

    std::env::set_var("KUBECONFIG", &kubeconfig);
    // The replica count comes from the StatefulSet (no `scrape.monitors.replicas`).
    let start = |ordinal: u32, prom: &Prometheus| {
        let admin = free_port();
        let config = replica(dir.path(), ordinal, admin)
            .mimir(&prom.write_url(), BACKOFF)
            .set("scrape.interval", "1s")
            .set("scrape.timeout", "900ms")
            .set("events.enabled", false)
            .yaml();
        let dir = dir.path().to_path_buf();
        async move { AgentProcess::start(&dir, &config, admin).await }
    };
    let mut a0 = start(0, &p0).await;
    let mut a1 = start(1, &p1).await;

    // Two replicas: every target in exactly one of the two Prometheus servers.
    let two = shares(&[&p0, &p1], &all, "two disjoint shares covering every target").await;
    println!("[replicas] 2 replicas: {} + {} of {TARGETS} targets", two[0].len(), two[1].len());
    for (ordinal, agent) in [(0, &a0), (1, &a1)] {
        let body: Value =
            reqwest::get(format!("http://127.0.0.1:{}/targets", agent.admin_port)).await.unwrap().json().await.unwrap();
        let monitor = &body["discovery"]["monitors"][0];
        assert_eq!(monitor["targets_total"], TARGETS, "replica {ordinal}: {monitor}");
        assert_eq!(monitor["targets_here"], two[ordinal].len(), "replica {ordinal}: {monitor}");
    }

    // Scaled to three: the old replicas see the new count, the new one takes its share.
    server.apply(statefulset(3)).unwrap();
    let mut a2 = start(2, &p2).await;
    let three = shares(&[&p0, &p1, &p2], &all, "three disjoint shares covering every target").await;
    println!(
        "[replicas] 3 replicas: {} + {} + {} of {TARGETS} targets",
        three[0].len(),
        three[1].len(),
        three[2].len()
    );
    for old in 0..2 {
        assert!(
            three[old].is_subset(&two[old]),
            "replica {old} only gave targets away: {:?} -> {:?}",
            two[old],
            three[old]
        );
    }
    // Rendezvous hashing: the new replica wins each target with probability 1/3; 2..=20 of 30
    // fails about once in ten thousand runs (binomial tails), any other scheme would show.
    let moved = three[2].len();
    assert!((2..=20).contains(&moved), "moved {moved} of {TARGETS} targets to the third replica");

    for a in [&mut a0, &mut a1, &mut a2] {
        assert!(a.terminate(Duration::from_secs(20)).await.success(), "SIGTERM exits 0:\n{}", a.log());
    }
}

/// The entries at `loki` as Loki stores them: (timestamp, line) per stream, and how often each
/// arrived. Loki keeps an entry pushed twice with the same timestamp and line once.
fn entries(loki: &FakeLoki) -> BTreeMap<(String, i64, String), u32> {
    let mut out = BTreeMap::new();
    for push in &loki.state().pushes {
        for stream in &push.streams {
            for e in &stream.entries {
                let ts = e.timestamp.map(|t| t.unix_nanos()).unwrap_or(0);
                *out.entry((stream.labels.clone(), ts, e.line.clone())).or_default() += 1;
            }
        }
    }
    out
}

/// The `seq` each entry's line carries.
fn seqs(entries: &BTreeMap<(String, i64, String), u32>) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    for ((_, _, line), n) in entries {
        *out.entry(seq_of_line(line).expect("an event line carries its seq")).or_default() += n;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_events_leader_loses_nothing_and_stores_nothing_twice() {
    let _turn = KUBECONFIG_ENV.lock().await;
    // Built before the events are created: a slow build would age them past the lookback.
    tokio::task::spawn_blocking(agent_binary).await.expect("building lgtm-agent");
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(FakeApiServer::start().await.unwrap());
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let lokis = [FakeLoki::start().await, FakeLoki::start().await];
    std::env::set_var("KUBECONFIG", &kubeconfig);

    const LEASE: Duration = Duration::from_secs(3);
    let start = |ordinal: u32, loki: &FakeLoki| {
        let admin = free_port();
        let config = replica(dir.path(), ordinal, admin)
            .loki(&loki.push_url(), BACKOFF)
            .set("scrape.monitors.enabled", false)
            .set("scrape.monitors.replicas", 2)
            .set("events.lease_duration", format!("{}ms", LEASE.as_millis()))
            .set("events.lookback", "10m")
            .yaml();
        let dir = dir.path().to_path_buf();
        async move { AgentProcess::start(&dir, &config, admin).await }
    };

    // Ten events a second for the whole test.
    let ticker = EventTicker::start(server.clone(), Duration::from_millis(100));

    let mut leader = start(0, &lokis[0]).await;
    eventually(Duration::from_secs(20), "the first replica shipping", || async {
        (entries(&lokis[0]).len() >= 10).then_some(())
    })
    .await;
    let mut follower = start(1, &lokis[1]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lokis[1].state().pushes.is_empty(), "the follower ships nothing while the leader holds the lease");

    leader.kill();
    let killed = Instant::now();
    let first_new = eventually(Duration::from_secs(20), "the follower shipping", || async {
        (!lokis[1].state().pushes.is_empty()).then(|| killed.elapsed())
    })
    .await;
    println!("[replicas] events leader killed: the other replica shipped {first_new:.1?} later");
    // Expiry of the lease, plus one retry period of the candidate (a third of the lease), plus
    // the batch wait.
    assert!(first_new < LEASE + LEASE / 3 + Duration::from_secs(3), "takeover took {first_new:?}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = ticker.stop().await;
    eventually(Duration::from_secs(20), "every event shipped", || async {
        let mut all = seqs(&entries(&lokis[0]));
        all.extend(seqs(&entries(&lokis[1])));
        (all.len() as u64 >= events).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (before, after) = (entries(&lokis[0]), entries(&lokis[1]));
    let (seqs_before, seqs_after) = (seqs(&before), seqs(&after));
    // Both replicas shipped some of the same events: only a batch acknowledged by Loki whose
    // position had not reached the Lease yet. Loki keeps such an entry once, as both replicas
    // sent it with the same timestamp and line.
    let both: Vec<u64> = seqs_before.keys().filter(|s| seqs_after.contains_key(s)).copied().collect();
    let stored_twice: Vec<_> = before
        .keys()
        .filter(|k| {
            let (labels, _, line) = k;
            after.keys().any(|(l2, _, line2)| l2 == labels && line2 == line) && !after.contains_key(*k)
        })
        .collect();
    let lost: Vec<u64> = (0..events).filter(|s| !seqs_before.contains_key(s) && !seqs_after.contains_key(s)).collect();
    println!(
        "[replicas] events: created {events}, by the leader {}, by the new leader {}, sent by both {} {both:?}",
        seqs_before.len(),
        seqs_after.len(),
        both.len()
    );
    assert!(lost.is_empty(), "events lost across the failover: {lost:?}\n{}", follower.log());
    assert!(stored_twice.is_empty(), "events that Loki would store twice (other timestamp): {stored_twice:?}");
    // The new leader resumed where the old one's Lease position was: what it sent again is the
    // newest of what the old leader shipped, never older events.
    let newest_of_leader: Vec<u64> = seqs_before.keys().rev().take(both.len()).rev().copied().collect();
    assert_eq!(both, newest_of_leader, "the new leader re-sent only the old one's last, unrecorded events");
    assert!(seqs_before.values().chain(seqs_after.values()).all(|n| *n == 1), "one replica sent an event twice");
    assert!(follower.log().contains("holding the events lease"), "the follower took the lease:\n{}", follower.log());
    assert!(follower.terminate(Duration::from_secs(20)).await.success(), "SIGTERM exits 0");
}
