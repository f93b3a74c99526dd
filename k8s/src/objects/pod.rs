//! The one Pod model of the agent: what discovery's `__meta_kubernetes_pod_*` labels, the
//! daemonset's pod index and cluster state's kube-state-metrics `kube_pod_*` families read of a
//! Pod, deserialized straight from the API server's JSON (see the parent module for why).

use k8s_openapi::api::core::v1::Pod;
use serde::de::Deserializer;
use serde::Deserialize;

use super::{boxed, boxed_opt, shared, Compact, Meta, Shared, Str, StrMap, WireMeta};

/// A Pod's `Ready` condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ready {
    True,
    False,
    /// Status `Unknown`.
    Unknown,
    /// A status other than `True`, `False` or `Unknown`.
    Other,
    /// No `Ready` condition (yet).
    #[default]
    Absent,
}

impl Ready {
    /// `__meta_kubernetes_pod_ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ready::True => "true",
            Ready::False => "false",
            Ready::Unknown | Ready::Other | Ready::Absent => "unknown",
        }
    }

    /// The condition's status (`True`, `False`, `Unknown`); `None` for [`Ready::Other`] and
    /// [`Ready::Absent`].
    pub fn status(self) -> Option<&'static str> {
        match self {
            Ready::True => Some("True"),
            Ready::False => Some("False"),
            Ready::Unknown => Some("Unknown"),
            Ready::Other | Ready::Absent => None,
        }
    }

    fn read(status: &str) -> Ready {
        match status {
            "True" => Ready::True,
            "False" => Ready::False,
            "Unknown" => Ready::Unknown,
            _ => Ready::Other,
        }
    }
}

/// A declared container port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPort {
    pub name: Option<Shared>,
    #[serde(rename = "containerPort")]
    pub number: i32,
    /// `None`: not set, which means TCP.
    pub protocol: Option<Shared>,
}

impl PodPort {
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("TCP")
    }
}

/// A container or init container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    pub name: Shared,
    pub image: Shared,
    pub init: bool,
    /// From the container's status (`containerd://...`), once it has one.
    pub id: Option<Str>,
    pub ports: Box<[PodPort]>,
    /// `resources.requests` and `resources.limits`: resource name -> quantity as written
    /// (`100m`, `128Mi`).
    pub requests: StrMap,
    pub limits: StrMap,
}

/// An owner reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub kind: Shared,
    pub name: Shared,
    /// `None`: the reference does not say.
    pub controller: Option<bool>,
}

/// The status of a regular container, in the order of `status.containerStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: Shared,
    pub restarts: i32,
    pub ready: bool,
    /// Which of `state.running`, `state.waiting`, `state.terminated` are set.
    pub running: bool,
    pub terminated: bool,
    /// `state.waiting.reason` when waiting (`""` without a reason); `None`: not waiting.
    pub waiting: Option<Shared>,
}

/// What the agent reads of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub meta: Meta,
    pub uid: Str,
    pub ip: Str,
    pub host_ip: Shared,
    pub node_name: Shared,
    pub phase: Shared,
    /// The first `Ready` condition.
    pub ready: Ready,
    /// Every owner reference, in order.
    pub owners: Box<[OwnerRef]>,
    pub priority_class: Shared,
    pub host_network: bool,
    /// Regular containers first, then init containers.
    pub containers: Box<[PodContainer]>,
    /// The regular containers' statuses.
    pub statuses: Box<[ContainerStatus]>,
}

impl PodInfo {
    /// Kind and name of the first owner reference with `controller: true`.
    pub fn controller(&self) -> Option<(&str, &str)> {
        self.owners.iter().find(|o| o.controller == Some(true)).map(|o| (&*o.kind, &*o.name))
    }
}

compact!(PodInfo, Pod, read_pod);

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireResources {
    requests: StrMap,
    limits: StrMap,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainer {
    name: String,
    image: Option<String>,
    ports: Option<Vec<PodPort>>,
    resources: Option<WireResources>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WirePodSpec {
    node_name: Option<String>,
    priority_class_name: Option<Shared>,
    host_network: Option<bool>,
    containers: Option<Vec<WireContainer>>,
    init_containers: Option<Vec<WireContainer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireWaiting {
    reason: Option<Shared>,
}

/// `running` and `terminated` are only checked for presence.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireState {
    running: Option<serde::de::IgnoredAny>,
    waiting: Option<WireWaiting>,
    terminated: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainerStatus {
    name: String,
    #[serde(rename = "containerID")]
    container_id: Option<String>,
    #[serde(default)]
    restart_count: i32,
    #[serde(default)]
    ready: bool,
    state: Option<WireState>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WirePodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "hostIP")]
    host_ip: Option<String>,
    conditions: Option<Vec<WireCondition>>,
    container_statuses: Option<Vec<WireContainerStatus>>,
    init_container_statuses: Option<Vec<WireContainerStatus>>,
}

#[derive(Deserialize)]
struct WirePod {
    #[serde(default)]
    metadata: WireMeta,
    spec: Option<WirePodSpec>,
    status: Option<WirePodStatus>,
}

fn read_pod<'de, D: Deserializer<'de>>(d: D) -> Result<(PodInfo, Option<String>), D::Error> {
    let WirePod { mut metadata, spec, status } = WirePod::deserialize(d)?;
    let resource_version = metadata.resource_version.take();
    let spec = spec.unwrap_or_default();
    let status = status.unwrap_or_default();
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready");
    let ready = ready.map(|c| Ready::read(&c.status)).unwrap_or(Ready::Absent);
    let statuses = [status.container_statuses.unwrap_or_default(), status.init_container_statuses.unwrap_or_default()];
    let container = |c: WireContainer, init: bool| {
        let id = statuses[usize::from(init)].iter().find(|s| s.name == c.name).and_then(|s| s.container_id.clone());
        let resources = c.resources.unwrap_or_default();
        PodContainer {
            image: shared(c.image),
            init,
            id: boxed_opt(id),
            ports: c.ports.unwrap_or_default().into_boxed_slice(),
            name: c.name.into(),
            requests: resources.requests,
            limits: resources.limits,
        }
    };
    let regular = spec.containers.unwrap_or_default().into_iter().map(|c| container(c, false));
    let init = spec.init_containers.unwrap_or_default().into_iter().map(|c| container(c, true));
    let containers = regular.chain(init).collect();
    let [regular_statuses, _] = statuses;
    let owners = metadata.owner_references.take();
    let pod = PodInfo {
        uid: boxed(metadata.uid.take()),
        meta: metadata.into_meta(),
        ip: boxed(status.pod_ip),
        host_ip: shared(status.host_ip),
        node_name: shared(spec.node_name),
        phase: shared(status.phase),
        ready,
        owners: super::owned::owner_refs(owners),
        priority_class: spec.priority_class_name.unwrap_or_default(),
        host_network: spec.host_network.unwrap_or(false),
        containers,
        statuses: regular_statuses
            .into_iter()
            .map(|s| {
                let state = s.state.unwrap_or_default();
                ContainerStatus {
                    name: s.name.into(),
                    restarts: s.restart_count,
                    ready: s.ready,
                    running: state.running.is_some(),
                    terminated: state.terminated.is_some(),
                    waiting: state.waiting.map(|w| w.reason.unwrap_or_default()),
                }
            })
            .collect(),
    };
    Ok((pod, resource_version))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Pod;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::objects::Watched;

    /// (kind, name, controller) of an owner reference.
    type Owner = (String, String, Option<bool>);
    /// (name, requests, limits) of a container.
    type Resources = (String, BTreeMap<String, String>, BTreeMap<String, String>);
    /// (name, restarts, ready, state: 0 none, 1 running, 2 waiting, 3 terminated, 4 running and
    /// terminated; waiting reason).
    type Status = (String, i32, bool, u8, Option<String>);

    fn owners() -> impl Strategy<Value = Vec<Owner>> {
        let kind = prop::sample::select(vec!["ReplicaSet", "Job", "StatefulSet", "Node"]).prop_map(String::from);
        prop::collection::vec((kind, "[a-z]{1,6}", prop::option::of(any::<bool>())), 0..3)
    }

    fn quantities() -> impl Strategy<Value = BTreeMap<String, String>> {
        let name =
            prop::sample::select(vec!["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"]).prop_map(String::from);
        prop::collection::btree_map(name, "[0-9]{1,4}(m|Mi|Gi|k)?", 0..3)
    }

    fn pod_json(
        owners: &[Owner],
        priority: Option<&str>,
        host_network: Option<bool>,
        containers: &[Resources],
        statuses: &[Status],
        ready: Option<&str>,
    ) -> Value {
        let owners: Vec<Value> = owners
            .iter()
            .map(|(kind, name, controller)| json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": "u", "controller": controller}))
            .collect();
        let containers: Vec<Value> = containers
            .iter()
            .enumerate()
            .map(|(i, (name, requests, limits))| {
                let resources = if i % 2 == 0 { json!({"requests": requests, "limits": limits}) } else { json!(null) };
                json!({"name": name, "resources": resources})
            })
            .collect();
        let statuses: Vec<Value> = statuses
            .iter()
            .map(|(name, restarts, ready, state, reason)| {
                let state = match state {
                    0 => json!({}),
                    1 => json!({"running": {"startedAt": "2024-05-01T10:00:00Z"}}),
                    2 => json!({"waiting": {"reason": reason, "message": "m"}}),
                    3 => json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
                    _ => json!({"running": {}, "terminated": {"exitCode": 0}}),
                };
                json!({"name": name, "restartCount": restarts, "ready": ready, "image": "i", "imageID": "", "state": state})
            })
            .collect();
        let conditions: Vec<Value> = ready
            .map(|s| json!({"type": "Ready", "status": s}))
            .into_iter()
            .chain([json!({"type": "PodScheduled", "status": "True"})])
            .collect();
        json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "ownerReferences": owners},
            "spec": {"containers": containers, "priorityClassName": priority, "hostNetwork": host_network},
            "status": {"conditions": conditions, "containerStatuses": statuses}})
    }

    proptest! {
        /// The fields kube-state-metrics' Pod families read: the compact type reads the same
        /// values as k8s-openapi's `Pod` from the same JSON.
        #[test]
        fn a_compact_pod_reads_the_kube_state_metrics_fields_as_the_k8s_struct(
            owners in owners(),
            priority in prop::option::of("[a-z-]{1,8}"),
            host_network in prop::option::of(any::<bool>()),
            containers in prop::collection::vec(("[a-z]{1,6}", quantities(), quantities()), 0..3),
            statuses in prop::collection::vec(("[a-z]{1,6}", 0i32..1000, any::<bool>(), 0u8..5, prop::option::of("[A-Za-z]{1,12}")), 0..3),
            ready in prop::option::of(prop::sample::select(vec!["True", "False", "Unknown", "", "Maybe"])),
        ) {
            let json = pod_json(&owners, priority.as_deref(), host_network, &containers, &statuses, ready);
            let full: Pod = serde_json::from_value(json.clone()).expect("k8s pod");
            let compact = serde_json::from_value::<Watched<PodInfo>>(json).expect("compact pod").into_info();
            let spec = full.spec.unwrap_or_default();
            let status = full.status.unwrap_or_default();
            let want_owners: Vec<(String, String, Option<bool>)> = full.metadata.owner_references.iter().flatten().map(|o| (o.kind.clone(), o.name.clone(), o.controller)).collect();
            let got_owners: Vec<(String, String, Option<bool>)> = compact.owners.iter().map(|o| (o.kind.to_string(), o.name.to_string(), o.controller)).collect();
            prop_assert_eq!(got_owners, want_owners);
            let controller = full.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
            prop_assert_eq!(compact.controller(), controller.map(|o| (o.kind.as_str(), o.name.as_str())));
            prop_assert_eq!(&*compact.priority_class, spec.priority_class_name.as_deref().unwrap_or(""));
            prop_assert_eq!(compact.host_network, spec.host_network.unwrap_or(false));
            let want_ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
            match want_ready.as_deref() {
                None => prop_assert_eq!(compact.ready, Ready::Absent),
                Some(s @ ("True" | "False" | "Unknown")) => prop_assert_eq!(compact.ready.status(), Some(s)),
                Some(_) => prop_assert_eq!(compact.ready, Ready::Other),
            }
            prop_assert_eq!(compact.containers.len(), spec.containers.len());
            for (got, want) in compact.containers.iter().zip(&spec.containers) {
                let map = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| -> Vec<(String, String)> {
                    m.into_iter().flatten().map(|(k, q)| (k.clone(), q.0.clone())).collect()
                };
                let r = want.resources.as_ref();
                let got_map = |m: &StrMap| -> Vec<(String, String)> { m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
                prop_assert_eq!(got_map(&got.requests), map(r.and_then(|r| r.requests.as_ref())));
                prop_assert_eq!(got_map(&got.limits), map(r.and_then(|r| r.limits.as_ref())));
            }
            let want_statuses = status.container_statuses.unwrap_or_default();
            prop_assert_eq!(compact.statuses.len(), want_statuses.len());
            for (got, want) in compact.statuses.iter().zip(&want_statuses) {
                let state = want.state.as_ref();
                prop_assert_eq!((&*got.name, got.restarts, got.ready), (want.name.as_str(), want.restart_count, want.ready));
                prop_assert_eq!(got.running, state.and_then(|s| s.running.as_ref()).is_some());
                prop_assert_eq!(got.terminated, state.and_then(|s| s.terminated.as_ref()).is_some());
                let waiting = state.and_then(|s| s.waiting.as_ref()).map(|w| w.reason.clone().unwrap_or_default());
                prop_assert_eq!(got.waiting.as_deref().map(String::from), waiting);
            }
        }
    }
}
