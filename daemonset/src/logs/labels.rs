//! A file's Loki stream labels, computed once when the file is opened, and the filters.
//!
//! Labels: `cluster`, `namespace`, `pod`, `container`, `node`, `job="<namespace>/<container>"`,
//! and `app` when pod metadata knows it (the pod's `app.kubernetes.io/name` or `app` label), plus
//! the pod labels/annotations the config selects. No pod uid and nothing per-line: cardinality
//! stays per container.
//!
//! `stream` (stdout/stderr) is **structured metadata** on each entry, not a label: a label would
//! double the number of streams for no selector anyone needs, and structured metadata still lets a
//! query filter on it (`| stream="stderr"`).

use std::collections::HashSet;

use lgtm_config::{LogsConfig, OwnPod};
use lgtm_pipeline::proto::loki_labels_string;

use super::path::PodLogPath;

/// What the Kubernetes API knows about a pod, as far as labels go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// The `app.kubernetes.io/name` label, else the `app` label.
    pub app: Option<String>,
    /// Further labels (already sanitised label names) from `pod_labels` / `pod_annotations`.
    pub extra: Vec<(String, String)>,
    /// The pod is annotated [`EXCLUDE_ANNOTATION`]` = "true"`: its logs are not shipped.
    pub excluded: bool,
}

/// The pod annotation that keeps a pod's logs out of Loki when `"true"`.
pub const EXCLUDE_ANNOTATION: &str = "lgtm-agent.io/exclude";

/// The seam for Kubernetes enrichment: a reflector of this node's pods implements it. Called once
/// per file when the file is opened, on the tailer's thread, so it must not block.
pub trait PodMetadata: Send + Sync + 'static {
    fn lookup(&self, namespace: &str, pod: &str, uid: &str) -> Option<PodInfo>;
}

/// `kubernetes: false`: labels come from the path alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOnly;

impl PodMetadata for PathOnly {
    fn lookup(&self, _: &str, _: &str, _: &str) -> Option<PodInfo> {
        None
    }
}

/// Labels every stream of this node shares.
#[derive(Debug, Clone)]
pub struct NodeLabels {
    pub cluster: String,
    pub node: String,
}

/// The stream selector text of one container's log file.
pub fn stream_labels(node: &NodeLabels, path: &PodLogPath, meta: Option<&PodInfo>) -> String {
    let mut labels: Vec<(String, String)> = vec![
        ("cluster".into(), node.cluster.clone()),
        ("namespace".into(), path.namespace.clone()),
        ("pod".into(), path.pod.clone()),
        ("container".into(), path.container.clone()),
        ("job".into(), format!("{}/{}", path.namespace, path.container)),
    ];
    if !node.node.is_empty() {
        labels.push(("node".into(), node.node.clone()));
    }
    if let Some(meta) = meta {
        if let Some(app) = &meta.app {
            labels.push(("app".into(), app.clone()));
        }
        for (k, v) in &meta.extra {
            if !labels.iter().any(|(name, _)| name == k) {
                labels.push((k.clone(), v.clone()));
            }
        }
    }
    loki_labels_string(&labels)
}

/// What the path alone excludes: `exclude_containers` and `exclude_namespaces` (exact names) and
/// the agent's own pod (`own_pod`: the same uid, or the same namespace and name). The pod
/// annotation is the other filter ([`PodInfo::excluded`]), known only with pod metadata.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    containers: HashSet<String>,
    namespaces: HashSet<String>,
    own_pod: OwnPod,
}

impl Filters {
    pub fn new(cfg: &LogsConfig) -> Filters {
        Filters {
            containers: cfg.exclude_containers.iter().cloned().collect(),
            namespaces: cfg.exclude_namespaces.iter().cloned().collect(),
            own_pod: cfg.own_pod.clone(),
        }
    }

    pub fn excludes(&self, path: &PodLogPath) -> bool {
        self.containers.contains(&path.container) || self.namespaces.contains(&path.namespace) || self.is_own(path)
    }

    fn is_own(&self, path: &PodLogPath) -> bool {
        let own = &self.own_pod;
        (!own.uid.is_empty() && own.uid == path.uid)
            || (!own.name.is_empty()
                && !own.namespace.is_empty()
                && own.name == path.pod
                && own.namespace == path.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PodLogPath {
        PodLogPath {
            namespace: "shop".into(),
            pod: "cart-5d".into(),
            uid: "u-1".into(),
            container: "app".into(),
            restart: 0,
        }
    }

    #[test]
    fn labels_from_the_path_alone() {
        let node = NodeLabels { cluster: "c1".into(), node: "n1".into() };
        assert_eq!(
            stream_labels(&node, &path(), None),
            r#"{cluster="c1", container="app", job="shop/app", namespace="shop", node="n1", pod="cart-5d"}"#
        );
    }

    #[test]
    fn app_and_extra_labels_from_metadata_never_override_the_base_ones() {
        let node = NodeLabels { cluster: "c1".into(), node: "n1".into() };
        let meta = PodInfo {
            app: Some("cart".into()),
            extra: vec![("team".into(), "t".into()), ("pod".into(), "evil".into())],
            excluded: false,
        };
        assert_eq!(
            stream_labels(&node, &path(), Some(&meta)),
            r#"{app="cart", cluster="c1", container="app", job="shop/app", namespace="shop", node="n1", pod="cart-5d", team="t"}"#
        );
    }

    #[test]
    fn filters_exclude_by_container_and_namespace() {
        let cfg = LogsConfig {
            exclude_containers: vec!["istio-proxy".into()],
            exclude_namespaces: vec!["kube-system".into()],
            ..Default::default()
        };
        let f = Filters::new(&cfg);
        assert!(!f.excludes(&path()));
        assert!(f.excludes(&PodLogPath { container: "istio-proxy".into(), ..path() }));
        assert!(f.excludes(&PodLogPath { namespace: "kube-system".into(), ..path() }));
    }

    #[test]
    fn the_agents_own_pod_is_excluded_by_uid_or_by_namespace_and_name() {
        let own = |namespace: &str, name: &str, uid: &str| {
            Filters::new(&LogsConfig {
                own_pod: OwnPod { namespace: namespace.into(), name: name.into(), uid: uid.into() },
                ..Default::default()
            })
        };
        let agent = PodLogPath {
            namespace: "observability".into(),
            pod: "lgtm-agent-x7k2p".into(),
            uid: "u-agent".into(),
            container: "lgtm-agent".into(),
            restart: 0,
        };
        // (who the agent is, whether its own file is excluded, whether another pod's is)
        let cases = [
            (own("observability", "lgtm-agent-x7k2p", ""), true),
            (own("", "", "u-agent"), true),
            (own("", "lgtm-agent-x7k2p", ""), false),
            (own("observability", "", ""), false),
            (own("other", "lgtm-agent-x7k2p", ""), false),
            (own("observability", "lgtm-agent-old", "u-old"), false),
            (own("", "", ""), false),
        ];
        for (i, (filters, excluded)) in cases.iter().enumerate() {
            assert_eq!(filters.excludes(&agent), *excluded, "case {i}");
            assert!(!filters.excludes(&path()), "case {i}: another pod");
        }
    }
}
