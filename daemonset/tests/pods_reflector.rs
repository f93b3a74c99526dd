//! The pod reflector against the fake Kubernetes API server: only this node's pods, labels as
//! configured, changes followed by the watch, deleted pods kept for a while, and path labels
//! while the API is away.

use std::time::Duration;

use lgtm_config::LogsConfig;
use lgtm_daemonset::logs::{PodInfo, PodMetadata};
use lgtm_daemonset::pods::{PodReflector, SyncState};
use lgtm_integration::fake_apiserver::{FakeApiServer, Options};
use lgtm_integration::{eventually, free_port};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn pod(name: &str, node: &str, uid: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": uid, "labels": labels,
            "annotations": {"example.com/owner": "payments-team"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "shop:1"}]},
    })
}

fn client_for(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("server url"));
    kube::Client::try_from(config).expect("kube client")
}

fn logs_config() -> LogsConfig {
    LogsConfig {
        pod_labels: vec!["team".into(), "app.kubernetes.io/version".into()],
        pod_annotations: vec!["example.com/owner".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn reflects_only_this_nodes_pods_with_the_configured_labels() {
    let server = FakeApiServer::start().await.unwrap();
    server
        .apply(pod(
            "api-0",
            "node-a",
            "uid-api-0",
            json!({"app.kubernetes.io/name": "shop-api", "app": "legacy", "team": "payments", "app.kubernetes.io/version": "1.4"}),
        ))
        .unwrap();
    server.apply(pod("cart-0", "node-a", "uid-cart-0", json!({"app": "cart"}))).unwrap();
    server.apply(pod("far-0", "node-b", "uid-far-0", json!({"app": "far"}))).unwrap();
    let stop = CancellationToken::new();
    let pods = PodReflector::start_with_client(&logs_config(), "node-a", client_for(&server.url()), stop.clone());
    assert!(pods.wait_for_first_list(Duration::from_secs(10)).await, "first list");
    assert_eq!(pods.state(), SyncState::Synced);
    assert_eq!(pods.pods(), 2);
    assert_eq!(
        pods.lookup("shop", "api-0", "uid-api-0"),
        Some(PodInfo {
            app: Some("shop-api".into()),
            extra: vec![
                ("team".into(), "payments".into()),
                ("app_kubernetes_io_version".into(), "1.4".into()),
                ("example_com_owner".into(), "payments-team".into()),
            ],
            excluded: false,
        })
    );
    assert_eq!(pods.lookup("shop", "cart-0", "uid-cart-0").and_then(|i| i.app), Some("cart".into()));
    assert_eq!(pods.lookup("shop", "far-0", "uid-far-0"), None, "a pod of another node is not reflected");
    stop.cancel();
}

#[tokio::test]
async fn follows_pods_added_changed_and_deleted_through_the_watch() {
    let server = FakeApiServer::start().await.unwrap();
    let stop = CancellationToken::new();
    let pods = PodReflector::start_with_client(&logs_config(), "node-a", client_for(&server.url()), stop.clone());
    assert!(pods.wait_for_first_list(Duration::from_secs(10)).await);
    assert_eq!(pods.lookup("shop", "web-0", "uid-web-0"), None);

    server.apply(pod("web-0", "node-a", "uid-web-0", json!({"app": "web"}))).unwrap();
    let app = |p: &PodReflector| p.lookup("shop", "web-0", "uid-web-0").and_then(|i| i.app);
    eventually(Duration::from_secs(10), "the added pod", || async { app(&pods).filter(|a| a == "web") }).await;

    server.apply(pod("web-0", "node-a", "uid-web-0", json!({"app.kubernetes.io/name": "web-v2"}))).unwrap();
    eventually(Duration::from_secs(10), "the changed pod", || async { app(&pods).filter(|a| a == "web-v2") }).await;

    server.delete("v1", "Pod", "shop", "web-0").unwrap();
    eventually(Duration::from_secs(10), "the deletion", || async { (pods.pods() == 0).then_some(()) }).await;
    assert_eq!(app(&pods).as_deref(), Some("web-v2"), "a gone pod's files keep its labels for a while");
    stop.cancel();
}

#[tokio::test]
async fn relists_after_the_watch_is_compacted_away() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(pod("a-0", "node-a", "uid-a-0", json!({"app": "a"}))).unwrap();
    let stop = CancellationToken::new();
    let pods = PodReflector::start_with_client(&logs_config(), "node-a", client_for(&server.url()), stop.clone());
    assert!(pods.wait_for_first_list(Duration::from_secs(10)).await);
    server.compact();
    server.apply(pod("b-0", "node-a", "uid-b-0", json!({"app": "b"}))).unwrap();
    eventually(Duration::from_secs(20), "the pod created around the 410 Gone", || async {
        pods.lookup("shop", "b-0", "uid-b-0").and_then(|i| i.app).filter(|a| a == "b")
    })
    .await;
    assert_eq!(pods.lookup("shop", "a-0", "uid-a-0").and_then(|i| i.app).as_deref(), Some("a"));
    stop.cancel();
}

#[tokio::test]
async fn unreachable_api_gives_path_labels_then_pod_labels_once_it_answers() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let stop = CancellationToken::new();
    let pods = PodReflector::start_with_client(&logs_config(), "node-a", client_for(&url), stop.clone());
    let started = std::time::Instant::now();
    assert!(!pods.wait_for_first_list(Duration::from_secs(10)).await);
    assert!(started.elapsed() < Duration::from_secs(5), "a refused connection ends the wait early");
    assert_eq!(pods.state(), SyncState::Unavailable);
    assert_eq!(pods.lookup("shop", "api-0", "uid-api-0"), None, "path labels while the API is away");

    let server = FakeApiServer::start_on(([127, 0, 0, 1], port).into(), Options::default()).await.unwrap();
    server.apply(pod("api-0", "node-a", "uid-api-0", json!({"app": "api"}))).unwrap();
    eventually(Duration::from_secs(30), "the pod once the API answers", || async {
        pods.lookup("shop", "api-0", "uid-api-0").and_then(|i| i.app)
    })
    .await;
    assert_eq!(pods.state(), SyncState::Synced);
    stop.cancel();
}

#[tokio::test]
async fn no_node_name_means_path_labels_without_waiting() {
    let stop = CancellationToken::new();
    let pods = PodReflector::start_with_client(&logs_config(), "", client_for("http://127.0.0.1:1"), stop.clone());
    let started = std::time::Instant::now();
    assert!(!pods.wait_for_first_list(Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(pods.state(), SyncState::Unavailable);
    stop.cancel();
}
