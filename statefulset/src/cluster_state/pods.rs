//! Pods and their containers, with the names and labels of kube-state-metrics: every series has
//! `namespace`, `pod` and `uid`; container series add `container`. A missing value (no
//! controller, no owner, no node yet) is an empty label value, i.e. no label once ingested, as
//! kube-state-metrics has written since v2.8 (it wrote `<none>` before).

use k8s_openapi::api::core::v1::Pod;

use super::frame::Frame;
use super::resources::{resource_sample, Owner};
use super::workloads::owner_series;

/// The phases kube-state-metrics gives one `kube_pod_status_phase` series each.
pub const PHASES: [&str; 5] = ["Pending", "Succeeded", "Failed", "Unknown", "Running"];

pub fn pod(p: &Pod, f: &mut Frame) {
    let m = &p.metadata;
    let ns = m.namespace.as_deref().unwrap_or_default();
    let name = m.name.as_deref().unwrap_or_default();
    let uid = m.uid.as_deref().unwrap_or_default();
    let base = [("namespace", ns), ("pod", name), ("uid", uid)];
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let node = spec.and_then(|s| s.node_name.as_deref()).unwrap_or_default();

    let controller = m.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    let host_network = if spec.and_then(|s| s.host_network).unwrap_or(false) { "true" } else { "false" };
    f.push(
        "kube_pod_info",
        &[
            base[0],
            base[1],
            base[2],
            ("host_ip", status.and_then(|s| s.host_ip.as_deref()).unwrap_or_default()),
            ("pod_ip", status.and_then(|s| s.pod_ip.as_deref()).unwrap_or_default()),
            ("node", node),
            ("created_by_kind", controller.map(|o| o.kind.as_str()).unwrap_or_default()),
            ("created_by_name", controller.map(|o| o.name.as_str()).unwrap_or_default()),
            ("priority_class", spec.and_then(|s| s.priority_class_name.as_deref()).unwrap_or_default()),
            ("host_network", host_network),
        ],
        1.0,
    );
    owner_series(f, "kube_pod_owner", &base, m);

    if let Some(phase) = status.and_then(|s| s.phase.as_deref()).filter(|p| !p.is_empty()) {
        for candidate in PHASES {
            f.push(
                "kube_pod_status_phase",
                &[base[0], base[1], base[2], ("phase", candidate)],
                bool_f(phase == candidate),
            );
        }
    }
    for c in status.and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
        if c.type_ == "Ready" {
            for (label, value) in [("true", "True"), ("false", "False"), ("unknown", "Unknown")] {
                f.push(
                    "kube_pod_status_ready",
                    &[base[0], base[1], base[2], ("condition", label)],
                    bool_f(c.status == value),
                );
            }
        }
    }
    for cs in status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
        let l = [base[0], base[1], base[2], ("container", cs.name.as_str())];
        f.push("kube_pod_container_status_restarts_total", &l, f64::from(cs.restart_count));
        let state = cs.state.as_ref();
        f.push("kube_pod_container_status_ready", &l, bool_f(cs.ready));
        f.push("kube_pod_container_status_running", &l, bool_f(state.and_then(|s| s.running.as_ref()).is_some()));
        f.push("kube_pod_container_status_waiting", &l, bool_f(state.and_then(|s| s.waiting.as_ref()).is_some()));
        f.push("kube_pod_container_status_terminated", &l, bool_f(state.and_then(|s| s.terminated.as_ref()).is_some()));
        // One series per waiting container, also when the reason is empty (then no label).
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            f.push("kube_pod_container_status_waiting_reason", &[l[0], l[1], l[2], l[3], ("reason", reason)], 1.0);
        }
    }
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        let Some(resources) = &c.resources else { continue };
        for (metric, list) in [
            ("kube_pod_container_resource_requests", &resources.requests),
            ("kube_pod_container_resource_limits", &resources.limits),
        ] {
            for (resource, q) in list.iter().flatten() {
                let Some((resource, unit, value)) = resource_sample(Owner::Container, resource, &q.0) else { continue };
                let l = [
                    base[0],
                    base[1],
                    base[2],
                    ("container", c.name.as_str()),
                    ("node", node),
                    ("resource", resource.as_str()),
                    ("unit", unit),
                ];
                f.push(metric, &l, value);
            }
        }
    }
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}
