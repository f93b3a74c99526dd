//! The `cluster-state` bench workload: a cluster of `--pods` Pods (one container each, requests
//! and limits), `--deployments` Deployments with a ReplicaSet each, and `--nodes` Nodes, served by
//! the in-process fake API server; the release `lgtm-agent` in cluster mode with only
//! `cluster_state` on emits their kube-state-metrics series every `--interval` into a real
//! Prometheus (remote-write receiver).
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- cluster-state [--pods 5000] [--deployments 500] [--nodes 50] [--interval 10s] [--intervals 6]
//! ```
//!
//! Each interval 1% of the Pods change (a restart) and 1% of the Deployments (a replica
//! becomes unavailable), so the watches carry traffic as in a living cluster. After a warm-up
//! (every series at the receiver), it prints per interval the agent's CPU-seconds (utime +
//! stime from `/proc/<pid>/stat`) and RSS (`VmRSS`), then the averages, the peak RSS (`VmHWM`)
//! and the series per interval. This process's own CPU (the fake API server) is not counted.

use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::agent::AgentProcess;
use crate::fake_apiserver::FakeApiServer;
use crate::peers::prometheus::Prometheus;
use crate::procstat::Process;

/// The bench's settings (the subcommand's flags).
#[derive(Debug, Clone)]
pub struct ClusterStateBench {
    pub pods: usize,
    pub deployments: usize,
    pub nodes: usize,
    pub interval: Duration,
    /// Measured intervals, after the warm-up.
    pub intervals: usize,
    /// The `lgtm-agent` binary; `None`: build the workspace's release binary.
    pub agent_bin: Option<PathBuf>,
}

fn node(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
        "spec": {"podCIDR": format!("10.{}.0.0/24", i % 250), "providerID": format!("kind://docker/node-{i}")},
        "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"},
            "allocatable": {"cpu": "15800m", "memory": "62Gi", "pods": "110", "ephemeral-storage": "190Gi"},
            "conditions": (["Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"].iter()
                .map(|c| json!({"type": c, "status": if *c == "Ready" { "True" } else { "False" }, "message": "kubelet is posting ready status"}))
                .collect::<Vec<_>>()),
            "addresses": [{"type": "InternalIP", "address": format!("172.18.{}.{}", i / 250, i % 250 + 2)}, {"type": "Hostname", "address": format!("node-{i}")}],
            "images": ((0..30).map(|k| json!({"names": [format!("registry.example.com/team/app-{k}@sha256:{k:064}")], "sizeBytes": 123_456_789})).collect::<Vec<_>>()),
            "nodeInfo": {"kernelVersion": "6.1.0-18-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.13",
                "kubeletVersion": "v1.33.1", "kubeProxyVersion": "v1.33.1", "systemUUID": format!("uuid-{i}"), "machineID": "m", "bootID": "b",
                "operatingSystem": "linux", "architecture": "amd64"}}})
}

fn deployment(d: usize, replicas: usize, unavailable: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{d}"), "namespace": format!("ns-{}", d % 20), "generation": 1, "labels": {"app": format!("app-{d}")}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": format!("app-{d}")}},
            "template": {"metadata": {"labels": {"app": format!("app-{d}")}}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas - unavailable, "availableReplicas": replicas - unavailable,
            "unavailableReplicas": unavailable, "updatedReplicas": replicas, "observedGeneration": 1,
            "conditions": [{"type": "Available", "status": if unavailable == 0 { "True" } else { "False" }}, {"type": "Progressing", "status": "True"}]}})
}

fn replicaset(d: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("app-{d}-5d4f8"), "namespace": format!("ns-{}", d % 20),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{d}"), "uid": format!("d-{d}"), "controller": true}]},
        "spec": {"selector": {}}})
}

fn pod(p: usize, deployments: usize, nodes: usize, restarts: usize) -> Value {
    let d = p % deployments.max(1);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("app-{d}-5d4f8-{p:05}"), "namespace": format!("ns-{}", d % 20), "uid": format!("uid-{p}"),
            "labels": {"app": format!("app-{d}"), "pod-template-hash": "5d4f8"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{d}-5d4f8"), "uid": format!("rs-{d}"), "controller": true}]},
        "spec": {"nodeName": format!("node-{}", p % nodes.max(1)), "priorityClassName": "normal",
            "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "containers": [{"name": "app", "image": "registry.example.com/app:1",
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]},
        "status": {"phase": "Running", "hostIP": format!("172.18.0.{}", p % nodes.max(1) + 2), "podIP": format!("10.{}.{}.{}", p / 65536 % 250, p / 256 % 256, p % 256),
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}, {"type": "ContainersReady", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "app", "restartCount": restarts, "ready": true, "image": "registry.example.com/app:1",
                "imageID": "registry.example.com/app@sha256:0123", "containerID": format!("containerd://{p:064}"),
                "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}}}]}})
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

pub async fn run(b: ClusterStateBench) -> anyhow::Result<()> {
    let bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let Some(prom) = Prometheus::start().await else {
        bail!("prometheus is not installed (scripts/install-test-deps.sh)")
    };
    let server = FakeApiServer::start().await.context("starting the fake API server")?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let load = Instant::now();
    for ns in 0..20 {
        server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{ns}")}, "status": {"phase": "Active"}}))?;
    }
    for i in 0..b.nodes {
        server.apply(node(i))?;
    }
    let per = |d: usize| b.pods / b.deployments.max(1) + usize::from(d < b.pods % b.deployments.max(1));
    for d in 0..b.deployments {
        server.apply(deployment(d, per(d), 0))?;
        server.apply(replicaset(d))?;
    }
    for p in 0..b.pods {
        server.apply(pod(p, b.deployments, b.nodes, 0))?;
    }
    eprintln!("loaded {} pods, {} deployments, {} nodes in {:?}", b.pods, b.deployments, b.nodes, load.elapsed());

    let admin = crate::free_port();
    let config = format!(
        "mode: cluster\ncluster: bench\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ url: \"{url}\", batch: {{ max_wait: 200ms }} }}\n  loki: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n\
         scrape:\n  interval: {interval}ms\n  monitors: {{ enabled: false }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\nevents: {{ enabled: false, lease_namespace: observability }}\n\
         cluster_state: {{ enabled: true }}\n",
        data = dir.path().join("data").display(),
        url = prom.write_url(),
        interval = b.interval.as_millis(),
    );
    let started = Instant::now();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "warn")];
    let agent = AgentProcess::launch(&bin, dir.path(), &config, admin, &env).await?;
    let pid = agent.pid();

    // Warm-up: every pod's info series at the receiver.
    let count = |q: String| {
        let prom = &prom;
        async move { prom.query(&q).await.first().map(|s| s.value).unwrap_or(0.0) }
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if count(r#"count(kube_pod_info{cluster="bench"})"#.into()).await as usize >= b.pods {
            break;
        }
        if Instant::now() > deadline {
            bail!("the pods' series did not all arrive within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first = started.elapsed();
    let series = count(r#"count({job="kube-state-metrics",cluster="bench"})"#.into()).await;
    println!(
        "cluster-state: {} pods, {} deployments, {} nodes; {} series per interval of {:?}; first complete at the receiver after {:.1?}",
        b.pods, b.deployments, b.nodes, series, b.interval, first
    );
    println!("{:>8} {:>14} {:>10}", "interval", "cpu_seconds", "rss_mib");
    let agent_process = Process::Pid(pid);
    let mut last = agent_process.usage();
    let (mut cpu_sum, mut rss_sum) = (0.0, 0.0);
    let changes = (b.pods / 100).max(1);
    let dep_changes = (b.deployments / 100).max(1);
    for i in 0..b.intervals {
        // Churn: 1% of the pods restart, 1% of the deployments lose a replica.
        for k in 0..changes {
            let p = (i * changes + k) % b.pods.max(1);
            server.apply(pod(p, b.deployments, b.nodes, i + 1))?;
        }
        for k in 0..dep_changes {
            let d = (i * dep_changes + k) % b.deployments.max(1);
            server.apply(deployment(d, per(d), 1))?;
        }
        tokio::time::sleep(b.interval).await;
        let now = agent_process.usage();
        let cpu = now.cpu_seconds - last.cpu_seconds;
        cpu_sum += cpu;
        rss_sum += mib(now.rss_bytes);
        println!("{:>8} {:>14.3} {:>10.1}", i + 1, cpu, mib(now.rss_bytes));
        last = now;
    }
    let n = b.intervals.max(1) as f64;
    let peak = agent_process.peak_rss_bytes();
    let restarted = count(r#"count(kube_pod_container_status_restarts_total{cluster="bench"} > 0)"#.into()).await;
    println!(
        "average: {:.3} CPU-seconds per interval ({:.1}% of one core), RSS {:.1} MiB, peak RSS {:.1} MiB; {:.2} CPU-ms and {:.2} KiB RSS per 1,000 series; restarted pods seen: {}",
        cpu_sum / n,
        100.0 * cpu_sum / n / b.interval.as_secs_f64(),
        rss_sum / n,
        mib(peak),
        1000.0 * cpu_sum / n / (series / 1000.0).max(1.0),
        rss_sum / n * 1024.0 / (series / 1000.0).max(1.0),
        restarted,
    );
    drop(agent);
    server.stop().await;
    Ok(())
}
