//! The `__meta_kubernetes_*` labels of Prometheus's Kubernetes service discovery, for the two
//! roles monitors use: `endpointslice` (ServiceMonitors, service annotations) and `pod`
//! (PodMonitors, pod annotations). Names and values follow Prometheus's documentation of
//! `kubernetes_sd_config`, so relabelings written for Prometheus work unchanged.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One discovered target: `__address__` plus meta labels.
pub type Labels = BTreeMap<String, String>;

pub const NAMESPACE: &str = "__meta_kubernetes_namespace";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Prometheus's `SanitizeLabelName`: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// `host:port`, with brackets around an IPv6 host.
pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `<prefix>_label_<name>`, `<prefix>_labelpresent_<name>` and the same for annotations.
fn object_labels(out: &mut Labels, prefix: &str, meta: &ObjectMeta) {
    for (kind, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        for (k, v) in map.iter().flatten() {
            let name = sanitize(k);
            out.insert(format!("{prefix}_{kind}_{name}"), v.clone());
            out.insert(format!("{prefix}_{kind}present_{name}"), "true".into());
        }
    }
}

/// The labels of a Service as endpoint targets carry them.
pub fn service_labels(service: &Service) -> Labels {
    let mut out = Labels::new();
    out.insert(NAMESPACE.into(), service.metadata.namespace.clone().unwrap_or_default());
    out.insert("__meta_kubernetes_service_name".into(), service.metadata.name.clone().unwrap_or_default());
    object_labels(&mut out, "__meta_kubernetes_service", &service.metadata);
    out
}

/// The labels of a Pod shared by all its targets (without the container's).
pub fn pod_labels(pod: &Pod) -> Labels {
    let mut out = Labels::new();
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    out.insert(NAMESPACE.into(), meta.namespace.clone().unwrap_or_default());
    out.insert("__meta_kubernetes_pod_name".into(), meta.name.clone().unwrap_or_default());
    out.insert("__meta_kubernetes_pod_ip".into(), status.and_then(|s| s.pod_ip.clone()).unwrap_or_default());
    out.insert("__meta_kubernetes_pod_ready".into(), pod_ready(pod).into());
    out.insert("__meta_kubernetes_pod_phase".into(), status.and_then(|s| s.phase.clone()).unwrap_or_default());
    out.insert("__meta_kubernetes_pod_node_name".into(), spec.and_then(|s| s.node_name.clone()).unwrap_or_default());
    out.insert("__meta_kubernetes_pod_host_ip".into(), status.and_then(|s| s.host_ip.clone()).unwrap_or_default());
    out.insert("__meta_kubernetes_pod_uid".into(), meta.uid.clone().unwrap_or_default());
    let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    if let Some(c) = controller {
        out.insert("__meta_kubernetes_pod_controller_kind".into(), c.kind.clone());
        out.insert("__meta_kubernetes_pod_controller_name".into(), c.name.clone());
    }
    object_labels(&mut out, "__meta_kubernetes_pod", meta);
    out
}

/// `true`, `false` or `unknown` from the pod's `Ready` condition.
fn pod_ready(pod: &Pod) -> &'static str {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    match conditions.and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")).map(|c| c.status.as_str()) {
        Some("True") => "true",
        Some("False") => "false",
        _ => "unknown",
    }
}

/// Regular containers, then init containers (flagged).
fn containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let spec = pod.spec.as_ref();
    let regular = spec.map(|s| s.containers.as_slice()).unwrap_or_default().iter().map(|c| (c, false));
    let init = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default().iter().map(|c| (c, true));
    regular.chain(init)
}

fn container_labels(out: &mut Labels, pod: &Pod, c: &Container, init: bool) {
    out.insert("__meta_kubernetes_pod_container_name".into(), c.name.clone());
    out.insert("__meta_kubernetes_pod_container_image".into(), c.image.clone().unwrap_or_default());
    out.insert("__meta_kubernetes_pod_container_init".into(), init.to_string());
    let status = pod.status.as_ref();
    let statuses = if init {
        status.and_then(|s| s.init_container_statuses.as_ref())
    } else {
        status.and_then(|s| s.container_statuses.as_ref())
    };
    if let Some(id) = statuses.into_iter().flatten().find(|s| s.name == c.name).and_then(|s| s.container_id.as_ref()) {
        out.insert("__meta_kubernetes_pod_container_id".into(), id.clone());
    }
}

fn container_port_labels(out: &mut Labels, port: &k8s_openapi::api::core::v1::ContainerPort) {
    out.insert("__meta_kubernetes_pod_container_port_name".into(), port.name.clone().unwrap_or_default());
    out.insert("__meta_kubernetes_pod_container_port_number".into(), port.container_port.to_string());
    out.insert(
        "__meta_kubernetes_pod_container_port_protocol".into(),
        port.protocol.clone().unwrap_or_else(|| "TCP".into()),
    );
}

/// Role `pod`: one target per declared container port (`<pod IP>:<port>`), and one per
/// container without ports (`<pod IP>`). A pod without an IP has no targets.
pub fn pod_targets(pod: &Pod) -> Vec<Labels> {
    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    let base = pod_labels(pod);
    let mut out = Vec::new();
    for (c, init) in containers(pod) {
        let ports = c.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            let mut t = base.clone();
            container_labels(&mut t, pod, c, init);
            t.insert("__address__".into(), ip.to_string());
            out.push(t);
        }
        for port in ports {
            let mut t = base.clone();
            container_labels(&mut t, pod, c, init);
            container_port_labels(&mut t, port);
            t.insert("__address__".into(), join_host_port(ip, port.container_port));
            out.push(t);
        }
    }
    out
}

/// Role `endpointslice`: one target per address and port of the slice. `service` is the slice's
/// Service (`kubernetes.io/service-name`) if known; `pod` looks pods up by namespace and name.
/// As Prometheus, container ports of the endpoints' pods that no endpoint port covers become
/// targets too (with pod and container labels but no endpoint labels).
pub fn endpoint_slice_targets<'a>(
    slice: &EndpointSlice,
    service: Option<&Service>,
    pod: impl Fn(&str, &str) -> Option<&'a Pod>,
) -> Vec<Labels> {
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    let mut base = Labels::new();
    base.insert(NAMESPACE.into(), namespace.clone());
    base.insert("__meta_kubernetes_endpointslice_name".into(), slice.metadata.name.clone().unwrap_or_default());
    base.insert("__meta_kubernetes_endpointslice_address_type".into(), slice.address_type.clone());
    object_labels(&mut base, "__meta_kubernetes_endpointslice", &slice.metadata);
    if let Some(svc) = service {
        base.extend(service_labels(svc));
    }

    let mut out = Vec::new();
    // (pod namespace, pod name) -> container ports already targeted.
    let mut seen: BTreeMap<(String, String), BTreeSet<(String, i32)>> = BTreeMap::new();
    let ports = slice.ports.as_deref().unwrap_or_default();
    for endpoint in &slice.endpoints {
        let mut ep = base.clone();
        let p = "__meta_kubernetes_endpointslice_endpoint";
        if let Some(c) = &endpoint.conditions {
            for (name, value) in [("ready", c.ready), ("serving", c.serving), ("terminating", c.terminating)] {
                if let Some(v) = value {
                    ep.insert(format!("{p}_conditions_{name}"), v.to_string());
                }
            }
        }
        if let Some(h) = &endpoint.hostname {
            ep.insert(format!("{p}_hostname"), h.clone());
        }
        if let Some(n) = &endpoint.node_name {
            ep.insert(format!("{p}_node_name"), n.clone());
        }
        if let Some(z) = &endpoint.zone {
            ep.insert(format!("{p}_zone"), z.clone());
        }
        for (k, v) in endpoint.deprecated_topology.iter().flatten() {
            let name = sanitize(k);
            ep.insert(format!("{p}_topology_{name}"), v.clone());
            ep.insert(format!("{p}_topology_present_{name}"), "true".into());
        }
        let mut target_pod = None;
        if let Some(r) = &endpoint.target_ref {
            let kind = r.kind.clone().unwrap_or_default();
            let name = r.name.clone().unwrap_or_default();
            ep.insert("__meta_kubernetes_endpointslice_address_target_kind".into(), kind.clone());
            ep.insert("__meta_kubernetes_endpointslice_address_target_name".into(), name.clone());
            if kind == "Pod" {
                let ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                target_pod = pod(&ns, &name);
            }
        }
        if let Some(pod) = target_pod {
            ep.extend(pod_labels(pod));
        }
        for address in &endpoint.addresses {
            for port in ports {
                let Some(number) = port.port else { continue };
                let mut t = ep.clone();
                t.insert("__address__".into(), join_host_port(address, number));
                t.insert("__meta_kubernetes_endpointslice_port".into(), number.to_string());
                if let Some(n) = &port.name {
                    t.insert("__meta_kubernetes_endpointslice_port_name".into(), n.clone());
                }
                if let Some(proto) = &port.protocol {
                    t.insert("__meta_kubernetes_endpointslice_port_protocol".into(), proto.clone());
                }
                if let Some(a) = &port.app_protocol {
                    t.insert("__meta_kubernetes_endpointslice_port_app_protocol".into(), a.clone());
                }
                if let Some(pod) = target_pod {
                    let protocol = port.protocol.as_deref().unwrap_or("TCP");
                    'containers: for (c, init) in containers(pod) {
                        for cp in c.ports.iter().flatten() {
                            if cp.container_port == number && cp.protocol.as_deref().unwrap_or("TCP") == protocol {
                                container_labels(&mut t, pod, c, init);
                                container_port_labels(&mut t, cp);
                                let key = (
                                    pod.metadata.namespace.clone().unwrap_or_default(),
                                    pod.metadata.name.clone().unwrap_or_default(),
                                );
                                seen.entry(key).or_default().insert((c.name.clone(), number));
                                break 'containers;
                            }
                        }
                    }
                }
                out.push(t);
            }
        }
        if let Some(pod) = target_pod {
            let key =
                (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
            seen.entry(key).or_default();
        }
    }

    // Container ports of the endpoints' pods that no endpoint port covers.
    for ((ns, name), covered) in &seen {
        let Some(pod) = pod(ns, name) else { continue };
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty()) else {
            continue;
        };
        for (c, init) in containers(pod) {
            for cp in c.ports.iter().flatten() {
                if covered.contains(&(c.name.clone(), cp.container_port)) {
                    continue;
                }
                let mut t = base.clone();
                t.extend(pod_labels(pod));
                container_labels(&mut t, pod, c, init);
                container_port_labels(&mut t, cp);
                t.insert("__address__".into(), join_host_port(ip, cp.container_port));
                out.push(t);
            }
        }
    }
    out
}
