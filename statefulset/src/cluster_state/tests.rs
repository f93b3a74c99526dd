//! Objects -> exact series and values, one row per object kind, and the staleness diff.

use std::collections::BTreeMap;
use std::sync::Arc;

use lgtm_pipeline::proto::WriteRequest;
use prost::Message;
use serde_json::json;

use super::frame::Frame;
use super::*;

type Series = BTreeMap<String, f64>;

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    l.push(("job", JOB));
    l.sort();
    let body: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", body.join(","))
}

fn decode(requests: &[(bytes::Bytes, u32)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (bytes, samples) in requests {
        let w = WriteRequest::decode(bytes.clone()).expect("frame encodes a WriteRequest");
        assert_eq!(w.timeseries.len(), *samples as usize);
        for ts in w.timeseries {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "labels sorted");
            let name = ts.labels.iter().find(|l| l.name == "__name__").map(|l| l.value.clone()).unwrap_or_default();
            let labels: Vec<(&str, &str)> = ts
                .labels
                .iter()
                .filter(|l| l.name != "__name__" && l.name != "job")
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            assert_eq!(ts.samples.len(), 1);
            out.push((key(&name, &labels), ts.samples[0].value));
        }
    }
    out
}

/// The requests of one interval, at most `max` series each (`previous`: the snapshot of the
/// interval before, for the staleness markers).
fn requests_of(
    snapshot: &Snapshot,
    previous: Option<&Snapshot>,
    timestamp_ms: i64,
    max: usize,
) -> Vec<(bytes::Bytes, u32)> {
    let mut f = Frame::new(vec![("job".into(), JOB.into())], timestamp_ms, max);
    render_interval(snapshot, previous, &mut f);
    f.finish().0
}

fn series_of(snapshot: &Snapshot) -> Series {
    let decoded = decode(&requests_of(snapshot, None, 1_000, 7));
    let map: Series = decoded.iter().cloned().collect();
    assert_eq!(map.len(), decoded.len(), "no series twice");
    map
}

/// An object as the watch reads it into its compact type.
fn obj<T: lgtm_k8s::objects::Compact>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value::<lgtm_k8s::objects::Watched<T>>(v).expect("a valid object").into_info())
}

fn pod_obj(v: serde_json::Value) -> Arc<PodInfo> {
    obj(v)
}

/// (metric, labels, value).
type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

fn expect(rows: &[Row]) -> Series {
    rows.iter().map(|(n, l, v)| (key(n, l), *v)).collect()
}

fn assert_series(got: &Series, want: &Series) {
    let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing or different: {missing:#?}\nextra: {extra:#?}\ngot: {got:#?}"
    );
}

#[test]
fn deployment_series() {
    let snapshot = Snapshot {
        deployments: vec![obj(json!({
            "metadata": {"name": "web", "namespace": "shop", "generation": 4},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1,
                "updatedReplicas": 3, "observedGeneration": 4,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                    {"type": "Progressing", "status": "True", "reason": "SomethingElse"},
                    {"type": "ReplicaFailure", "status": "True"}
                ]}
        }))],
        ..Default::default()
    };
    let l: &[(&str, &str)] = &[("namespace", "shop"), ("deployment", "web")];
    // kube-state-metrics: `reason` (a reason the deployment controller sets, else `unknown`;
    // none is an empty value, i.e. no label), `condition`, `status`.
    let cond = |condition: &'static str, reason: &'static str, status: &'static str| {
        let mut l = vec![("namespace", "shop"), ("deployment", "web"), ("condition", condition), ("status", status)];
        if !reason.is_empty() {
            l.push(("reason", reason));
        }
        l
    };
    let available = "MinimumReplicasUnavailable";
    let (t, f, u) = (
        cond("Available", available, "true"),
        cond("Available", available, "false"),
        cond("Available", available, "unknown"),
    );
    let (pt, pf, pu) = (
        cond("Progressing", "unknown", "true"),
        cond("Progressing", "unknown", "false"),
        cond("Progressing", "unknown", "unknown"),
    );
    let (rt, rf, ru) = (
        cond("ReplicaFailure", "", "true"),
        cond("ReplicaFailure", "", "false"),
        cond("ReplicaFailure", "", "unknown"),
    );
    assert_series(
        &series_of(&snapshot),
        &expect(&[
            ("kube_deployment_status_replicas", l, 3.0),
            ("kube_deployment_status_replicas_ready", l, 2.0),
            ("kube_deployment_status_replicas_available", l, 2.0),
            ("kube_deployment_status_replicas_unavailable", l, 1.0),
            ("kube_deployment_status_replicas_updated", l, 3.0),
            ("kube_deployment_status_observed_generation", l, 4.0),
            ("kube_deployment_metadata_generation", l, 4.0),
            ("kube_deployment_spec_replicas", l, 3.0),
            ("kube_deployment_spec_paused", l, 0.0),
            ("kube_deployment_status_condition", &t, 0.0),
            ("kube_deployment_status_condition", &f, 1.0),
            ("kube_deployment_status_condition", &u, 0.0),
            ("kube_deployment_status_condition", &pt, 1.0),
            ("kube_deployment_status_condition", &pf, 0.0),
            ("kube_deployment_status_condition", &pu, 0.0),
            ("kube_deployment_status_condition", &rt, 1.0),
            ("kube_deployment_status_condition", &rf, 0.0),
            ("kube_deployment_status_condition", &ru, 0.0),
        ]),
    );
}

#[test]
fn daemonset_statefulset_replicaset_series() {
    let snapshot = Snapshot {
        daemonsets: vec![obj(json!({
            "metadata": {"name": "agent", "namespace": "obs", "generation": 2},
            "spec": {"selector": {}, "template": {}},
            "status": {"currentNumberScheduled": 5, "desiredNumberScheduled": 6, "numberReady": 4,
                "numberMisscheduled": 1, "updatedNumberScheduled": 5, "numberAvailable": 4,
                "numberUnavailable": 2, "observedGeneration": 2}
        }))],
        statefulsets: vec![obj(json!({
            "metadata": {"name": "db", "namespace": "obs", "generation": 1},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "db"},
            "status": {"replicas": 3, "readyReplicas": 2, "currentReplicas": 3, "updatedReplicas": 1,
                "availableReplicas": 2, "observedGeneration": 1, "currentRevision": "db-1", "updateRevision": "db-2"}
        }))],
        replicasets: vec![obj(json!({
            "metadata": {"name": "web-5d4f", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}]}
        }))],
        ..Default::default()
    };
    let d: &[(&str, &str)] = &[("namespace", "obs"), ("daemonset", "agent")];
    let s: &[(&str, &str)] = &[("namespace", "obs"), ("statefulset", "db")];
    assert_series(
        &series_of(&snapshot),
        &expect(&[
            ("kube_daemonset_status_current_number_scheduled", d, 5.0),
            ("kube_daemonset_status_desired_number_scheduled", d, 6.0),
            ("kube_daemonset_status_number_ready", d, 4.0),
            ("kube_daemonset_status_number_misscheduled", d, 1.0),
            ("kube_daemonset_status_updated_number_scheduled", d, 5.0),
            ("kube_daemonset_status_number_available", d, 4.0),
            ("kube_daemonset_status_number_unavailable", d, 2.0),
            ("kube_daemonset_status_observed_generation", d, 2.0),
            ("kube_daemonset_metadata_generation", d, 2.0),
            ("kube_statefulset_status_replicas", s, 3.0),
            ("kube_statefulset_status_replicas_ready", s, 2.0),
            ("kube_statefulset_status_replicas_current", s, 3.0),
            ("kube_statefulset_status_replicas_updated", s, 1.0),
            ("kube_statefulset_status_replicas_available", s, 2.0),
            ("kube_statefulset_status_observed_generation", s, 1.0),
            ("kube_statefulset_metadata_generation", s, 1.0),
            ("kube_statefulset_replicas", s, 3.0),
            ("kube_statefulset_status_current_revision", &[s[0], s[1], ("revision", "db-1")], 1.0),
            ("kube_statefulset_status_update_revision", &[s[0], s[1], ("revision", "db-2")], 1.0),
            (
                "kube_replicaset_owner",
                &[
                    ("namespace", "shop"),
                    ("replicaset", "web-5d4f"),
                    ("owner_kind", "Deployment"),
                    ("owner_name", "web"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
        ]),
    );
}

#[test]
fn job_series() {
    let snapshot = Snapshot {
        jobs: vec![obj(json!({
            "metadata": {"name": "backup", "namespace": "ops"},
            "spec": {"template": {}, "completions": 1},
            "status": {"succeeded": 1, "failed": 2, "active": 0,
                "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:05:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }))],
        ..Default::default()
    };
    let l: &[(&str, &str)] = &[("namespace", "ops"), ("job_name", "backup")];
    let c = |v| [l[0], l[1], ("condition", v)];
    assert_series(
        &series_of(&snapshot),
        &expect(&[
            ("kube_job_status_succeeded", l, 1.0),
            ("kube_job_status_failed", l, 2.0),
            ("kube_job_status_active", l, 0.0),
            ("kube_job_status_start_time", l, 1_714_557_600.0),
            ("kube_job_status_completion_time", l, 1_714_557_900.0),
            ("kube_job_spec_completions", l, 1.0),
            ("kube_job_complete", &c("true"), 1.0),
            ("kube_job_complete", &c("false"), 0.0),
            ("kube_job_complete", &c("unknown"), 0.0),
            // kube-state-metrics writes empty owner values for a Job without owner: no labels.
            ("kube_job_owner", l, 1.0),
        ]),
    );
}

#[test]
fn job_status_failed_has_kube_state_metrics_reasons() {
    let job = |name: &str, failed: i32, conditions: serde_json::Value| {
        obj(json!({
            "metadata": {"name": name, "namespace": "ops",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "c-1", "controller": true}]},
            "spec": {"template": {}},
            "status": {"failed": failed, "conditions": conditions}
        }))
    };
    let snapshot = Snapshot {
        jobs: vec![
            job("backoff", 6, json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])),
            job("odd", 1, json!([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}])),
            job("running", 2, json!([])),
            job("fine", 0, json!([{"type": "Failed", "status": "False", "reason": "DeadlineExceeded"}])),
        ],
        ..Default::default()
    };
    let got: Series =
        series_of(&snapshot).into_iter().filter(|(k, _)| k.starts_with("kube_job_status_failed{")).collect();
    let l = |job: &'static str| [("namespace", "ops"), ("job_name", job)];
    let r = |job: &'static str, reason: &'static str| [("namespace", "ops"), ("job_name", job), ("reason", reason)];
    assert_series(
        &got,
        &expect(&[
            // A known reason: one series per known reason, 1 for the Job's.
            ("kube_job_status_failed", &r("backoff", "BackoffLimitExceeded"), 1.0),
            ("kube_job_status_failed", &r("backoff", "DeadlineExceeded"), 0.0),
            ("kube_job_status_failed", &r("backoff", "Evicted"), 0.0),
            // An unknown reason: the three zeros, and the count under an empty reason.
            ("kube_job_status_failed", &r("odd", "BackoffLimitExceeded"), 0.0),
            ("kube_job_status_failed", &r("odd", "DeadlineExceeded"), 0.0),
            ("kube_job_status_failed", &r("odd", "Evicted"), 0.0),
            ("kube_job_status_failed", &l("odd"), 1.0),
            // Failed pods without a Failed condition: the count, no reason.
            ("kube_job_status_failed", &l("running"), 2.0),
            // No failed pod: one 0 without reason, whatever the conditions.
            ("kube_job_status_failed", &l("fine"), 0.0),
        ]),
    );
    let owner: Series = series_of(&snapshot).into_iter().filter(|(k, _)| k.starts_with("kube_job_owner{")).collect();
    assert_eq!(owner.len(), 4);
    assert!(
        owner.keys().all(|k| k.contains("owner_kind=\"CronJob\"") && k.contains("owner_is_controller=\"true\"")),
        "{owner:#?}"
    );
}

fn web_pod() -> serde_json::Value {
    json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "p-1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "uid": "r", "controller": true}]},
        "spec": {"nodeName": "n1", "priorityClassName": "high", "containers": [
            {"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
            {"name": "sidecar"}
        ]},
        "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.1.0.7",
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "restartCount": 3, "ready": false, "image": "i", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}},
                {"name": "sidecar", "restartCount": 0, "ready": true, "image": "i", "imageID": "",
                 "state": {"running": {}}}
            ]}
    })
}

#[test]
fn pod_series() {
    let snapshot = Snapshot { pods: vec![pod_obj(web_pod())], ..Default::default() };
    let b = [("namespace", "shop"), ("pod", "web-1"), ("uid", "p-1")];
    let app = [b[0], b[1], b[2], ("container", "app")];
    let side = [b[0], b[1], b[2], ("container", "sidecar")];
    let phase = |p| [b[0], b[1], b[2], ("phase", p)];
    let ready = |c| [b[0], b[1], b[2], ("condition", c)];
    let res = |r, u| [b[0], b[1], b[2], ("container", "app"), ("node", "n1"), ("resource", r), ("unit", u)];
    assert_series(
        &series_of(&snapshot),
        &expect(&[
            (
                "kube_pod_info",
                &[
                    b[0],
                    b[1],
                    b[2],
                    ("host_ip", "10.0.0.1"),
                    ("pod_ip", "10.1.0.7"),
                    ("node", "n1"),
                    ("created_by_kind", "ReplicaSet"),
                    ("created_by_name", "web-5d4f"),
                    ("priority_class", "high"),
                    ("host_network", "false"),
                ],
                1.0,
            ),
            (
                "kube_pod_owner",
                &[
                    b[0],
                    b[1],
                    b[2],
                    ("owner_kind", "ReplicaSet"),
                    ("owner_name", "web-5d4f"),
                    ("owner_is_controller", "true"),
                ],
                1.0,
            ),
            ("kube_pod_status_phase", &phase("Pending"), 0.0),
            ("kube_pod_status_phase", &phase("Succeeded"), 0.0),
            ("kube_pod_status_phase", &phase("Failed"), 0.0),
            ("kube_pod_status_phase", &phase("Unknown"), 0.0),
            ("kube_pod_status_phase", &phase("Running"), 1.0),
            ("kube_pod_status_ready", &ready("true"), 0.0),
            ("kube_pod_status_ready", &ready("false"), 1.0),
            ("kube_pod_status_ready", &ready("unknown"), 0.0),
            ("kube_pod_container_status_restarts_total", &app, 3.0),
            ("kube_pod_container_status_ready", &app, 0.0),
            ("kube_pod_container_status_running", &app, 0.0),
            ("kube_pod_container_status_waiting", &app, 1.0),
            ("kube_pod_container_status_terminated", &app, 0.0),
            (
                "kube_pod_container_status_waiting_reason",
                &[app[0], app[1], app[2], app[3], ("reason", "CrashLoopBackOff")],
                1.0,
            ),
            ("kube_pod_container_status_restarts_total", &side, 0.0),
            ("kube_pod_container_status_ready", &side, 1.0),
            ("kube_pod_container_status_running", &side, 1.0),
            ("kube_pod_container_status_waiting", &side, 0.0),
            ("kube_pod_container_status_terminated", &side, 0.0),
            ("kube_pod_container_resource_requests", &res("cpu", "core"), 0.25),
            ("kube_pod_container_resource_requests", &res("memory", "byte"), 67_108_864.0),
            ("kube_pod_container_resource_limits", &res("memory", "byte"), 134_217_728.0),
        ]),
    );
}

#[test]
fn node_and_namespace_series() {
    let node = json!({
        "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.1.0.0/24", "providerID": "kind://n1", "unschedulable": true,
            "taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "3800m", "memory": "7Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "Unknown"}],
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "172.18.0.2"}],
            "images": [{"names": ["a"], "sizeBytes": 1}],
            "nodeInfo": {"kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.7",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "systemUUID": "sys-1", "machineID": "m",
                "bootID": "b", "operatingSystem": "linux", "architecture": "amd64"}
        }
    });
    let snapshot = Snapshot {
        nodes: vec![obj(node)],
        namespaces: vec![obj(json!({"metadata": {"name": "shop"}, "status": {"phase": "Terminating"}}))],
        ..Default::default()
    };
    let n = ("node", "n1");
    let cond = |c, s| [n, ("condition", c), ("status", s)];
    let res = |r, u| [n, ("resource", r), ("unit", u)];
    let got = series_of(&snapshot);
    assert_series(
        &got,
        &expect(&[
            (
                "kube_node_info",
                &[
                    n,
                    ("kernel_version", "6.1"),
                    ("os_image", "Debian"),
                    ("container_runtime_version", "containerd://1.7"),
                    ("kubelet_version", "v1.33.0"),
                    ("kubeproxy_version", "deprecated"),
                    ("provider_id", "kind://n1"),
                    ("pod_cidr", "10.1.0.0/24"),
                    ("system_uuid", "sys-1"),
                    ("internal_ip", "172.18.0.2"),
                ],
                1.0,
            ),
            ("kube_node_spec_unschedulable", &[n], 1.0),
            ("kube_node_spec_taint", &[n, ("key", "node.kubernetes.io/unreachable"), ("effect", "NoSchedule")], 1.0),
            ("kube_node_status_condition", &cond("Ready", "true"), 1.0),
            ("kube_node_status_condition", &cond("Ready", "false"), 0.0),
            ("kube_node_status_condition", &cond("Ready", "unknown"), 0.0),
            ("kube_node_status_condition", &cond("MemoryPressure", "true"), 0.0),
            ("kube_node_status_condition", &cond("MemoryPressure", "false"), 0.0),
            ("kube_node_status_condition", &cond("MemoryPressure", "unknown"), 1.0),
            ("kube_node_status_capacity", &res("cpu", "core"), 4.0),
            ("kube_node_status_capacity", &res("memory", "byte"), 8.0 * 1024f64.powi(3)),
            ("kube_node_status_capacity", &res("pods", "integer"), 110.0),
            ("kube_node_status_capacity", &res("ephemeral_storage", "byte"), 100.0 * 1024f64.powi(3)),
            ("kube_node_status_allocatable", &res("cpu", "core"), 3.8),
            ("kube_node_status_allocatable", &res("memory", "byte"), 7.0 * 1024f64.powi(3)),
            ("kube_node_status_allocatable", &res("pods", "integer"), 110.0),
            ("kube_namespace_status_phase", &[("namespace", "shop"), ("phase", "Active")], 0.0),
            ("kube_namespace_status_phase", &[("namespace", "shop"), ("phase", "Terminating")], 1.0),
        ]),
    );
}

fn stale_keys(sent: &[(String, f64)]) -> Vec<&String> {
    sent.iter().filter(|(_, v)| v.to_bits() == lgtm_pipeline::proto::stale_nan().to_bits()).map(|(k, _)| k).collect()
}

#[test]
fn gone_series_get_one_staleness_marker() {
    let mut pod = web_pod();
    let first = Snapshot { pods: vec![pod_obj(pod.clone())], ..Default::default() };
    // The container stops waiting: its waiting_reason series is gone, the rest continue.
    pod["status"]["containerStatuses"][0]["state"] = json!({"running": {}});
    let second = Snapshot { pods: vec![pod_obj(pod.clone())], ..Default::default() };
    let series = series_of(&second).len();
    let sent = decode(&requests_of(&second, Some(&first), 2_000, 1000));
    assert_eq!(
        stale_keys(&sent),
        vec![&key(
            "kube_pod_container_status_waiting_reason",
            &[
                ("namespace", "shop"),
                ("pod", "web-1"),
                ("uid", "p-1"),
                ("container", "app"),
                ("reason", "CrashLoopBackOff")
            ]
        )]
    );
    assert_eq!(sent.len(), series + 1);
    // Unchanged objects (the same `Arc`, or a new one with the same series): no marker.
    for previous in [second.clone(), Snapshot { pods: vec![pod_obj(pod)], ..Default::default() }] {
        let sent = decode(&requests_of(&second, Some(&previous), 2_500, 1000));
        assert_eq!((sent.len(), stale_keys(&sent).len()), (series, 0));
    }
    // The pod is deleted: every series of it is marked stale once, nothing else is sent.
    let third = Snapshot::default();
    let sent = decode(&requests_of(&third, Some(&second), 3_000, 1000));
    assert_eq!(sent.len(), series);
    assert!(sent.iter().all(|(_, v)| v.is_nan()));
    assert!(decode(&requests_of(&Snapshot::default(), Some(&third), 4_000, 1000)).is_empty());
}

/// What the agent does each interval: requests sent through a bounded channel as they fill,
/// received while rendering goes on.
#[test]
fn requests_are_sent_as_they_fill() {
    let snapshot = rich_snapshot();
    let want = decode(&requests_of(&snapshot, None, 1_000, 5));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let frame = Frame::new(vec![("job".into(), JOB.into())], 1_000, 5).sending(tx, 0);
    let render = std::thread::spawn(move || {
        let mut frame = frame;
        render_interval(&snapshot, None, &mut frame);
        frame.finish()
    });
    let mut received = Vec::new();
    while let Some(r) = rx.blocking_recv() {
        assert!(r.1 <= 5);
        received.push(r);
    }
    let (kept, written) = render.join().expect("rendered");
    assert!(kept.is_empty());
    assert_eq!(decode(&received), want);
    assert_eq!(written, super::frame::Written { series: want.len(), stale: 0 });
}

#[test]
fn requests_are_cut_at_the_series_limit_and_labels_are_complete() {
    let mut f = Frame::new(vec![("job".into(), JOB.into()), ("cluster".into(), "c1".into())], 5, 10);
    for i in 0..25 {
        f.push("m", &[("i", &i.to_string()), ("empty", "")], f64::from(i));
    }
    f.push("m", &[("i", "0")], 99.0);
    assert_eq!(f.len(), 25, "a repeated series keeps its first value");
    let requests = f.finish().0;
    assert_eq!(requests.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![10, 10, 5]);
    let w = WriteRequest::decode(requests[0].0.clone()).unwrap();
    let names: Vec<&str> = w.timeseries[0].labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["__name__", "cluster", "i", "job"]);
    assert_eq!(w.timeseries[0].samples[0].timestamp, 5);
}

// ---------------------------------------------------------------------------------------------
// kube-state-metrics conformance (issue 18): the label set of every family the agent emits, and
// the value rules where a field is unset, checked against kube-state-metrics v2.20
// (`internal/store/*.go`, `docs/metrics/`; see ARCHITECTURE.md "Conformance").

/// Every family the agent emits: (name, label names besides `job`/`cluster`, as
/// kube-state-metrics declares them). A label whose value is empty is no label once ingested, so
/// a series may carry fewer; `every_family_has_the_kube_state_metrics_label_set` requires each
/// set in full on the rich objects of `rich_snapshot`.
const KSM_FAMILIES: &[(&str, &[&str])] = &[
    // Pod (namespace, pod, uid on every series).
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
    ("kube_pod_owner", &["namespace", "pod", "uid", "owner_kind", "owner_name", "owner_is_controller"]),
    ("kube_pod_status_phase", &["namespace", "pod", "uid", "phase"]),
    ("kube_pod_status_ready", &["namespace", "pod", "uid", "condition"]),
    ("kube_pod_container_status_restarts_total", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_ready", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_running", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_waiting", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_terminated", &["namespace", "pod", "uid", "container"]),
    ("kube_pod_container_status_waiting_reason", &["namespace", "pod", "uid", "container", "reason"]),
    ("kube_pod_container_resource_requests", &["namespace", "pod", "uid", "container", "node", "resource", "unit"]),
    ("kube_pod_container_resource_limits", &["namespace", "pod", "uid", "container", "node", "resource", "unit"]),
    // Node.
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
    ("kube_node_spec_unschedulable", &["node"]),
    ("kube_node_spec_taint", &["node", "key", "value", "effect"]),
    ("kube_node_status_condition", &["node", "condition", "status"]),
    ("kube_node_status_capacity", &["node", "resource", "unit"]),
    ("kube_node_status_allocatable", &["node", "resource", "unit"]),
    // Namespace.
    ("kube_namespace_status_phase", &["namespace", "phase"]),
    // Deployment.
    ("kube_deployment_status_replicas", &["namespace", "deployment"]),
    ("kube_deployment_status_replicas_ready", &["namespace", "deployment"]),
    ("kube_deployment_status_replicas_available", &["namespace", "deployment"]),
    ("kube_deployment_status_replicas_unavailable", &["namespace", "deployment"]),
    ("kube_deployment_status_replicas_updated", &["namespace", "deployment"]),
    ("kube_deployment_status_observed_generation", &["namespace", "deployment"]),
    ("kube_deployment_metadata_generation", &["namespace", "deployment"]),
    ("kube_deployment_spec_replicas", &["namespace", "deployment"]),
    ("kube_deployment_spec_paused", &["namespace", "deployment"]),
    ("kube_deployment_status_condition", &["namespace", "deployment", "reason", "condition", "status"]),
    // ReplicaSet.
    ("kube_replicaset_owner", &["namespace", "replicaset", "owner_kind", "owner_name", "owner_is_controller"]),
    // DaemonSet.
    ("kube_daemonset_status_current_number_scheduled", &["namespace", "daemonset"]),
    ("kube_daemonset_status_desired_number_scheduled", &["namespace", "daemonset"]),
    ("kube_daemonset_status_number_available", &["namespace", "daemonset"]),
    ("kube_daemonset_status_number_misscheduled", &["namespace", "daemonset"]),
    ("kube_daemonset_status_number_ready", &["namespace", "daemonset"]),
    ("kube_daemonset_status_number_unavailable", &["namespace", "daemonset"]),
    ("kube_daemonset_status_updated_number_scheduled", &["namespace", "daemonset"]),
    ("kube_daemonset_status_observed_generation", &["namespace", "daemonset"]),
    ("kube_daemonset_metadata_generation", &["namespace", "daemonset"]),
    // StatefulSet.
    ("kube_statefulset_status_replicas", &["namespace", "statefulset"]),
    ("kube_statefulset_status_replicas_available", &["namespace", "statefulset"]),
    ("kube_statefulset_status_replicas_current", &["namespace", "statefulset"]),
    ("kube_statefulset_status_replicas_ready", &["namespace", "statefulset"]),
    ("kube_statefulset_status_replicas_updated", &["namespace", "statefulset"]),
    ("kube_statefulset_status_observed_generation", &["namespace", "statefulset"]),
    ("kube_statefulset_metadata_generation", &["namespace", "statefulset"]),
    ("kube_statefulset_replicas", &["namespace", "statefulset"]),
    ("kube_statefulset_status_current_revision", &["namespace", "statefulset", "revision"]),
    ("kube_statefulset_status_update_revision", &["namespace", "statefulset", "revision"]),
    // Job.
    ("kube_job_status_succeeded", &["namespace", "job_name"]),
    ("kube_job_status_failed", &["namespace", "job_name", "reason"]),
    ("kube_job_status_active", &["namespace", "job_name"]),
    ("kube_job_status_start_time", &["namespace", "job_name"]),
    ("kube_job_status_completion_time", &["namespace", "job_name"]),
    ("kube_job_spec_completions", &["namespace", "job_name"]),
    ("kube_job_complete", &["namespace", "job_name", "condition"]),
    ("kube_job_failed", &["namespace", "job_name", "condition"]),
    ("kube_job_owner", &["namespace", "job_name", "owner_kind", "owner_name", "owner_is_controller"]),
];

/// One object of every kind with every field a label is read from set.
fn rich_snapshot() -> Snapshot {
    let mut node = serde_json::json!({
        "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.1.0.0/24", "providerID": "kind://n1",
            "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
            "nodeInfo": {"kernelVersion": "6.1", "osImage": "Debian", "containerRuntimeVersion": "containerd://1.7",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "systemUUID": "sys-1", "machineID": "m",
                "bootID": "b", "operatingSystem": "linux", "architecture": "amd64"}}
    });
    node["spec"]["unschedulable"] = json!(false);
    let mut pod = web_pod();
    pod["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 0}});
    Snapshot {
        pods: vec![pod_obj(pod)],
        nodes: vec![obj(node)],
        namespaces: vec![obj(json!({"metadata": {"name": "shop"}, "status": {"phase": "Active"}}))],
        deployments: vec![obj(json!({
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}
        }))],
        replicasets: vec![obj(json!({
            "metadata": {"name": "web-5d4f", "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u"}]}
        }))],
        daemonsets: vec![obj(json!({
            "metadata": {"name": "agent", "namespace": "obs"},
            "spec": {"selector": {}, "template": {}},
            "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberReady": 1, "numberMisscheduled": 0}
        }))],
        statefulsets: vec![obj(json!({
            "metadata": {"name": "db", "namespace": "obs"},
            "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "db"},
            "status": {"replicas": 1, "currentRevision": "db-1", "updateRevision": "db-1"}
        }))],
        jobs: vec![obj(json!({
            "metadata": {"name": "backup", "namespace": "ops",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "c", "controller": true}]},
            "spec": {"template": {}, "completions": 1},
            "status": {"failed": 1, "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:05:00Z",
                "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"},
                               {"type": "Complete", "status": "False"}]}
        }))],
    }
}

/// Family name -> the label-name sets its series have (`job` and `cluster` left out).
fn label_sets(snapshot: &Snapshot) -> BTreeMap<String, std::collections::BTreeSet<Vec<String>>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<Vec<String>>> = BTreeMap::new();
    for (bytes, _) in requests_of(snapshot, None, 1_000, 10_000) {
        for ts in WriteRequest::decode(bytes).unwrap().timeseries {
            let name = ts.labels.iter().find(|l| l.name == "__name__").unwrap().value.clone();
            let mut names: Vec<String> = ts
                .labels
                .iter()
                .map(|l| l.name.clone())
                .filter(|n| n != "__name__" && n != "job" && n != "cluster")
                .collect();
            names.sort();
            out.entry(name).or_default().insert(names);
        }
    }
    out
}

#[test]
fn every_family_has_the_kube_state_metrics_label_set() {
    let got = label_sets(&rich_snapshot());
    let table: BTreeMap<&str, Vec<String>> = KSM_FAMILIES
        .iter()
        .map(|(n, l)| {
            let mut l: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            l.sort();
            (*n, l)
        })
        .collect();
    assert_eq!(table.len(), KSM_FAMILIES.len(), "a family listed twice");
    // The table names every family the emitters can write: the names in the source files.
    let sources =
        [include_str!("pods.rs"), include_str!("nodes.rs"), include_str!("workloads.rs"), include_str!("resources.rs")];
    let mut in_source = std::collections::BTreeSet::new();
    for src in sources {
        for (at, _) in src.match_indices("\"kube_") {
            let rest = &src[at + 1..];
            let name = &rest[..rest.find('"').unwrap_or(0)];
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                in_source.insert(name.to_string());
            }
        }
    }
    let listed: std::collections::BTreeSet<String> = table.keys().map(|s| s.to_string()).collect();
    assert_eq!(in_source, listed, "every emitted family is in KSM_FAMILIES and no other");
    // Each family appears on the rich objects, and every one of its series has exactly the
    // label names kube-state-metrics declares.
    for (name, want) in &table {
        let sets = got.get(*name).unwrap_or_else(|| panic!("{name} not emitted by rich_snapshot"));
        assert_eq!(sets.iter().collect::<Vec<_>>(), vec![want], "{name}: label names");
    }
    assert_eq!(got.len(), table.len(), "a family outside the table: {:?}", got.keys());
}

#[test]
fn unset_fields_give_the_values_kube_state_metrics_gives() {
    // A Pod just created: no owner, no node, no IPs, a container waiting with no reason yet,
    // resources kube-state-metrics reports (extended, hugepages, rounded-up bytes) and one it
    // does not (`pods`).
    let pod = pod_obj(json!({
        "metadata": {"name": "lone", "namespace": "shop", "uid": "p-2"},
        "spec": {"containers": [{"name": "app", "resources": {
            "requests": {"nvidia.com/gpu": "1", "hugepages-2Mi": "4Mi", "ephemeral-storage": "1500m", "pods": "1"},
            "limits": {"example.kubernetes.io/thing": "1", "cpu": "100n"}}}]},
        "status": {"phase": "Pending",
            "containerStatuses": [{"name": "app", "restartCount": 0, "ready": false, "image": "i", "imageID": "",
                "state": {"waiting": {}}}]}
    }));
    let node = obj(json!({
        "metadata": {"name": "n2"},
        "status": {
            "capacity": {"hugepages-1Gi": "2Gi", "example.com/dongle": "2500m", "kubernetes.io/batch": "1", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "nodeInfo": {"kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "",
                "kubeProxyVersion": "v1.30.0", "systemUUID": "", "machineID": "", "bootID": "", "operatingSystem": "",
                "architecture": ""}}
    }));
    let snapshot = Snapshot {
        pods: vec![pod],
        nodes: vec![node],
        namespaces: vec![obj(json!({"metadata": {"name": "new"}}))],
        replicasets: vec![obj(json!({"metadata": {"name": "orphan", "namespace": "shop"}}))],
        statefulsets: vec![obj(json!({
            "metadata": {"name": "db", "namespace": "obs"},
            "spec": {"selector": {}, "template": {}, "serviceName": "db"},
            "status": {"replicas": 0}
        }))],
        deployments: vec![obj(json!({"metadata": {"name": "web", "namespace": "shop"}}))],
        ..Default::default()
    };
    let b = [("namespace", "shop"), ("pod", "lone"), ("uid", "p-2")];
    let app = [b[0], b[1], b[2], ("container", "app")];
    let res = |r, u| [b[0], b[1], b[2], ("container", "app"), ("resource", r), ("unit", u)];
    let phase = |p| [b[0], b[1], b[2], ("phase", p)];
    let ns = |p| [("namespace", "new"), ("phase", p)];
    let n2 = ("node", "n2");
    let cap = |r, u| [n2, ("resource", r), ("unit", u)];
    let sts: &[(&str, &str)] = &[("namespace", "obs"), ("statefulset", "db")];
    let dep: &[(&str, &str)] = &[("namespace", "shop"), ("deployment", "web")];
    assert_series(
        &series_of(&snapshot),
        &expect(&[
            // Pod: empty created_by_*, node, IPs and priority class are no labels;
            // host_network is always written.
            ("kube_pod_info", &[b[0], b[1], b[2], ("host_network", "false")], 1.0),
            // No owner: empty owner labels (KSM wrote `<none>` before v2.8).
            ("kube_pod_owner", &b, 1.0),
            ("kube_pod_status_phase", &phase("Pending"), 1.0),
            ("kube_pod_status_phase", &phase("Succeeded"), 0.0),
            ("kube_pod_status_phase", &phase("Failed"), 0.0),
            ("kube_pod_status_phase", &phase("Unknown"), 0.0),
            ("kube_pod_status_phase", &phase("Running"), 0.0),
            ("kube_pod_container_status_restarts_total", &app, 0.0),
            ("kube_pod_container_status_ready", &app, 0.0),
            ("kube_pod_container_status_running", &app, 0.0),
            ("kube_pod_container_status_waiting", &app, 1.0),
            ("kube_pod_container_status_terminated", &app, 0.0),
            // Waiting without a reason: the series, without `reason`.
            ("kube_pod_container_status_waiting_reason", &app, 1.0),
            ("kube_pod_container_resource_requests", &res("nvidia_com_gpu", "integer"), 1.0),
            ("kube_pod_container_resource_requests", &res("hugepages_2Mi", "byte"), 4.0 * 1024.0 * 1024.0),
            // Bytes of a container: whole, rounded up.
            ("kube_pod_container_resource_requests", &res("ephemeral_storage", "byte"), 2.0),
            // CPU: milli precision, rounded up.
            ("kube_pod_container_resource_limits", &res("cpu", "core"), 0.001),
            // Node: `deprecated` kube-proxy version, the last InternalIP, and capacity of
            // hugepages, extended resources (milli precision) and pods; `kubernetes.io/` names
            // are not reported.
            ("kube_node_info", &[n2, ("kubeproxy_version", "deprecated"), ("internal_ip", "10.0.0.2")], 1.0),
            ("kube_node_spec_unschedulable", &[n2], 0.0),
            ("kube_node_status_capacity", &cap("hugepages_1Gi", "byte"), 2.0 * 1024f64.powi(3)),
            ("kube_node_status_capacity", &cap("example_com_dongle", "integer"), 2.5),
            ("kube_node_status_capacity", &cap("pods", "integer"), 110.0),
            // Namespace without a phase: both phases, 0.
            ("kube_namespace_status_phase", &ns("Active"), 0.0),
            ("kube_namespace_status_phase", &ns("Terminating"), 0.0),
            // ReplicaSet without owner: empty owner labels.
            ("kube_replicaset_owner", &[("namespace", "shop"), ("replicaset", "orphan")], 1.0),
            // StatefulSet before the controller wrote revisions: both, without `revision`;
            // no `kube_statefulset_replicas` without spec.replicas.
            ("kube_statefulset_status_replicas", sts, 0.0),
            ("kube_statefulset_status_replicas_available", sts, 0.0),
            ("kube_statefulset_status_replicas_current", sts, 0.0),
            ("kube_statefulset_status_replicas_ready", sts, 0.0),
            ("kube_statefulset_status_replicas_updated", sts, 0.0),
            ("kube_statefulset_status_observed_generation", sts, 0.0),
            ("kube_statefulset_metadata_generation", sts, 0.0),
            ("kube_statefulset_status_current_revision", sts, 1.0),
            ("kube_statefulset_status_update_revision", sts, 1.0),
            // Deployment with no spec or status yet: zeros, paused 0, no spec_replicas.
            ("kube_deployment_status_replicas", dep, 0.0),
            ("kube_deployment_status_replicas_ready", dep, 0.0),
            ("kube_deployment_status_replicas_available", dep, 0.0),
            ("kube_deployment_status_replicas_unavailable", dep, 0.0),
            ("kube_deployment_status_replicas_updated", dep, 0.0),
            ("kube_deployment_status_observed_generation", dep, 0.0),
            ("kube_deployment_metadata_generation", dep, 0.0),
            ("kube_deployment_spec_paused", dep, 0.0),
        ]),
    );
}
