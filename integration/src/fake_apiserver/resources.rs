//! Which resource types the fake serves, where in the URL space each lives, and whether its
//! objects live in namespaces: a table of the built-in kinds the agent reads, plus every kind that
//! appears in an applied object or is declared by an applied `CustomResourceDefinition`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One served resource type: `group/version` + `plural`, holding objects of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    /// Every type supports every verb the fake knows.
    pub const VERBS: [&'static str; 7] = ["create", "delete", "get", "list", "patch", "update", "watch"];

    pub fn new(group: &str, version: &str, kind: &str, namespaced: bool) -> ResourceType {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural_of(kind),
            namespaced,
        }
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `leases.coordination.k8s.io`, as the API server names resources in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The `APIResource` entry of discovery for this type.
    pub fn discovery_entry(&self) -> Value {
        serde_json::json!({
            "name": self.plural,
            "singularName": self.kind.to_lowercase(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ResourceType::VERBS,
        })
    }
}

/// The plural resource name Kubernetes uses for `kind`: lowercase plus `s`, `es` or `ies`, with the
/// few kinds whose name is already plural.
pub fn plural_of(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if IRREGULAR_PLURALS.contains(&lower.as_str()) {
        return lower;
    }
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with('z')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y') {
        if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) {
            return format!("{stem}ies");
        }
    }
    format!("{lower}s")
}

/// Kinds whose lowercase name is also their plural.
const IRREGULAR_PLURALS: &[&str] = &["endpoints"];

/// Built-in kinds: always listed in discovery and servable (empty) before any object exists.
/// (group, version, kind, namespaced)
const BUILT_IN: &[(&str, &str, &str, bool)] = &[
    ("", "v1", "Pod", true),
    ("", "v1", "Node", false),
    ("", "v1", "Service", true),
    ("", "v1", "Namespace", false),
    ("", "v1", "Event", true),
    ("", "v1", "Secret", true),
    ("", "v1", "ConfigMap", true),
    ("", "v1", "Endpoints", true),
    ("", "v1", "ServiceAccount", true),
    ("", "v1", "PersistentVolume", false),
    ("", "v1", "PersistentVolumeClaim", true),
    ("apps", "v1", "Deployment", true),
    ("apps", "v1", "DaemonSet", true),
    ("apps", "v1", "StatefulSet", true),
    ("apps", "v1", "ReplicaSet", true),
    ("batch", "v1", "Job", true),
    ("batch", "v1", "CronJob", true),
    ("discovery.k8s.io", "v1", "EndpointSlice", true),
    ("events.k8s.io", "v1", "Event", true),
    ("coordination.k8s.io", "v1", "Lease", true),
    ("networking.k8s.io", "v1", "Ingress", true),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", false),
    ("monitoring.coreos.com", "v1", "ServiceMonitor", true),
    ("monitoring.coreos.com", "v1", "PodMonitor", true),
    ("monitoring.coreos.com", "v1", "Probe", true),
    ("monitoring.coreos.com", "v1", "PrometheusRule", true),
];

/// Splits `apiVersion` into (group, version); `v1` is the core group.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Every resource type the fake knows, keyed by (group, version, plural).
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut registry = Registry { types: BTreeMap::new() };
        for (group, version, kind, namespaced) in BUILT_IN {
            registry.insert(ResourceType::new(group, version, kind, *namespaced));
        }
        registry
    }
}

impl Registry {
    fn insert(&mut self, rt: ResourceType) {
        let key = (rt.group.clone(), rt.version.clone(), rt.plural.clone());
        self.types.insert(key, rt);
    }

    /// The type served at `/apis/<group>/<version>/<plural>` (group empty for `/api/v1`).
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types.values().find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    /// The type of `object`, learning it when new: an unknown kind is namespaced when the first
    /// object seen of it carries a namespace (a `CustomResourceDefinition` states it exactly).
    pub fn learn_from_object(&mut self, api_version: &str, kind: &str, has_namespace: bool) -> ResourceType {
        if let Some(rt) = self.by_kind(api_version, kind) {
            return rt.clone();
        }
        let (group, version) = split_api_version(api_version);
        let rt = ResourceType::new(group, version, kind, has_namespace);
        self.insert(rt.clone());
        rt
    }

    /// Registers the types a `CustomResourceDefinition` declares (one per served version).
    pub fn learn_from_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str()) else {
            return;
        };
        let plural = spec["names"]["plural"].as_str().map(str::to_string).unwrap_or_else(|| plural_of(kind));
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for version in spec["versions"].as_array().into_iter().flatten() {
            if let Some(name) = version["name"].as_str() {
                self.insert(ResourceType {
                    group: group.to_string(),
                    version: name.to_string(),
                    kind: kind.to_string(),
                    plural: plural.clone(),
                    namespaced,
                });
            }
        }
    }

    /// Group name -> versions served, for `/apis`; the core group is left out.
    pub fn groups(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for rt in self.types.values().filter(|t| !t.group.is_empty()) {
            groups.entry(rt.group.as_str()).or_default().insert(rt.version.as_str());
        }
        groups
    }

    pub fn in_group_version<'a>(&'a self, group: &'a str, version: &'a str) -> impl Iterator<Item = &'a ResourceType> {
        self.types.values().filter(move |t| t.group == group && t.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_follow_kubernetes_naming() {
        for (kind, plural) in [
            ("Pod", "pods"),
            ("Endpoints", "endpoints"),
            ("EndpointSlice", "endpointslices"),
            ("ServiceMonitor", "servicemonitors"),
            ("PodMonitor", "podmonitors"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Gateway", "gateways"),
            ("Prometheus", "prometheuses"),
        ] {
            assert_eq!(plural_of(kind), plural, "{kind}");
        }
    }

    #[test]
    fn crd_declares_scope_and_plural() {
        let mut registry = Registry::default();
        registry.learn_from_crd(&serde_json::json!({
            "spec": {"group": "example.com", "scope": "Cluster",
                     "names": {"kind": "Widget", "plural": "widgetz"},
                     "versions": [{"name": "v1alpha1"}]}
        }));
        let rt = registry.by_plural("example.com", "v1alpha1", "widgetz").expect("registered");
        assert!(!rt.namespaced);
        assert_eq!(rt.kind, "Widget");
    }
}
