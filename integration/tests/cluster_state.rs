//! The agent binary in cluster mode with only `cluster_state` on, against the fake Kubernetes API
//! server and a real Prometheus (remote-write receiver): objects created, changed and deleted
//! give kube-state-metrics' series with the right values, label sets are those kube-state-metrics
//! documents, deleted objects' series go stale (gone from instant queries), and of two replicas
//! only the Lease holder emits, the other taking over when it stops.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::peers::prometheus::Prometheus;
use lgtm_integration::{eventually, free_port, require};
use serde_json::{json, Value};

/// Label names per metric as kube-state-metrics' docs (docs/metrics/*/*.md) list them, plus
/// what every series here has: `__name__`, `job` and `cluster`.
const KSM_LABELS: &[(&str, &[&str])] = &[
    ("kube_deployment_status_replicas", &["deployment", "namespace"]),
    ("kube_deployment_status_replicas_available", &["deployment", "namespace"]),
    ("kube_deployment_status_replicas_unavailable", &["deployment", "namespace"]),
    ("kube_deployment_status_replicas_updated", &["deployment", "namespace"]),
    ("kube_deployment_spec_replicas", &["deployment", "namespace"]),
    ("kube_daemonset_status_current_number_scheduled", &["daemonset", "namespace"]),
    ("kube_daemonset_status_desired_number_scheduled", &["daemonset", "namespace"]),
    ("kube_daemonset_status_number_available", &["daemonset", "namespace"]),
    ("kube_daemonset_status_number_misscheduled", &["daemonset", "namespace"]),
    ("kube_daemonset_status_number_ready", &["daemonset", "namespace"]),
    ("kube_daemonset_status_number_unavailable", &["daemonset", "namespace"]),
    ("kube_daemonset_status_updated_number_scheduled", &["daemonset", "namespace"]),
    ("kube_statefulset_status_replicas", &["statefulset", "namespace"]),
    ("kube_statefulset_status_replicas_ready", &["statefulset", "namespace"]),
    ("kube_statefulset_status_replicas_current", &["statefulset", "namespace"]),
    ("kube_statefulset_status_replicas_updated", &["statefulset", "namespace"]),
    ("kube_statefulset_replicas", &["statefulset", "namespace"]),
    ("kube_pod_status_phase", &["namespace", "pod", "uid", "phase"]),
    ("kube_pod_status_ready", &["namespace", "pod", "uid", "condition"]),
    ("kube_pod_container_status_restarts_total", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_waiting_reason", &["namespace", "pod", "uid", "container", "reason"]),
    ("kube_pod_container_resource_requests", &["namespace", "pod", "uid", "container", "node", "resource", "unit"]),
    ("kube_pod_container_resource_limits", &["namespace", "pod", "uid", "container", "node", "resource", "unit"]),
    ("kube_pod_owner", &["namespace", "pod", "uid", "owner_kind", "owner_name", "owner_is_controller"]),
    (
        "kube_pod_info",
        &[
            "namespace",
            "pod",
            "uid",
            "host_ip",
            "pod_ip",
            "node",
            "created_by_kind",
            "created_by_name",
            "priority_class",
            "host_network",
        ],
    ),
    ("kube_node_status_condition", &["node", "condition", "status"]),
    ("kube_node_status_allocatable", &["node", "resource", "unit"]),
    ("kube_node_status_capacity", &["node", "resource", "unit"]),
    (
        "kube_node_info",
        &[
            "node",
            "kernel_version",
            "os_image",
            "container_runtime_version",
            "kubelet_version",
            "kubeproxy_version",
            "provider_id",
            "pod_cidr",
            "system_uuid",
            "internal_ip",
        ],
    ),
    ("kube_namespace_status_phase", &["namespace", "phase"]),
    ("kube_job_status_succeeded", &["namespace", "job_name"]),
    ("kube_job_status_failed", &["namespace", "job_name"]),
    ("kube_job_status_active", &["namespace", "job_name"]),
    ("kube_job_status_start_time", &["namespace", "job_name"]),
    ("kube_job_status_completion_time", &["namespace", "job_name"]),
];

fn agent_config(dir: &Path, cluster: &str, write_url: &str, admin: u16) -> String {
    format!(
        r#"
mode: cluster
cluster: {cluster}
data_dir: {data}
admin: {{ listen: "127.0.0.1:{admin}" }}
exporters:
  mimir:
    url: "{write_url}"
    batch: {{ max_wait: 100ms }}
    retry: {{ initial_backoff: 100ms, max_backoff: 1s }}
  loki: {{ enabled: false }}
  tempo: {{ enabled: false }}
scrape:
  interval: 1s
  monitors: {{ enabled: false }}
otlp: {{ enabled: false }}
tail_sampling: {{ enabled: false }}
events: {{ enabled: false, lease_namespace: observability, lease_duration: 3s }}
cluster_state: {{ enabled: true }}
"#,
        data = dir.join(format!("data-{cluster}")).display()
    )
}

fn objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}, "status": {"phase": "Active"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.1.0.0/24", "providerID": "kind://docker/n1"},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "3800m", "memory": "7Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"},
                    {"type": "DiskPressure", "status": "False"}, {"type": "PIDPressure", "status": "False"},
                    {"type": "NetworkUnavailable", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                "nodeInfo": {"kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12", "containerRuntimeVersion": "containerd://1.7.13",
                    "kubeletVersion": "v1.33.1", "kubeProxyVersion": "v1.33.1", "systemUUID": "uuid-n1", "machineID": "m",
                    "bootID": "b", "operatingSystem": "linux", "architecture": "amd64"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1, "updatedReplicas": 3, "observedGeneration": 1}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "shop"},
            "spec": {"selector": {}, "template": {}},
            "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberReady": 1, "numberMisscheduled": 0,
                "updatedNumberScheduled": 1, "numberAvailable": 1, "numberUnavailable": 0}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {}, "template": {}, "serviceName": "db"},
            "status": {"replicas": 2, "readyReplicas": 1, "currentReplicas": 2, "updatedReplicas": 2}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup", "namespace": "shop"},
            "spec": {"template": {}},
            "status": {"succeeded": 1, "failed": 0, "active": 0,
                "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:05:00Z"}}),
        pod(json!({"waiting": {"reason": "CrashLoopBackOff"}}), 4),
        // No owner: kube-state-metrics (since v2.8) writes empty owner values, i.e. no labels.
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "orphan", "namespace": "shop"},
            "spec": {"selector": {}}}),
    ]
}

fn pod(state: Value, restarts: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "uid-web-1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": "n1", "priorityClassName": "normal",
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
        "status": {"phase": "Running", "hostIP": "172.18.0.2", "podIP": "10.1.0.7",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "restartCount": restarts, "ready": false, "image": "web:1", "imageID": "", "state": state}]}})
}

/// Waits until `promql` answers exactly `want` (one value per series, in any order).
async fn expect_values(prom: &Prometheus, promql: &str, want: &[f64]) {
    let mut want: Vec<f64> = want.to_vec();
    want.sort_by(f64::total_cmp);
    eventually(Duration::from_secs(20), &format!("{promql} == {want:?}"), || async {
        let mut got: Vec<f64> = prom.query(promql).await.iter().map(|s| s.value).collect();
        got.sort_by(f64::total_cmp);
        (got == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_series_follow_objects_and_one_replica_emits() {
    let Some(prom) = require("prometheus", Prometheus::start().await) else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    for o in objects() {
        server.apply(o).unwrap();
    }
    // The only test of this binary: no other thread reads the environment meanwhile.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin_a = free_port();
    let mut a =
        AgentProcess::start(dir.path(), &agent_config(dir.path(), "a", &prom.write_url(), admin_a), admin_a).await;

    // Created: the values of the objects.
    expect_values(&prom, r#"kube_deployment_status_replicas_available{deployment="web",namespace="shop"}"#, &[2.0])
        .await;
    for (q, v) in [
        (r#"kube_deployment_spec_replicas{deployment="web"}"#, 3.0),
        (r#"kube_deployment_status_replicas_unavailable{deployment="web"}"#, 1.0),
        (r#"kube_daemonset_status_desired_number_scheduled{daemonset="agent"}"#, 1.0),
        (r#"kube_statefulset_status_replicas_ready{statefulset="db"}"#, 1.0),
        (r#"kube_statefulset_replicas{statefulset="db"}"#, 2.0),
        (r#"kube_job_status_completion_time{job_name="backup"}"#, 1_714_557_900.0),
        (r#"kube_pod_status_phase{pod="web-1",phase="Running"}"#, 1.0),
        (r#"sum(kube_pod_status_phase{pod="web-1"})"#, 1.0),
        (r#"kube_pod_status_ready{pod="web-1",condition="false"}"#, 1.0),
        (r#"kube_pod_container_status_restarts_total{pod="web-1",container="app"}"#, 4.0),
        (r#"kube_pod_container_status_waiting_reason{pod="web-1",reason="CrashLoopBackOff"}"#, 1.0),
        (r#"kube_pod_container_resource_requests{pod="web-1",resource="cpu",unit="core"}"#, 0.25),
        (r#"kube_pod_container_resource_limits{pod="web-1",resource="memory",unit="byte"}"#, 134_217_728.0),
        (r#"kube_node_status_allocatable{node="n1",resource="cpu",unit="core"}"#, 3.8),
        (r#"kube_node_status_capacity{node="n1",resource="pods",unit="integer"}"#, 110.0),
        (r#"kube_node_status_condition{node="n1",condition="Ready",status="true"}"#, 1.0),
        (r#"count(kube_node_status_condition{node="n1"})"#, 15.0),
        (r#"kube_namespace_status_phase{namespace="shop",phase="Active"}"#, 1.0),
        (
            r#"kube_pod_owner{pod="web-1",owner_kind="ReplicaSet",owner_name="web-5d4f",owner_is_controller="true"}"#,
            1.0,
        ),
        (
            r#"kube_pod_info{pod="web-1",node="n1",host_ip="172.18.0.2",pod_ip="10.1.0.7",created_by_kind="ReplicaSet"}"#,
            1.0,
        ),
        // kube-state-metrics writes `deprecated` whatever the Node says (since v2.14).
        (
            r#"kube_node_info{node="n1",kubelet_version="v1.33.1",internal_ip="172.18.0.2",kubeproxy_version="deprecated"}"#,
            1.0,
        ),
        (r#"kube_replicaset_owner{replicaset="orphan"}"#, 1.0),
    ] {
        expect_values(&prom, q, &[v]).await;
    }
    let orphan = prom.query(r#"kube_replicaset_owner{replicaset="orphan"}"#).await;
    let names: BTreeSet<&str> = orphan[0].labels.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["__name__", "cluster", "job", "namespace", "replicaset"]),
        "an ownerless ReplicaSet has no owner labels: {:?}",
        orphan[0].labels
    );
    // Label sets: exactly kube-state-metrics' documented ones, plus job and cluster.
    for (metric, names) in KSM_LABELS {
        let got = prom.query(&format!(r#"{metric}{{job="kube-state-metrics",cluster="a"}}"#)).await;
        assert!(!got.is_empty(), "{metric} emitted");
        let mut want: BTreeSet<&str> = names.iter().copied().collect();
        want.extend(["__name__", "job", "cluster"]);
        for s in got {
            let have: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(have, want, "{metric}: {:?}", s.labels);
        }
    }

    // Changed: the deployment becomes available, the container runs and restarted once more.
    let mut web = objects()[2].clone();
    web["status"]["availableReplicas"] = json!(3);
    web["status"]["unavailableReplicas"] = json!(0);
    server.apply(web).unwrap();
    server.apply(pod(json!({"running": {"startedAt": "2024-05-01T10:00:00Z"}}), 5)).unwrap();
    expect_values(&prom, r#"kube_deployment_status_replicas_available{deployment="web"}"#, &[3.0]).await;
    expect_values(&prom, r#"kube_pod_container_status_restarts_total{pod="web-1"}"#, &[5.0]).await;
    expect_values(&prom, r#"kube_pod_container_status_waiting_reason{pod="web-1"}"#, &[]).await;

    // Deleted: every series of the object is gone from instant queries at once (stale marker),
    // not after Prometheus' five-minute lookback.
    server.delete("v1", "Pod", "shop", "web-1").unwrap();
    server.delete("apps/v1", "Deployment", "shop", "web").unwrap();
    expect_values(&prom, r#"count({pod="web-1"})"#, &[]).await;
    expect_values(&prom, r#"count({deployment="web"})"#, &[]).await;
    let stale = prom.query_range_samples(r#"kube_pod_info{pod="web-1"}[1m]"#).await;
    assert_eq!(stale.len(), 1, "{stale:?}");
    expect_values(&prom, r#"kube_statefulset_replicas{statefulset="db"}"#, &[2.0]).await;

    // A second replica waits while the first holds the Lease, and takes over when it stops.
    let admin_b = free_port();
    let mut b =
        AgentProcess::start(dir.path(), &agent_config(dir.path(), "b", &prom.write_url(), admin_b), admin_b).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(prom.query(r#"kube_node_info{cluster="b"}"#).await.is_empty(), "the follower emits nothing");
    assert!(a.terminate(Duration::from_secs(20)).await.success(), "the leader exits 0 on SIGTERM");
    expect_values(&prom, r#"kube_node_info{cluster="b",node="n1"}"#, &[1.0]).await;
    assert!(b.log().contains("holding the cluster-state lease"), "{}", b.log());
    assert!(b.terminate(Duration::from_secs(20)).await.success(), "the new leader exits 0 on SIGTERM");
}
