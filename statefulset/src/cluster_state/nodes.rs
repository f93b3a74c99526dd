//! Nodes (`node` label) and Namespaces (`namespace` label), with the names and labels of
//! kube-state-metrics.

use k8s_openapi::api::core::v1::{Namespace, Node};

use super::frame::Frame;
use super::resources::{resource_sample, Owner};
use super::workloads::condition_series;

/// The phases kube-state-metrics gives one `kube_namespace_status_phase` series each.
pub const NAMESPACE_PHASES: [&str; 2] = ["Active", "Terminating"];

pub fn node(n: &Node, f: &mut Frame) {
    let name = n.metadata.name.as_deref().unwrap_or_default();
    let l = [("node", name)];
    let spec = n.spec.as_ref();
    let status = n.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    // The last InternalIP address, as kube-state-metrics takes it.
    let internal_ip = status
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().rfind(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.as_str())
        .unwrap_or_default();
    let i = |get: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &str| info.map(get).unwrap_or_default();
    f.push(
        "kube_node_info",
        &[
            ("node", name),
            ("kernel_version", i(|i| &i.kernel_version)),
            ("os_image", i(|i| &i.os_image)),
            ("container_runtime_version", i(|i| &i.container_runtime_version)),
            ("kubelet_version", i(|i| &i.kubelet_version)),
            // kube-state-metrics writes `deprecated` here since v2.14: Kubernetes 1.31
            // deprecated the field, whose content was not reliable.
            ("kubeproxy_version", "deprecated"),
            ("provider_id", spec.and_then(|s| s.provider_id.as_deref()).unwrap_or_default()),
            ("pod_cidr", spec.and_then(|s| s.pod_cidr.as_deref()).unwrap_or_default()),
            ("system_uuid", i(|i| &i.system_uuid)),
            ("internal_ip", internal_ip),
        ],
        1.0,
    );
    let unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    f.push("kube_node_spec_unschedulable", &l, if unschedulable { 1.0 } else { 0.0 });
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        let taint = [
            ("node", name),
            ("key", t.key.as_str()),
            ("value", t.value.as_deref().unwrap_or_default()),
            ("effect", t.effect.as_str()),
        ];
        f.push("kube_node_spec_taint", &taint, 1.0);
    }
    for c in status.and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
        condition_series(f, "kube_node_status_condition", &l, &c.type_, &c.status);
    }
    for (metric, list) in [
        ("kube_node_status_capacity", status.and_then(|s| s.capacity.as_ref())),
        ("kube_node_status_allocatable", status.and_then(|s| s.allocatable.as_ref())),
    ] {
        for (resource, q) in list.into_iter().flatten() {
            let Some((resource, unit, value)) = resource_sample(Owner::Node, resource, &q.0) else { continue };
            f.push(metric, &[("node", name), ("resource", resource.as_str()), ("unit", unit)], value);
        }
    }
}

pub fn namespace(n: &Namespace, f: &mut Frame) {
    let name = n.metadata.name.as_deref().unwrap_or_default();
    // Both phases always, 0 and 0 while the phase is not set yet.
    let phase = n.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    for candidate in NAMESPACE_PHASES {
        f.push(
            "kube_namespace_status_phase",
            &[("namespace", name), ("phase", candidate)],
            if phase == candidate { 1.0 } else { 0.0 },
        );
    }
}
