//! Discovery against the fake Kubernetes API server and real local HTTP targets: a
//! ServiceMonitor selecting a Service with three endpoints becomes three scraped targets with
//! the operator's labels; changes apply without restart; deletions stop the targets; two
//! replicas share the targets; the StatefulSet gives the replica count.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use lgtm_integration::eventually;
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_k8s::store::SharedWatch;
use lgtm_pipeline::proto::{TimeSeries, STALE_NAN_BITS};
use lgtm_pipeline::SendError;
use lgtm_scrape::{Batch, SeriesSink, TargetManager};
use lgtm_statefulset::discovery::operator::Defaults;
use lgtm_statefulset::discovery::{self, BuildOptions, DiscoveryOptions, StatusBoard};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<TimeSeries>>>);

impl SeriesSink for Collect {
    async fn send(&self, batch: Batch) -> Result<(), SendError> {
        let series = batch.decode().expect("valid write request");
        self.0.lock().unwrap().extend(series);
        Ok(())
    }
}

impl Collect {
    /// `up` samples per pod label: (value bits of the last sample).
    fn last_up(&self, pod: &str) -> Option<u64> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|s| {
                s.labels.iter().any(|l| l.name == "__name__" && l.value == "up")
                    && s.labels.iter().any(|l| l.name == "pod" && l.value == pod)
            })
            .flat_map(|s| s.samples.iter())
            .last()
            .map(|s| s.value.to_bits())
    }
}

async fn client(server: &FakeApiServer, dir: &Path) -> kube::Client {
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn options(dir: &Path, pod_name: &str, replicas: Option<u32>) -> DiscoveryOptions {
    DiscoveryOptions {
        build: BuildOptions {
            service_monitors: true,
            pod_monitors: true,
            annotations: true,
            defaults: Defaults {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(400),
                body_size_limit: 0,
                sample_limit: 0,
            },
        },
        replicas,
        pod_name: pod_name.into(),
        pod_namespace: "default".into(),
        credentials_dir: dir.join(format!("creds-{pod_name}")),
        debounce: Duration::from_millis(50),
        initial_sync_timeout: Duration::from_secs(5),
    }
}

/// A Service `web` in `shop` with one EndpointSlice per port (all on 127.0.0.1), each endpoint
/// a pod `web-<i>` declaring that port as `metrics`.
fn apply_web(server: &FakeApiServer, ports: &[u16]) {
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"ports": [{"name": "metrics", "port": 80}]}}))
        .unwrap();
    for (i, port) in ports.iter().enumerate() {
        server
            .apply(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "web:1",
                    "ports": [{"name": "metrics", "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": "127.0.0.1"}}))
            .unwrap();
        server
            .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": format!("web-{i}"), "namespace": "shop"}}],
                "ports": [{"name": "metrics", "port": port, "protocol": "TCP"}]}))
            .unwrap();
    }
}

fn service_monitor(relabelings: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "endpoints": [{"port": "metrics", "interval": "500ms", "scrapeTimeout": "400ms", "relabelings": relabelings}]}})
}

fn label_sets<S: SeriesSink>(m: &TargetManager<S>) -> Vec<String> {
    let mut v: Vec<String> = m
        .targets()
        .iter()
        .map(|t| t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_monitor_targets_appear_follow_changes_and_go_stale() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let targets =
        [FakeTarget::start("a 1\n").await, FakeTarget::start("a 2\n").await, FakeTarget::start("a 3\n").await];
    let ports: Vec<u16> = targets.iter().map(|t| t.addr.port()).collect();
    apply_web(&server, &ports);
    server.apply(service_monitor(json!([]))).unwrap();

    let sink = Collect::default();
    let manager = Arc::new(TargetManager::new(sink.clone(), 1));
    let board = Arc::new(StatusBoard::default());
    let stop = CancellationToken::new();
    let client = client(&server, dir.path()).await;
    let pods = SharedWatch::new(client.clone(), stop.clone());
    let task = tokio::spawn(discovery::run(
        client,
        pods,
        options(dir.path(), "", None),
        manager.clone(),
        board.clone(),
        stop.clone(),
    ));

    let want: Vec<String> = {
        let mut v: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!("container=app,endpoint=metrics,instance=127.0.0.1:{p},job=web,namespace=shop,pod=web-{i},service=web")
            })
            .collect();
        v.sort();
        v
    };
    let m = manager.clone();
    eventually(Duration::from_secs(10), "three targets with operator labels", || {
        let got = label_sets(&m);
        let want = want.clone();
        async move { (got == want).then_some(()) }
    })
    .await;
    for i in 0..3 {
        let pod = format!("web-{i}");
        let s = sink.clone();
        eventually(Duration::from_secs(10), "up = 1 for every pod", || {
            let up = s.last_up(&pod);
            async move { (up == Some(1f64.to_bits())).then_some(()) }
        })
        .await;
    }
    let status = board.get().unwrap();
    assert_eq!((status.targets_total, status.targets_here, status.replicas), (3, 3, 1));
    assert_eq!(status.monitors[0].name, "web");
    assert_eq!(manager.targets()[0].source, "serviceMonitor/shop/web/0");

    // A changed `relabelings` applies without restart.
    server.apply(service_monitor(json!([{"targetLabel": "team", "replacement": "shop-team"}]))).unwrap();
    let m = manager.clone();
    eventually(Duration::from_secs(10), "relabeled targets", || {
        let ok = label_sets(&m).iter().filter(|l| l.contains("team=shop-team")).count() == 3;
        async move { ok.then_some(()) }
    })
    .await;

    // A deleted EndpointSlice takes its target away.
    server.delete("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-2").unwrap();
    let m = manager.clone();
    eventually(Duration::from_secs(10), "two targets", || {
        let n = m.targets().len();
        async move { (n == 2).then_some(()) }
    })
    .await;

    // A deleted monitor: no targets, and its series go stale.
    server.delete("monitoring.coreos.com/v1", "ServiceMonitor", "shop", "web").unwrap();
    let m = manager.clone();
    eventually(Duration::from_secs(10), "no targets", || {
        let n = m.targets().len();
        async move { (n == 0).then_some(()) }
    })
    .await;
    let s = sink.clone();
    eventually(Duration::from_secs(10), "stale up of web-0", || {
        let up = s.last_up("web-0");
        async move { (up == Some(STALE_NAN_BITS)).then_some(()) }
    })
    .await;

    stop.cancel();
    task.await.unwrap();
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_targets_disjointly_and_the_statefulset_sets_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    // Nothing listens on these ports: the targets exist (and are down), which is enough here.
    let ports: Vec<u16> = (0..24).map(|i| 20_000 + i).collect();
    apply_web(&server, &ports);
    server.apply(service_monitor(json!([]))).unwrap();
    server
        .apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "lgtm-agent-cluster", "namespace": "default"},
            "spec": {"replicas": 2, "serviceName": "x", "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}))
        .unwrap();

    let stop = CancellationToken::new();
    let mut managers = Vec::new();
    let mut boards = Vec::new();
    for replica in 0..2 {
        let manager = Arc::new(TargetManager::new(Collect::default(), replica));
        let board = Arc::new(StatusBoard::default());
        let client = client(&server, dir.path()).await;
        let pods = SharedWatch::new(client.clone(), stop.clone());
        tokio::spawn(discovery::run(
            client,
            pods,
            options(dir.path(), &format!("lgtm-agent-cluster-{replica}"), None),
            manager.clone(),
            board.clone(),
            stop.clone(),
        ));
        managers.push(manager);
        boards.push(board);
    }
    let (m0, m1) = (managers[0].clone(), managers[1].clone());
    let (a, b) = eventually(Duration::from_secs(10), "both replicas with their share", || {
        let (a, b) = (label_sets(&m0), label_sets(&m1));
        async move { (a.len() + b.len() == 24 && !a.is_empty() && !b.is_empty()).then_some((a, b)) }
    })
    .await;
    let a: BTreeSet<String> = a.into_iter().collect();
    let b: BTreeSet<String> = b.into_iter().collect();
    assert!(a.is_disjoint(&b), "no target scraped twice");
    assert_eq!(a.union(&b).count(), 24, "every target scraped");
    for (i, board) in boards.iter().enumerate() {
        let s = board.get().unwrap();
        assert_eq!((s.replica, s.replicas, s.targets_total), (i as u32, 2, 24));
    }

    // Scaling the StatefulSet to 1: replica 0 takes everything, replica 1 nothing.
    let mut sts = server.get("apps/v1", "StatefulSet", "default", "lgtm-agent-cluster").unwrap();
    sts["spec"]["replicas"] = json!(1);
    server.apply(sts).unwrap();
    let (m0, m1) = (managers[0].clone(), managers[1].clone());
    eventually(Duration::from_secs(10), "replica 0 scrapes everything", || {
        let (a, b) = (m0.targets().len(), m1.targets().len());
        async move { (a == 24 && b == 0).then_some(()) }
    })
    .await;
    stop.cancel();
    for m in managers {
        m.shutdown().await;
    }
}
