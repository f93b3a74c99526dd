//! Discovery documents: `/version`, `/api` (`APIVersions`), `/apis` (`APIGroupList`),
//! `/apis/<group>` (`APIGroup`), `/api/v1` and `/apis/<group>/<version>` (`APIResourceList`), and
//! the aggregated form (`APIGroupDiscoveryList`, apidiscovery.k8s.io/v2) of `/api` and `/apis`
//! that clients ask for with an `Accept` of `...;as=APIGroupDiscoveryList`.

use serde_json::{json, Value};

use super::resources::{Registry, ResourceType};

/// The `Content-Type` of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList")
}

pub fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-lgtm-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry.groups().keys().filter_map(|g| group_entry(registry, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    let mut entry = group_entry(registry, group)?;
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

fn group_entry(registry: &Registry, group: &str) -> Option<Value> {
    let groups = registry.groups();
    let versions: Vec<Value> =
        groups.get(group)?.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    // Versions sort as text, so `v1` comes before `v1beta1`: the stable one is preferred.
    Some(json!({"name": group, "preferredVersion": versions.first().cloned(), "versions": versions}))
}

/// The `APIResourceList` of one group version (group empty for core), if it serves anything.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = registry.in_group_version(group, version).map(ResourceType::discovery_entry).collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// The aggregated discovery of the core group (`core` true, for `/api`) or of every named group
/// (for `/apis`).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let groups: Vec<(&str, Vec<&str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        registry.groups().into_iter().map(|(g, vs)| (g, vs.into_iter().collect())).collect()
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|version| {
                    let resources: Vec<Value> = registry
                        .in_group_version(group, version)
                        .map(|rt| {
                            json!({
                                "resource": rt.plural,
                                "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": rt.kind.to_lowercase(),
                                "verbs": ResourceType::VERBS,
                            })
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
