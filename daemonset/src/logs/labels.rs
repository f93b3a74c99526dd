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

use lgtm_config::LogsConfig;
use lgtm_pipeline::proto::loki_labels_string;

use super::path::PodLogPath;

/// What the Kubernetes API knows about a pod, as far as labels go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// The `app.kubernetes.io/name` label, else the `app` label.
    pub app: Option<String>,
    /// Further labels (already sanitised label names) from `pod_labels` / `pod_annotations`.
    pub extra: Vec<(String, String)>,
}

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

/// `exclude_containers` and `exclude_namespaces` (exact names).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    containers: HashSet<String>,
    namespaces: HashSet<String>,
}

impl Filters {
    pub fn new(cfg: &LogsConfig) -> Filters {
        Filters {
            containers: cfg.exclude_containers.iter().cloned().collect(),
            namespaces: cfg.exclude_namespaces.iter().cloned().collect(),
        }
    }

    pub fn excludes(&self, path: &PodLogPath) -> bool {
        self.containers.contains(&path.container) || self.namespaces.contains(&path.namespace)
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
}
