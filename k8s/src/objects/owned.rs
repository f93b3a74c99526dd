//! A ReplicaSet as cluster state reads it (`kube_replicaset_owner`): its namespace, name and
//! owner references, nothing else. A cluster keeps up to `revisionHistoryLimit` (10 by default)
//! ReplicaSets per Deployment, each with its pod template, which a slimmed k8s-openapi object
//! still carried the empty shells of (about 1 KiB each).

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde::de::Deserializer;
use serde::Deserialize;

use super::{boxed, shared, Compact, Meta, OwnerRef, WireOwner};

/// What cluster state reads of a ReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaSetInfo {
    /// Namespace and name only (labels and annotations are not read).
    pub meta: Meta,
    /// Every owner reference, in order.
    pub owners: Box<[OwnerRef]>,
}

compact!(ReplicaSetInfo, ReplicaSet, read_replicaset);

/// `metadata` without labels and annotations (ignored as they arrive): what cluster state
/// reads of every kind but Pods.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct WireOwnedMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub owner_references: Option<Vec<WireOwner>>,
}

#[derive(Deserialize)]
struct WireOwned {
    #[serde(default)]
    metadata: WireOwnedMeta,
}

pub(super) fn owner_refs(owners: Option<Vec<WireOwner>>) -> Box<[OwnerRef]> {
    owners
        .unwrap_or_default()
        .into_iter()
        .map(|o| OwnerRef { kind: o.kind.into(), name: o.name.into(), controller: o.controller })
        .collect()
}

fn read_replicaset<'de, D: Deserializer<'de>>(d: D) -> Result<(ReplicaSetInfo, Option<String>), D::Error> {
    let m = WireOwned::deserialize(d)?.metadata;
    let meta = Meta { namespace: shared(m.namespace), name: boxed(m.name), ..Meta::default() };
    Ok((ReplicaSetInfo { meta, owners: owner_refs(m.owner_references) }, m.resource_version))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::objects::Watched;

    proptest! {
        /// The compact type reads the namespace, name and owner references k8s-openapi's
        /// `ReplicaSet` reads from the same JSON.
        #[test]
        fn a_compact_replicaset_reads_what_the_k8s_struct_reads(
            name in "[a-z0-9-]{1,20}",
            namespace in prop::option::of("[a-z]{1,8}"),
            owners in prop::collection::vec(("[A-Z][a-z]{1,8}", "[a-z]{1,6}", prop::option::of(any::<bool>())), 0..3),
        ) {
            let owners: Vec<_> = owners
                .iter()
                .map(|(kind, name, controller)| json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": controller}))
                .collect();
            let json = json!({"metadata": {"name": name, "namespace": namespace, "labels": {"pod-template-hash": "5d4f8"},
                    "ownerReferences": owners, "resourceVersion": "7"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
                "status": {"replicas": 2}});
            let full: ReplicaSet = serde_json::from_value(json.clone()).expect("k8s replicaset");
            let watched = serde_json::from_value::<Watched<ReplicaSetInfo>>(json).expect("compact replicaset");
            prop_assert_eq!(kube::Resource::meta(&watched).resource_version.as_deref(), Some("7"));
            let compact = watched.into_info();
            prop_assert_eq!(compact.meta.name(), full.metadata.name.as_deref().unwrap_or(""));
            prop_assert_eq!(compact.meta.namespace(), full.metadata.namespace.as_deref().unwrap_or(""));
            let want: Vec<(String, String, Option<bool>)> = full.metadata.owner_references.iter().flatten().map(|o| (o.kind.clone(), o.name.clone(), o.controller)).collect();
            let got: Vec<(String, String, Option<bool>)> = compact.owners.iter().map(|o| (o.kind.to_string(), o.name.to_string(), o.controller)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
