//! What the agent keeps of each watched Pod ([`pod`]: discovery, the daemonset's pod index and
//! cluster state read the same type), Service and EndpointSlice, and of the kinds only cluster
//! state reads (ReplicaSet, Deployment, DaemonSet, StatefulSet, Job, Node, Namespace): the
//! fields the `__meta_kubernetes_*` labels (`lgtm_statefulset::discovery::sd_labels`), monitor
//! selectors and kube-state-metrics families read, in types of our own that the watch
//! deserializes the API server's JSON into directly. Each has a property test against
//! k8s-openapi's struct for exactly the fields read.
//!
//! Why not the k8s-openapi structs, pruned as they arrive: a `Pod` struct is about 1.3 KiB of
//! `Option`s before any of its strings, its `PodSpec` and each `Container` as much again, and
//! its label maps are B-trees whose smallest node holds eleven entries (about 0.5 KiB for a map
//! of two). Pruned Pods still took 5 to 7 KiB each in a heap profile of `bench discovery`
//! (3,000 Pods, 1,000 Services and EndpointSlices: about 26 MiB of stores); these types take a
//! few hundred bytes (see the size test below).
//!
//! Why deserialize straight into them rather than convert: a relist deserializes every object
//! of the list at once. Converting afterwards leaves each compact object among the freed pages
//! of the full ones (tens of MiB for thousands of Pods), and the allocator cannot give back a
//! page that still holds one live object. Without the full objects, the compact ones are
//! allocated next to each other.
//!
//! Strings are `Box<str>` (no spare capacity), lists boxed slices, maps sorted slices of pairs.
//! The watcher needs a [`kube::Resource`] with an `ObjectMeta` (for the resource version): it
//! watches [`Watched`] objects, whose `ObjectMeta` (about 0.4 KiB of mostly empty fields) is
//! dropped before the store ([`crate::store`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A boxed string; `""` for a field the object does not set.
pub type Str = Box<str>;

/// A string that many objects hold the same value of (namespace, node, image, label keys and
/// most label values, port names, protocols): one copy per distinct value, shared through
/// [`intern`]. A Pod held about a dozen such strings of its own.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shared(Arc<str>);

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Shared {
        intern(s)
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Shared {
        intern(&s)
    }
}

impl<'de> Deserialize<'de> for Shared {
    /// Interns the string as read, without an owned copy first.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        struct Interned;
        impl Visitor<'_> for Interned {
            type Value = Shared;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E>(self, s: &str) -> Result<Shared, E> {
                Ok(intern(s))
            }
        }
        d.deserialize_str(Interned)
    }
}

/// The distinct values of every [`Shared`] string.
static INTERNED: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);

/// The one copy of `s`.
pub fn intern(s: &str) -> Shared {
    let mut set = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    let set = set.get_or_insert_with(HashSet::new);
    if let Some(found) = set.get(s) {
        return Shared(found.clone());
    }
    let new: Arc<str> = Arc::from(s);
    set.insert(new.clone());
    Shared(new)
}

/// Drops the values no object holds any more (the stores replaced or deleted them).
pub fn forget_unused_strings() {
    let mut set = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = set.as_mut() {
        set.retain(|s| Arc::strong_count(s) > 1);
        set.shrink_to_fit();
    }
}

/// A string map (labels, annotations, topology) sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrMap(Box<[(Shared, Shared)]>);

impl StrMap {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Shared>, V: Into<Shared>> FromIterator<(K, V)> for StrMap {
    /// Sorted by key; of two pairs with the same key the later wins (as in a JSON object).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> StrMap {
        let mut pairs: Vec<(Shared, Shared)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        StrMap(pairs.into_boxed_slice())
    }
}

impl<'de> Deserialize<'de> for StrMap {
    /// A JSON object of strings (`null`: empty), without an intermediate map.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrMap, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = StrMap;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }

            fn visit_unit<E>(self) -> Result<StrMap, E> {
                Ok(StrMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrMap, A::Error> {
                let mut pairs: Vec<(Shared, Shared)> = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }
        d.deserialize_any(Pairs)
    }
}

/// The metadata of every kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub namespace: Shared,
    pub name: Str,
    pub labels: StrMap,
    pub annotations: StrMap,
}

impl Meta {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An object as the watch deserializes it: the compact type, and an `ObjectMeta` with only the
/// resource version for the watcher. [`Watched::into_info`] is what the store keeps.
#[derive(Debug, Clone)]
pub struct Watched<T> {
    object: ObjectMeta,
    info: T,
}

impl<T> Watched<T> {
    pub fn into_info(self) -> T {
        self.info
    }
}

/// A compact type: the kind it stands for and how it reads that kind's JSON.
pub trait Compact: Sized {
    type Kind: k8s_openapi::Resource;

    /// The object and its resource version.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<(Self, Option<String>), D::Error>;

    fn meta(&self) -> &Meta;
}

impl<'de, T: Compact> Deserialize<'de> for Watched<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Watched<T>, D::Error> {
        let (info, resource_version) = T::read(d)?;
        Ok(Watched { object: ObjectMeta { resource_version, ..ObjectMeta::default() }, info })
    }
}

impl<T: Compact> kube::Resource for Watched<T> {
    type DynamicType = ();
    type Scope = <T::Kind as k8s_openapi::Resource>::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(<T::Kind as k8s_openapi::Resource>::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(<T::Kind as k8s_openapi::Resource>::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(<T::Kind as k8s_openapi::Resource>::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(<T::Kind as k8s_openapi::Resource>::URL_PATH_SEGMENT)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.object
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.object
    }
}

/// `metadata` as it arrives.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: StrMap,
    annotations: StrMap,
    owner_references: Option<Vec<WireOwner>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireOwner {
    kind: String,
    name: String,
    controller: Option<bool>,
}

impl WireMeta {
    fn into_meta(self) -> Meta {
        Meta {
            namespace: shared(self.namespace),
            name: boxed(self.name),
            labels: self.labels,
            annotations: self.annotations,
        }
    }
}

/// Implements [`Compact`] (through `$read`) for a compact type.
macro_rules! compact {
    ($compact:ty, $k8s:ty, $read:path) => {
        impl Compact for $compact {
            type Kind = $k8s;

            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<(Self, Option<String>), D::Error> {
                $read(d)
            }

            fn meta(&self) -> &Meta {
                &self.meta
            }
        }
    };
}

fn boxed(s: Option<String>) -> Str {
    s.unwrap_or_default().into_boxed_str()
}

fn boxed_opt(s: Option<String>) -> Option<Str> {
    s.map(String::into_boxed_str)
}

fn shared(s: Option<String>) -> Shared {
    s.as_deref().unwrap_or_default().into()
}

mod nodes;
mod owned;
pub mod pod;
mod workloads;
pub use nodes::{NamespaceInfo, NodeInfo, Taint};
pub use owned::ReplicaSetInfo;
pub use pod::{ContainerStatus, OwnerRef, PodContainer, PodInfo, PodPort, Ready};
pub use workloads::{Condition, DaemonSetInfo, DeploymentInfo, JobInfo, StatefulSetInfo};

/// What discovery reads of a Service: its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub meta: Meta,
}

compact!(ServiceInfo, Service, read_service);

#[derive(Deserialize)]
struct WireObject {
    #[serde(default)]
    metadata: WireMeta,
}

fn read_service<'de, D: Deserializer<'de>>(d: D) -> Result<(ServiceInfo, Option<String>), D::Error> {
    let mut metadata = WireObject::deserialize(d)?.metadata;
    let resource_version = metadata.resource_version.take();
    Ok((ServiceInfo { meta: metadata.into_meta() }, resource_version))
}

/// The object an endpoint points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TargetRef {
    #[serde(default)]
    pub kind: Shared,
    #[serde(default)]
    pub name: Str,
    pub namespace: Option<Shared>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Box<[Str]>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub hostname: Option<Str>,
    pub node_name: Option<Shared>,
    pub zone: Option<Shared>,
    pub deprecated_topology: StrMap,
    pub target_ref: Option<TargetRef>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireConditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEndpoint {
    #[serde(default)]
    addresses: Vec<Str>,
    conditions: Option<WireConditions>,
    hostname: Option<Str>,
    node_name: Option<Shared>,
    zone: Option<Shared>,
    #[serde(default)]
    deprecated_topology: StrMap,
    target_ref: Option<TargetRef>,
}

/// One port of a slice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    pub port: Option<i32>,
    pub name: Option<Shared>,
    pub protocol: Option<Shared>,
    pub app_protocol: Option<Shared>,
}

/// What discovery reads of an EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInfo {
    pub meta: Meta,
    pub address_type: Shared,
    pub endpoints: Box<[SliceEndpoint]>,
    pub ports: Box<[SlicePort]>,
}

compact!(SliceInfo, EndpointSlice, read_slice);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSlice {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    address_type: Shared,
    endpoints: Option<Vec<WireEndpoint>>,
    ports: Option<Vec<SlicePort>>,
}

fn read_slice<'de, D: Deserializer<'de>>(d: D) -> Result<(SliceInfo, Option<String>), D::Error> {
    let mut slice = WireSlice::deserialize(d)?;
    let resource_version = slice.metadata.resource_version.take();
    let endpoints = slice.endpoints.unwrap_or_default().into_iter().map(|e| {
        let conditions = e.conditions.unwrap_or_default();
        SliceEndpoint {
            addresses: e.addresses.into_boxed_slice(),
            ready: conditions.ready,
            serving: conditions.serving,
            terminating: conditions.terminating,
            hostname: e.hostname,
            node_name: e.node_name,
            zone: e.zone,
            deprecated_topology: e.deprecated_topology,
            target_ref: e.target_ref,
        }
    });
    let info = SliceInfo {
        meta: slice.metadata.into_meta(),
        address_type: slice.address_type,
        endpoints: endpoints.collect(),
        ports: slice.ports.unwrap_or_default().into_boxed_slice(),
    };
    Ok((info, resource_version))
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    /// Counts the bytes this thread has live on the heap, to weigh what a store keeps.
    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: delegates to the system allocator; the counter is a const-initialised thread
    // local without destructor, which does not allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.with(|l| l.set(l.get() + layout.size() as isize));
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.with(|l| l.set(l.get() - layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// The compact object as the watch reads it.
    fn read<T: Compact>(json: serde_json::Value) -> T {
        serde_json::from_value::<Watched<T>>(json).expect("valid object").into_info()
    }

    /// Heap bytes `make` leaves live (what it returns keeps), plus the value's own size.
    fn weight<T>(make: impl FnOnce() -> T) -> (T, usize) {
        let before = LIVE.with(Cell::get);
        let value = make();
        let after = LIVE.with(Cell::get);
        (value, (after - before) as usize + std::mem::size_of::<T>())
    }

    /// A Pod as a Deployment creates it (the shape `bench discovery` serves).
    fn realistic_pod() -> serde_json::Value {
        json!({
            "metadata": {"name": "svc-17-2", "namespace": "ns-7", "uid": "3f6c2a1e-0000-4000-8000-000000000053",
                "resourceVersion": "48213",
                "labels": {"app": "svc-17", "app.kubernetes.io/name": "svc-17", "pod-template-hash": "5d4f8"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "svc-17-5d4f8",
                    "uid": "rs-svc-17", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": "node-13", "serviceAccountName": "default",
                "containers": [{"name": "app", "image": "registry.example.com/team/app:1.4.2",
                    "ports": [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            "status": {"phase": "Running", "podIP": "10.1.0.53", "hostIP": "172.18.0.15",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "image": "registry.example.com/team/app:1.4.2", "imageID": "sha256:0123",
                    "containerID": "containerd://0000000000000000000000000000000000000000000000000000000000000053"}]}
        })
    }

    #[test]
    fn a_compact_pod_weighs_a_fraction_of_the_k8s_struct() {
        let json = realistic_pod();
        let (_, full) = weight(|| serde_json::from_value::<Pod>(json.clone()).expect("pod"));
        let read = |json: &serde_json::Value| serde_json::from_value::<Watched<PodInfo>>(json.clone()).expect("pod");
        // The first Pod interns the strings Pods share; the second, of another name, shares them.
        let first = read(&json).into_info();
        let mut other = json.clone();
        other["metadata"]["name"] = json!("svc-17-3");
        let (compact, size) = weight(|| read(&other).into_info());
        drop(first);
        // Measured: 7,770 bytes for the struct, 570 for the compact type (781 without sharing).
        assert!(size * 10 < full, "compact {size} bytes, k8s-openapi {full} bytes");
        assert_eq!(compact.ip.as_ref(), "10.1.0.53");
        assert_eq!(compact.uid.as_ref(), "3f6c2a1e-0000-4000-8000-000000000053");
        assert_eq!(compact.meta.labels.get("app"), Some("svc-17"));
        assert_eq!(compact.controller(), Some(("ReplicaSet", "svc-17-5d4f8")));
        let watched = read(&json);
        assert_eq!(kube::Resource::meta(&watched).resource_version.as_deref(), Some("48213"));
        assert_eq!(watched.into_info().meta.name(), "svc-17-2");
    }

    /// A Node and a Deployment as `bench cluster-state` serves them (nodes have 30 images).
    fn realistic_node_and_deployment(i: usize) -> (serde_json::Value, serde_json::Value) {
        let conditions: Vec<_> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"]
            .iter()
            .map(|c| json!({"type": c, "status": if *c == "Ready" { "True" } else { "False" }, "message": "kubelet is posting ready status"}))
            .collect();
        let images: Vec<_> = (0..30)
            .map(|k| json!({"names": [format!("registry.example.com/team/app-{k}@sha256:{k:064}")], "sizeBytes": 123_456_789}))
            .collect();
        let node = json!({"metadata": {"name": format!("node-{i}"), "resourceVersion": "1", "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
            "spec": {"podCIDR": format!("10.{i}.0.0/24"), "providerID": format!("kind://docker/node-{i}")},
            "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"},
                "allocatable": {"cpu": "15800m", "memory": "62Gi", "pods": "110", "ephemeral-storage": "190Gi"},
                "conditions": conditions, "images": images,
                "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{i}")}, {"type": "Hostname", "address": format!("node-{i}")}],
                "nodeInfo": {"kernelVersion": "6.1.0-18-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.13",
                    "kubeletVersion": "v1.33.1", "kubeProxyVersion": "v1.33.1", "systemUUID": format!("uuid-{i}"), "machineID": "m", "bootID": "b",
                    "operatingSystem": "linux", "architecture": "amd64"}}});
        let deployment = json!({"metadata": {"name": format!("app-{i}"), "namespace": "ns-1", "generation": 1, "resourceVersion": "1", "labels": {"app": format!("app-{i}")}},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                "template": {"metadata": {"labels": {"app": format!("app-{i}")}}, "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}},
            "status": {"replicas": 10, "readyReplicas": 10, "availableReplicas": 10, "unavailableReplicas": 0, "updatedReplicas": 10, "observedGeneration": 1,
                "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}});
        (node, deployment)
    }

    /// What cluster state held before the compact types: the k8s-openapi struct, slimmed as it
    /// arrived (metadata maps, a Node's images, volumes, endpoints, config and condition
    /// messages, a Deployment's template and selector dropped).
    #[test]
    fn compact_cluster_state_kinds_weigh_a_fraction_of_the_slimmed_k8s_structs() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Node;
        fn slim_meta(m: &mut ObjectMeta) {
            (m.managed_fields, m.annotations, m.labels, m.finalizers) = (None, None, None, None);
        }
        // The first pair interns the strings every Node and Deployment shares.
        let (node, deployment) = realistic_node_and_deployment(1);
        let _first: (NodeInfo, DeploymentInfo) = (read(node), read(deployment));
        let (node, deployment) = realistic_node_and_deployment(2);
        let (_, slim_node) = weight(|| {
            let mut n: Node = serde_json::from_value(node.clone()).expect("node");
            slim_meta(&mut n.metadata);
            let status = n.status.as_mut().expect("status");
            (status.images, status.volumes_attached, status.volumes_in_use) = (None, None, None);
            (status.daemon_endpoints, status.config) = (None, None);
            status.conditions.iter_mut().flatten().for_each(|c| c.message = None);
            n
        });
        let (_, compact_node) = weight(|| read::<NodeInfo>(node.clone()));
        let (_, slim_deployment) = weight(|| {
            let mut d: Deployment = serde_json::from_value(deployment.clone()).expect("deployment");
            slim_meta(&mut d.metadata);
            let spec = d.spec.as_mut().expect("spec");
            (spec.template, spec.selector) = Default::default();
            d
        });
        let (_, compact_deployment) = weight(|| read::<DeploymentInfo>(deployment.clone()));
        // Measured: Node 3,743 -> 813 bytes, Deployment 2,726 -> 229 bytes.
        assert!(compact_node * 4 < slim_node, "node: compact {compact_node} bytes, slimmed {slim_node} bytes");
        assert!(
            compact_deployment * 4 < slim_deployment,
            "deployment: compact {compact_deployment} bytes, slimmed {slim_deployment} bytes"
        );
    }

    #[test]
    fn null_and_missing_fields_read_as_empty() {
        let pod: PodInfo = read(json!({"metadata": {"name": "p", "labels": null}, "spec": null,
            "status": {"conditions": null}}));
        assert_eq!((pod.meta.name(), pod.meta.namespace(), pod.ip.as_ref()), ("p", "", ""));
        assert!(pod.meta.labels.is_empty() && pod.containers.is_empty());
        assert_eq!(pod.ready, Ready::Absent);
        let slice: SliceInfo = read(json!({"metadata": {"name": "s"}, "endpoints": null}));
        assert!(slice.endpoints.is_empty() && slice.ports.is_empty());
    }

    /// A Pod's JSON from parts: labels, containers (name, ports, init or not), IPs, conditions.
    fn pod_json(
        labels: &BTreeMap<String, String>,
        containers: &[(String, Vec<i32>, bool)],
        ip: Option<&str>,
        ready: Option<bool>,
    ) -> serde_json::Value {
        let spec = |init: bool| -> Vec<serde_json::Value> {
            containers
                .iter()
                .filter(|c| c.2 == init)
                .map(|(name, ports, _)| {
                    let ports: Vec<_> = ports.iter().map(|p| json!({"containerPort": p, "name": format!("p{p}")})).collect();
                    json!({"name": name, "image": format!("img/{name}"), "ports": ports, "env": [{"name": "X", "value": "y"}]})
                })
                .collect()
        };
        let statuses: Vec<_> = containers.iter().filter(|c| !c.2).map(|(name, _, _)| json!({"name": name, "containerID": format!("cri://{name}"), "image": "", "imageID": "", "ready": true, "restartCount": 0})).collect();
        let conditions: Vec<_> =
            ready.map(|r| json!({"type": "Ready", "status": if r { "True" } else { "False" }})).into_iter().collect();
        json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": labels},
            "spec": {"nodeName": "node", "containers": spec(false), "initContainers": spec(true)},
            "status": {"podIP": ip, "phase": "Running", "conditions": conditions, "containerStatuses": statuses}})
    }

    proptest::proptest! {
        /// The compact type reads the same values as k8s-openapi's `Pod` from the same JSON.
        #[test]
        fn a_compact_pod_reads_what_the_k8s_struct_reads(
            labels in proptest::collection::btree_map("[a-z./-]{1,12}", "[a-zA-Z0-9_.-]{0,12}", 0..6),
            containers in proptest::collection::vec(("[a-z]{1,6}", proptest::collection::vec(1i32..65535, 0..3), proptest::bool::ANY), 0..4),
            ip in proptest::option::of("10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"),
            ready in proptest::option::of(proptest::bool::ANY),
        ) {
            let json = pod_json(&labels, &containers, ip.as_deref(), ready);
            let full: Pod = serde_json::from_value(json.clone()).expect("k8s pod");
            let compact = serde_json::from_value::<Watched<PodInfo>>(json).expect("compact pod").into_info();
            let spec = full.spec.unwrap_or_default();
            let status = full.status.unwrap_or_default();
            proptest::prop_assert_eq!(compact.meta.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(), full.metadata.labels.unwrap_or_default());
            proptest::prop_assert_eq!(&*compact.ip, status.pod_ip.as_deref().unwrap_or(""));
            let want_ready = match status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status.as_str()) {
                Some("True") => Ready::True,
                Some("False") => Ready::False,
                Some("Unknown") => Ready::Unknown,
                Some(_) => Ready::Other,
                None => Ready::Absent,
            };
            proptest::prop_assert_eq!(compact.ready, want_ready);
            let regular = spec.containers.iter().map(|c| (c, false));
            let all: Vec<_> = regular.chain(spec.init_containers.iter().flatten().map(|c| (c, true))).collect();
            proptest::prop_assert_eq!(compact.containers.len(), all.len());
            for (got, (want, init)) in compact.containers.iter().zip(all) {
                proptest::prop_assert_eq!((&*got.name, &*got.image, got.init), (want.name.as_str(), want.image.as_deref().unwrap_or(""), init));
                let ports: Vec<(i32, Option<String>)> = want.ports.iter().flatten().map(|p| (p.container_port, p.name.clone())).collect();
                proptest::prop_assert_eq!(got.ports.iter().map(|p| (p.number, p.name.as_deref().map(String::from))).collect::<Vec<_>>(), ports);
                let id = status.container_statuses.iter().flatten().filter(|_| !init).find(|s| s.name == want.name).and_then(|s| s.container_id.clone());
                proptest::prop_assert_eq!(got.id.as_deref().map(String::from), id);
            }
        }
    }

    #[test]
    fn equal_strings_share_one_copy_until_unused() {
        let a = intern("interned-in-a-test");
        let b: Shared = serde_json::from_str(r#""interned-in-a-test""#).expect("string");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let weak = Arc::downgrade(&a.0);
        drop((a, b));
        forget_unused_strings();
        assert!(weak.upgrade().is_none(), "the interner let go of it");
    }

    #[test]
    fn str_map_lookups_follow_the_sorted_keys() {
        let map: StrMap = [("b", "2"), ("a", "x"), ("a", "1")].into_iter().collect();
        assert_eq!(map.get("a"), Some("1"));
        assert_eq!(map.get("b"), Some("2"));
        assert_eq!(map.get("c"), None);
        assert_eq!(map.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        let parsed: StrMap = serde_json::from_str(r#"{"b": "2", "a": "1"}"#).expect("map");
        assert_eq!(parsed, map);
        assert!(serde_json::from_str::<StrMap>("null").expect("null").is_empty());
    }
}
