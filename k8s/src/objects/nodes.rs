//! Nodes and Namespaces as cluster state reads them (kube-state-metrics' `kube_node_*` and
//! `kube_namespace_status_phase`). A Node's status carries its image list (every image on the
//! node with all its names and digests, often tens of KiB), attached volumes and daemon
//! endpoints; they are skipped as they arrive.

use k8s_openapi::api::core::v1::{Namespace, Node};
use serde::de::Deserializer;
use serde::Deserialize;

use super::owned::WireOwnedMeta;
use super::workloads::{conditions, Condition, WireCondition};
use super::{boxed, shared, Compact, Meta, Shared, Str, StrMap};

/// A taint: key, value (`""` when not set) and effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taint {
    pub key: Shared,
    pub value: Shared,
    pub effect: Shared,
}

/// What cluster state reads of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The name only.
    pub meta: Meta,
    /// `spec.providerID`, `spec.podCIDR` (`""` when not set), `spec.unschedulable`.
    pub provider_id: Str,
    pub pod_cidr: Str,
    pub unschedulable: bool,
    pub taints: Box<[Taint]>,
    /// `status.nodeInfo`'s `kernelVersion`, `osImage`, `containerRuntimeVersion`,
    /// `kubeletVersion`, `systemUUID` (`""` without `nodeInfo`).
    pub kernel_version: Shared,
    pub os_image: Shared,
    pub container_runtime_version: Shared,
    pub kubelet_version: Shared,
    pub system_uuid: Str,
    /// The address of the last `InternalIP` entry of `status.addresses` (what kube-state-metrics
    /// reports), `""` without one.
    pub internal_ip: Str,
    pub conditions: Box<[Condition]>,
    /// `status.capacity` and `status.allocatable`: resource name -> quantity as written.
    pub capacity: StrMap,
    pub allocatable: StrMap,
}

compact!(NodeInfo, Node, read_node);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireNodeSpec {
    #[serde(rename = "providerID")]
    provider_id: Option<String>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    unschedulable: Option<bool>,
    taints: Option<Vec<WireTaint>>,
}

#[derive(Deserialize)]
struct WireTaint {
    key: Option<Shared>,
    value: Option<Shared>,
    effect: Option<Shared>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireSystemInfo {
    kernel_version: Option<Shared>,
    os_image: Option<Shared>,
    container_runtime_version: Option<Shared>,
    kubelet_version: Option<Shared>,
    #[serde(rename = "systemUUID")]
    system_uuid: Option<String>,
}

#[derive(Deserialize)]
struct WireAddress {
    #[serde(rename = "type")]
    kind: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireNodeStatus {
    node_info: Option<WireSystemInfo>,
    addresses: Option<Vec<WireAddress>>,
    conditions: Option<Vec<WireCondition>>,
    capacity: StrMap,
    allocatable: StrMap,
}

#[derive(Deserialize)]
struct WireNode {
    #[serde(default)]
    metadata: WireOwnedMeta,
    spec: Option<WireNodeSpec>,
    status: Option<WireNodeStatus>,
}

fn read_node<'de, D: Deserializer<'de>>(d: D) -> Result<(NodeInfo, Option<String>), D::Error> {
    let WireNode { metadata: m, spec, status } = WireNode::deserialize(d)?;
    let spec = spec.unwrap_or_default();
    let status = status.unwrap_or_default();
    let info = status.node_info.unwrap_or_default();
    let internal_ip = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .rfind(|a| a.kind.as_deref() == Some("InternalIP"))
        .and_then(|a| a.address);
    let taints = spec.taints.unwrap_or_default().into_iter().map(|t| Taint {
        key: t.key.unwrap_or_default(),
        value: t.value.unwrap_or_default(),
        effect: t.effect.unwrap_or_default(),
    });
    let node = NodeInfo {
        meta: Meta { namespace: shared(m.namespace), name: boxed(m.name), ..Meta::default() },
        provider_id: boxed(spec.provider_id),
        pod_cidr: boxed(spec.pod_cidr),
        unschedulable: spec.unschedulable.unwrap_or(false),
        taints: taints.collect(),
        kernel_version: info.kernel_version.unwrap_or_default(),
        os_image: info.os_image.unwrap_or_default(),
        container_runtime_version: info.container_runtime_version.unwrap_or_default(),
        kubelet_version: info.kubelet_version.unwrap_or_default(),
        system_uuid: boxed(info.system_uuid),
        internal_ip: boxed(internal_ip),
        conditions: conditions(status.conditions),
        capacity: status.capacity,
        allocatable: status.allocatable,
    };
    Ok((node, m.resource_version))
}

/// What cluster state reads of a Namespace: its name and phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The name only.
    pub meta: Meta,
    /// `status.phase`, `""` when not set.
    pub phase: Shared,
}

compact!(NamespaceInfo, Namespace, read_namespace);

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireNamespaceStatus {
    phase: Option<Shared>,
}

#[derive(Deserialize)]
struct WireNamespace {
    #[serde(default)]
    metadata: WireOwnedMeta,
    status: Option<WireNamespaceStatus>,
}

fn read_namespace<'de, D: Deserializer<'de>>(d: D) -> Result<(NamespaceInfo, Option<String>), D::Error> {
    let WireNamespace { metadata: m, status } = WireNamespace::deserialize(d)?;
    let meta = Meta { namespace: shared(m.namespace), name: boxed(m.name), ..Meta::default() };
    let phase = status.and_then(|s| s.phase).unwrap_or_default();
    Ok((NamespaceInfo { meta, phase }, m.resource_version))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Namespace, Node};
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::objects::workloads::tests::{
        conditions_json, conditions_strategy, field, got_conditions, metadata, object, put, read, Field,
    };

    fn quantities() -> impl Strategy<Value = BTreeMap<String, String>> {
        let name = prop::sample::select(vec!["cpu", "memory", "pods", "hugepages-2Mi", "example.com/dongle"]);
        prop::collection::btree_map(name.prop_map(String::from), "[0-9]{1,4}(m|Mi|Gi|k)?", 0..4)
    }

    fn s(v: &'static [&'static str]) -> impl Strategy<Value = Field<String>> {
        field(prop::sample::select(v.to_vec()).prop_map(String::from))
    }

    proptest! {
        /// The compact type reads what `kube_node_*` reads of k8s-openapi's `Node` from the
        /// same JSON.
        #[test]
        fn a_compact_node_reads_what_cluster_state_reads_of_the_k8s_struct(
            name in "[a-z0-9-]{1,20}",
            spec_fields in (s(&["kind://n1", "aws:///eu-west-1a/i-1"]), s(&["10.1.0.0/24"]), field(any::<bool>())),
            taints in prop::collection::vec((s(&["dedicated", "node.kubernetes.io/unreachable"]), s(&["", "db"]), s(&["NoSchedule", "NoExecute"])), 0..3),
            info in field((s(&["6.1"]), s(&["Debian"]), s(&["containerd://1.7"]), s(&["v1.33.0"]), s(&["sys-1", ""]))),
            addresses in prop::collection::vec((prop::sample::select(vec!["InternalIP", "ExternalIP", "Hostname"]), s(&["10.0.0.1", "10.0.0.2", "n1"])), 0..5),
            conditions in conditions_strategy(),
            (capacity, allocatable) in (quantities(), quantities()),
            has_status in field(Just(())),
        ) {
            let (provider, cidr, unschedulable) = &spec_fields;
            let taints: Vec<Value> = taints.iter().map(|(k, v, e)| object(&[("key", &k.clone().map(|k| k.map(Value::from))), ("value", &v.clone().map(|v| v.map(Value::from))), ("effect", &e.clone().map(|e| e.map(Value::from)))])).collect();
            let mut spec = Map::new();
            put(&mut spec, "providerID", provider);
            put(&mut spec, "podCIDR", cidr);
            put(&mut spec, "unschedulable", unschedulable);
            spec.insert("taints".into(), json!(taints));
            let addresses: Vec<Value> = addresses.iter().map(|(t, a)| object(&[("type", &Some(Some(json!(t)))), ("address", &a.clone().map(|a| a.map(Value::from)))])).collect();
            let mut status = Map::new();
            if let Some(info) = &info {
                let info = info.as_ref().map(|(kernel, os, runtime, kubelet, uuid)| {
                    let mut i = Map::new();
                    for (key, value) in [("kernelVersion", kernel), ("osImage", os), ("containerRuntimeVersion", runtime), ("kubeletVersion", kubelet), ("systemUUID", uuid)] {
                        put(&mut i, key, value);
                    }
                    i.insert("kubeProxyVersion".into(), json!("v1.33.0"));
                    Value::Object(i)
                });
                status.insert("nodeInfo".into(), json!(info));
            }
            status.insert("addresses".into(), json!(addresses));
            status.insert("conditions".into(), conditions_json(&conditions));
            status.insert("capacity".into(), json!(capacity));
            status.insert("allocatable".into(), json!(allocatable));
            status.insert("images".into(), json!([{"names": ["registry.example.com/app@sha256:0123", "registry.example.com/app:1"], "sizeBytes": 1234}]));
            status.insert("daemonEndpoints".into(), json!({"kubeletEndpoint": {"Port": 10250}}));
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &None, &None, &[])))),
                ("spec", &Some(Some(Value::Object(spec)))),
                ("status", &has_status.map(|p| p.map(|()| Value::Object(status)))),
            ]);
            let full: Node = serde_json::from_value(json.clone()).expect("k8s node");
            let (compact, rv) = read::<NodeInfo>(json);
            prop_assert_eq!(rv.as_deref(), Some("42"));
            prop_assert_eq!((compact.meta.namespace(), compact.meta.name()), ("", full.metadata.name.as_deref().unwrap_or("")));
            let spec = full.spec.unwrap_or_default();
            prop_assert_eq!(&*compact.provider_id, spec.provider_id.as_deref().unwrap_or(""));
            prop_assert_eq!(&*compact.pod_cidr, spec.pod_cidr.as_deref().unwrap_or(""));
            prop_assert_eq!(compact.unschedulable, spec.unschedulable.unwrap_or(false));
            let want_taints: Vec<_> = spec.taints.iter().flatten().map(|t| (t.key.clone(), t.value.clone().unwrap_or_default(), t.effect.clone())).collect();
            let got_taints: Vec<_> = compact.taints.iter().map(|t| (t.key.to_string(), t.value.to_string(), t.effect.to_string())).collect();
            prop_assert_eq!(got_taints, want_taints);
            let status = full.status.unwrap_or_default();
            let i = status.node_info.unwrap_or_default();
            prop_assert_eq!(
                [&*compact.kernel_version, &*compact.os_image, &*compact.container_runtime_version, &*compact.kubelet_version, &*compact.system_uuid],
                [&*i.kernel_version, &*i.os_image, &*i.container_runtime_version, &*i.kubelet_version, &*i.system_uuid]
            );
            let internal_ip = status.addresses.iter().flatten().rfind(|a| a.type_ == "InternalIP").map(|a| a.address.as_str()).unwrap_or("");
            prop_assert_eq!(&*compact.internal_ip, internal_ip);
            let want: Vec<_> = status.conditions.iter().flatten().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone().unwrap_or_default())).collect();
            prop_assert_eq!(got_conditions(&compact.conditions), want);
            let map = |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| -> Vec<(String, String)> {
                m.into_iter().flatten().map(|(k, q)| (k, q.0)).collect()
            };
            let got_map = |m: &StrMap| -> Vec<(String, String)> { m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
            prop_assert_eq!(got_map(&compact.capacity), map(status.capacity));
            prop_assert_eq!(got_map(&compact.allocatable), map(status.allocatable));
        }

        /// The same for `kube_namespace_status_phase` and a `Namespace`.
        #[test]
        fn a_compact_namespace_reads_what_cluster_state_reads_of_the_k8s_struct(
            name in "[a-z0-9-]{1,20}",
            phase in s(&["Active", "Terminating"]),
            has_status in field(Just(())),
        ) {
            let mut status = Map::new();
            put(&mut status, "phase", &phase);
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &None, &None, &[])))),
                ("spec", &Some(Some(json!({"finalizers": ["kubernetes"]})))),
                ("status", &has_status.map(|p| p.map(|()| Value::Object(status)))),
            ]);
            let full: Namespace = serde_json::from_value(json.clone()).expect("k8s namespace");
            let compact = read::<NamespaceInfo>(json).0;
            prop_assert_eq!(compact.meta.name(), full.metadata.name.as_deref().unwrap_or(""));
            let phase = full.status.and_then(|s| s.phase).unwrap_or_default();
            prop_assert_eq!(&*compact.phase, phase.as_str());
        }
    }
}
