//! Pods and their containers, with the names and labels of kube-state-metrics: every series has
//! `namespace`, `pod` and `uid`; container series add `container`. A missing value (no
//! controller, no owner, no node yet) is an empty label value, i.e. no label once ingested, as
//! kube-state-metrics has written since v2.8 (it wrote `<none>` before).

use lgtm_k8s::objects::PodInfo;

use super::frame::Frame;
use super::resources::{resource_sample, Owner};
use super::workloads::owner_series;

/// The phases kube-state-metrics gives one `kube_pod_status_phase` series each.
pub const PHASES: [&str; 5] = ["Pending", "Succeeded", "Failed", "Unknown", "Running"];

pub fn pod(p: &PodInfo, f: &mut Frame) {
    let m = &p.meta;
    let base = [("namespace", m.namespace()), ("pod", m.name()), ("uid", &*p.uid)];
    let node = &*p.node_name;
    let controller = p.controller();
    let host_network = if p.host_network { "true" } else { "false" };
    f.push(
        "kube_pod_info",
        &[
            base[0],
            base[1],
            base[2],
            ("host_ip", &p.host_ip),
            ("pod_ip", &p.ip),
            ("node", node),
            ("created_by_kind", controller.map(|c| c.0).unwrap_or_default()),
            ("created_by_name", controller.map(|c| c.1).unwrap_or_default()),
            ("priority_class", &p.priority_class),
            ("host_network", host_network),
        ],
        1.0,
    );
    let owners = p.owners.iter().map(|o| (&*o.kind, &*o.name, o.controller));
    owner_series(f, "kube_pod_owner", &base, owners);

    if !p.phase.is_empty() {
        for candidate in PHASES {
            f.push(
                "kube_pod_status_phase",
                &[base[0], base[1], base[2], ("phase", candidate)],
                bool_f(*p.phase == *candidate),
            );
        }
    }
    // Only with a `Ready` condition; a status other than these three gives three zeros.
    if p.ready != lgtm_k8s::objects::Ready::Absent {
        for (label, value) in [("true", "True"), ("false", "False"), ("unknown", "Unknown")] {
            f.push(
                "kube_pod_status_ready",
                &[base[0], base[1], base[2], ("condition", label)],
                bool_f(p.ready.status() == Some(value)),
            );
        }
    }
    for cs in p.statuses.iter() {
        let l = [base[0], base[1], base[2], ("container", &*cs.name)];
        f.push("kube_pod_container_status_restarts_total", &l, f64::from(cs.restarts));
        f.push("kube_pod_container_status_ready", &l, bool_f(cs.ready));
        f.push("kube_pod_container_status_running", &l, bool_f(cs.running));
        f.push("kube_pod_container_status_waiting", &l, bool_f(cs.waiting.is_some()));
        f.push("kube_pod_container_status_terminated", &l, bool_f(cs.terminated));
        // One series per waiting container, also when the reason is empty (then no label).
        if let Some(reason) = &cs.waiting {
            f.push("kube_pod_container_status_waiting_reason", &[l[0], l[1], l[2], l[3], ("reason", reason)], 1.0);
        }
    }
    for c in p.containers.iter().filter(|c| !c.init) {
        for (metric, list) in
            [("kube_pod_container_resource_requests", &c.requests), ("kube_pod_container_resource_limits", &c.limits)]
        {
            for (resource, q) in list.iter() {
                let Some((resource, unit, value)) = resource_sample(Owner::Container, resource, q) else { continue };
                let l = [
                    base[0],
                    base[1],
                    base[2],
                    ("container", &*c.name),
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
