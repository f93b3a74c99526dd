//! Discovery and cluster state read one Pod watch (`lgtm_k8s::store::SharedWatch`): against the
//! fake API server, two subscribers cost one LIST of Pods, both see every change, and the watch
//! stops with the last subscription (a new one lists again).

use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use lgtm_integration::eventually;
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_k8s::objects::PodInfo;
use lgtm_k8s::store::SharedWatch;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "restartCount": 2, "ready": true,
            "image": "i", "imageID": "", "state": {"running": {}}}]}})
}

/// LISTs of Pods the server answered so far.
fn pod_lists(server: &FakeApiServer) -> usize {
    server.calls().iter().filter(|c| c.verb == "list" && c.resource == "pods").count()
}

#[tokio::test]
async fn two_readers_share_one_pod_watch_until_the_last_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    server.apply(pod("a")).unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&path).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let stop = CancellationToken::new();
    let pods: Arc<SharedWatch<PodInfo>> = SharedWatch::new(client, stop.clone());

    // Discovery (woken on changes) and cluster state (reads each interval).
    let changed = Arc::new(Notify::new());
    let discovery = pods.subscribe(Some(&changed));
    let cluster_state = pods.subscribe(None);
    tokio::time::timeout(Duration::from_secs(10), cluster_state.wait_until_ready()).await.expect("listed");
    let names = |s: &lgtm_k8s::store::CompactStore<PodInfo>| {
        let mut n: Vec<String> = s.state().iter().map(|p| p.meta.name().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&discovery), ["a"]);
    assert_eq!(cluster_state.state()[0].statuses[0].restarts, 2, "the cluster-state fields are read");
    assert_eq!(pod_lists(&server), 1, "one list for both readers");

    // A change reaches both, and wakes discovery (after the wake-up of the first list).
    tokio::time::timeout(Duration::from_secs(1), changed.notified()).await.expect("woken by the list");
    let woken = changed.notified();
    server.apply(pod("b")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), woken).await.expect("discovery woken");
    eventually(Duration::from_secs(10), "both see the new pod", || {
        let done = names(&discovery) == ["a", "b"] && names(&cluster_state) == ["a", "b"];
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(pod_lists(&server), 1);

    // Cluster state lets go (Lease lost): discovery's watch goes on, no new list.
    drop(cluster_state);
    let again = pods.subscribe(None);
    again.wait_until_ready().await;
    assert_eq!(names(&again), ["a", "b"]);
    assert_eq!(pod_lists(&server), 1, "a subscriber while the watch runs does not list");
    // The last one lets go: the watch stops; the next subscriber starts (and lists) anew.
    drop((discovery, again));
    let fresh = pods.subscribe(None);
    tokio::time::timeout(Duration::from_secs(10), fresh.wait_until_ready()).await.expect("listed again");
    assert_eq!(names(&fresh), ["a", "b"]);
    assert_eq!(pod_lists(&server), 2);
    stop.cancel();
    server.stop().await;
}
