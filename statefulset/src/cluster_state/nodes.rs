//! Nodes (`node` label) and Namespaces (`namespace` label), with the names and labels of
//! kube-state-metrics.

use lgtm_k8s::objects::{NamespaceInfo, NodeInfo};

use super::frame::Frame;
use super::resources::{resource_sample, Owner};
use super::workloads::condition_series;

/// The phases kube-state-metrics gives one `kube_namespace_status_phase` series each.
pub const NAMESPACE_PHASES: [&str; 2] = ["Active", "Terminating"];

pub fn node(n: &NodeInfo, f: &mut Frame) {
    let name = n.meta.name();
    let l = [("node", name)];
    f.push(
        "kube_node_info",
        &[
            ("node", name),
            ("kernel_version", &n.kernel_version),
            ("os_image", &n.os_image),
            ("container_runtime_version", &n.container_runtime_version),
            ("kubelet_version", &n.kubelet_version),
            // kube-state-metrics writes `deprecated` here since v2.14: Kubernetes 1.31
            // deprecated the field, whose content was not reliable.
            ("kubeproxy_version", "deprecated"),
            ("provider_id", &n.provider_id),
            ("pod_cidr", &n.pod_cidr),
            ("system_uuid", &n.system_uuid),
            // The last InternalIP address, as kube-state-metrics takes it.
            ("internal_ip", &n.internal_ip),
        ],
        1.0,
    );
    f.push("kube_node_spec_unschedulable", &l, if n.unschedulable { 1.0 } else { 0.0 });
    for t in n.taints.iter() {
        let taint = [("node", name), ("key", &*t.key), ("value", &*t.value), ("effect", &*t.effect)];
        f.push("kube_node_spec_taint", &taint, 1.0);
    }
    for c in n.conditions.iter() {
        condition_series(f, "kube_node_status_condition", &l, &c.kind, &c.status);
    }
    for (metric, list) in [("kube_node_status_capacity", &n.capacity), ("kube_node_status_allocatable", &n.allocatable)]
    {
        for (resource, q) in list.iter() {
            let Some((resource, unit, value)) = resource_sample(Owner::Node, resource, q) else { continue };
            f.push(metric, &[("node", name), ("resource", resource.as_str()), ("unit", unit)], value);
        }
    }
}

pub fn namespace(n: &NamespaceInfo, f: &mut Frame) {
    let name = n.meta.name();
    // Both phases always, 0 and 0 while the phase is not set yet.
    let phase = &*n.phase;
    for candidate in NAMESPACE_PHASES {
        f.push(
            "kube_namespace_status_phase",
            &[("namespace", name), ("phase", candidate)],
            if phase == candidate { 1.0 } else { 0.0 },
        );
    }
}
