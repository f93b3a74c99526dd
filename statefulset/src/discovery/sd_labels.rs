//! The `__meta_kubernetes_*` labels of Prometheus's Kubernetes service discovery, for the two
//! roles monitors use: `endpointslice` (ServiceMonitors, service annotations) and `pod`
//! (PodMonitors, pod annotations). Names and values follow Prometheus's documentation of
//! `kubernetes_sd_config`, so relabelings written for Prometheus work unchanged.

use std::collections::{BTreeMap, BTreeSet};

use super::objects::{Meta, PodContainer, PodInfo, PodPort, ServiceInfo, SliceInfo};

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
/// `<prefix>_label_<name>`, `<prefix>_labelpresent_<name>` and the same for annotations.
fn object_labels(out: &mut Labels, prefix: &str, meta: &Meta) {
    for (kind, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        for (k, v) in map.iter() {
            let name = sanitize(k);
            out.insert(format!("{prefix}_{kind}_{name}"), v.into());
            out.insert(format!("{prefix}_{kind}present_{name}"), "true".into());
        }
    }
}

/// The labels of a Service as endpoint targets carry them.
pub fn service_labels(service: &ServiceInfo) -> Labels {
    let mut out = Labels::new();
    out.insert(NAMESPACE.into(), service.meta.namespace().to_string());
    out.insert("__meta_kubernetes_service_name".into(), service.meta.name().to_string());
    object_labels(&mut out, "__meta_kubernetes_service", &service.meta);
    out
}

/// The labels of a Pod shared by all its targets (without the container's).
pub fn pod_labels(pod: &PodInfo) -> Labels {
    let mut out = Labels::new();
    let meta = &pod.meta;
    out.insert(NAMESPACE.into(), meta.namespace().to_string());
    out.insert("__meta_kubernetes_pod_name".into(), meta.name().to_string());
    out.insert("__meta_kubernetes_pod_ip".into(), pod.ip.to_string());
    out.insert("__meta_kubernetes_pod_ready".into(), pod.ready.as_str().into());
    out.insert("__meta_kubernetes_pod_phase".into(), pod.phase.to_string());
    out.insert("__meta_kubernetes_pod_node_name".into(), pod.node_name.to_string());
    out.insert("__meta_kubernetes_pod_host_ip".into(), pod.host_ip.to_string());
    out.insert("__meta_kubernetes_pod_uid".into(), pod.uid.to_string());
    if let Some((kind, name)) = pod.controller() {
        out.insert("__meta_kubernetes_pod_controller_kind".into(), kind.to_string());
        out.insert("__meta_kubernetes_pod_controller_name".into(), name.to_string());
    }
    object_labels(&mut out, "__meta_kubernetes_pod", meta);
    out
}

fn container_labels(out: &mut Labels, c: &PodContainer) {
    out.insert("__meta_kubernetes_pod_container_name".into(), c.name.to_string());
    out.insert("__meta_kubernetes_pod_container_image".into(), c.image.to_string());
    out.insert("__meta_kubernetes_pod_container_init".into(), c.init.to_string());
    if let Some(id) = &c.id {
        out.insert("__meta_kubernetes_pod_container_id".into(), id.to_string());
    }
}

fn container_port_labels(out: &mut Labels, port: &PodPort) {
    out.insert("__meta_kubernetes_pod_container_port_name".into(), port.name.as_deref().unwrap_or_default().into());
    out.insert("__meta_kubernetes_pod_container_port_number".into(), port.number.to_string());
    out.insert("__meta_kubernetes_pod_container_port_protocol".into(), port.protocol().into());
}

/// Role `pod`: one target per declared container port (`<pod IP>:<port>`), and one per
/// container without ports (`<pod IP>`). A pod without an IP has no targets.
pub fn pod_targets(pod: &PodInfo) -> Vec<Labels> {
    if pod.ip.is_empty() {
        return Vec::new();
    }
    let ip = &*pod.ip;
    let base = pod_labels(pod);
    let mut out = Vec::new();
    for c in &pod.containers {
        if c.ports.is_empty() {
            let mut t = base.clone();
            container_labels(&mut t, c);
            t.insert("__address__".into(), ip.to_string());
            out.push(t);
        }
        for port in &c.ports {
            let mut t = base.clone();
            container_labels(&mut t, c);
            container_port_labels(&mut t, port);
            t.insert("__address__".into(), join_host_port(ip, port.number));
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
    slice: &SliceInfo,
    service: Option<&ServiceInfo>,
    pod: impl Fn(&str, &str) -> Option<&'a PodInfo>,
) -> Vec<Labels> {
    let namespace = slice.meta.namespace();
    let mut base = Labels::new();
    base.insert(NAMESPACE.into(), namespace.to_string());
    base.insert("__meta_kubernetes_endpointslice_name".into(), slice.meta.name().to_string());
    base.insert("__meta_kubernetes_endpointslice_address_type".into(), slice.address_type.to_string());
    object_labels(&mut base, "__meta_kubernetes_endpointslice", &slice.meta);
    if let Some(svc) = service {
        base.extend(service_labels(svc));
    }

    let mut out = Vec::new();
    // (pod namespace, pod name) -> container ports already targeted.
    let mut seen: BTreeMap<(&str, &str), BTreeSet<(&str, i32)>> = BTreeMap::new();
    for endpoint in &slice.endpoints {
        let mut ep = base.clone();
        let p = "__meta_kubernetes_endpointslice_endpoint";
        for (name, value) in
            [("ready", endpoint.ready), ("serving", endpoint.serving), ("terminating", endpoint.terminating)]
        {
            if let Some(v) = value {
                ep.insert(format!("{p}_conditions_{name}"), v.to_string());
            }
        }
        if let Some(h) = &endpoint.hostname {
            ep.insert(format!("{p}_hostname"), h.to_string());
        }
        if let Some(n) = &endpoint.node_name {
            ep.insert(format!("{p}_node_name"), n.to_string());
        }
        if let Some(z) = &endpoint.zone {
            ep.insert(format!("{p}_zone"), z.to_string());
        }
        for (k, v) in endpoint.deprecated_topology.iter() {
            let name = sanitize(k);
            ep.insert(format!("{p}_topology_{name}"), v.into());
            ep.insert(format!("{p}_topology_present_{name}"), "true".into());
        }
        let mut target_pod = None;
        if let Some(r) = &endpoint.target_ref {
            ep.insert("__meta_kubernetes_endpointslice_address_target_kind".into(), r.kind.to_string());
            ep.insert("__meta_kubernetes_endpointslice_address_target_name".into(), r.name.to_string());
            if &*r.kind == "Pod" {
                target_pod = pod(r.namespace.as_deref().unwrap_or(namespace), &r.name);
            }
        }
        if let Some(pod) = target_pod {
            ep.extend(pod_labels(pod));
        }
        for address in &endpoint.addresses {
            for port in &slice.ports {
                let Some(number) = port.port else { continue };
                let mut t = ep.clone();
                t.insert("__address__".into(), join_host_port(address, number));
                t.insert("__meta_kubernetes_endpointslice_port".into(), number.to_string());
                if let Some(n) = &port.name {
                    t.insert("__meta_kubernetes_endpointslice_port_name".into(), n.to_string());
                }
                if let Some(proto) = &port.protocol {
                    t.insert("__meta_kubernetes_endpointslice_port_protocol".into(), proto.to_string());
                }
                if let Some(a) = &port.app_protocol {
                    t.insert("__meta_kubernetes_endpointslice_port_app_protocol".into(), a.to_string());
                }
                if let Some(pod) = target_pod {
                    let protocol = port.protocol.as_deref().unwrap_or("TCP");
                    let matching = pod.containers.iter().find_map(|c| {
                        c.ports.iter().find(|cp| cp.number == number && cp.protocol() == protocol).map(|cp| (c, cp))
                    });
                    if let Some((c, cp)) = matching {
                        container_labels(&mut t, c);
                        container_port_labels(&mut t, cp);
                        let key = (pod.meta.namespace(), pod.meta.name());
                        seen.entry(key).or_default().insert((&c.name, number));
                    }
                }
                out.push(t);
            }
        }
        if let Some(pod) = target_pod {
            seen.entry((pod.meta.namespace(), pod.meta.name())).or_default();
        }
    }

    // Container ports of the endpoints' pods that no endpoint port covers.
    for ((ns, name), covered) in &seen {
        let Some(pod) = pod(ns, name).filter(|p| !p.ip.is_empty()) else { continue };
        for c in &pod.containers {
            for cp in &c.ports {
                if covered.contains(&(&*c.name, cp.number)) {
                    continue;
                }
                let mut t = base.clone();
                t.extend(pod_labels(pod));
                container_labels(&mut t, c);
                container_port_labels(&mut t, cp);
                t.insert("__address__".into(), join_host_port(&pod.ip, cp.number));
                out.push(t);
            }
        }
    }
    out
}
