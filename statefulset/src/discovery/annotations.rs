//! `prometheus.io/scrape`, `/port`, `/path` and `/scheme` annotations on Pods and Services: the
//! convention of Prometheus's example configuration and its community Helm chart (jobs
//! `kubernetes-pods` and `kubernetes-service-endpoints`), as relabelings over the same meta
//! labels monitors use.
//!
//! - `prometheus.io/scrape: "true"` selects the object;
//! - `prometheus.io/port` replaces the port of the address (without it, each declared port of a
//!   pod, or each port of a service's endpoints, is a target);
//! - `prometheus.io/path` replaces `/metrics`; `prometheus.io/scheme` may be `http` or `https`.
//!
//! Final labels: the object's labels (label map), `namespace`, `pod` or `service`, and `node`.

use lgtm_config::RelabelConfig;

use super::objects::StrMap;

pub const SCRAPE: &str = "prometheus.io/scrape";
pub const POD_JOB: &str = "kubernetes-pods";
pub const SERVICE_JOB: &str = "kubernetes-service-endpoints";

/// Whether an object's annotations ask for scraping.
pub fn wants_scrape(annotations: &StrMap) -> bool {
    annotations.get(SCRAPE) == Some("true")
}

fn r(source: &[&str], target: &str, regex: &str, replacement: &str, action: &str) -> RelabelConfig {
    RelabelConfig {
        source_labels: source.iter().map(|s| s.to_string()).collect(),
        target_label: (!target.is_empty()).then(|| target.to_string()),
        regex: Some(regex.into()),
        replacement: (!replacement.is_empty()).then(|| replacement.to_string()),
        action: Some(action.into()),
        ..Default::default()
    }
}

/// Relabelings of annotated pods (role `pod`).
pub fn pod_relabelings() -> Vec<RelabelConfig> {
    let a = "__meta_kubernetes_pod_annotation_prometheus_io";
    vec![
        r(&[&format!("{a}_scrape")], "", "true", "", "keep"),
        r(&["__meta_kubernetes_pod_phase"], "", "Pending|Succeeded|Failed|Unknown", "", "drop"),
        r(&[&format!("{a}_scheme")], "__scheme__", "(https?)", "$1", "replace"),
        r(&[&format!("{a}_path")], "__metrics_path__", "(.+)", "$1", "replace"),
        r(&[&format!("{a}_port"), "__meta_kubernetes_pod_ip"], "__address__", r"(\d+);([^:]+)", "$2:$1", "replace"),
        r(&[&format!("{a}_port"), "__meta_kubernetes_pod_ip"], "__address__", r"(\d+);(.*:.*)", "[$2]:$1", "replace"),
        r(&[], "", "__meta_kubernetes_pod_label_(.+)", "$1", "labelmap"),
        r(&["__meta_kubernetes_namespace"], "namespace", "(.*)", "$1", "replace"),
        r(&["__meta_kubernetes_pod_name"], "pod", "(.*)", "$1", "replace"),
        r(&["__meta_kubernetes_pod_node_name"], "node", "(.+)", "$1", "replace"),
    ]
}

/// Relabelings of the endpoints of annotated services (role `endpointslice`).
pub fn service_relabelings() -> Vec<RelabelConfig> {
    let a = "__meta_kubernetes_service_annotation_prometheus_io";
    vec![
        r(&[&format!("{a}_scrape")], "", "true", "", "keep"),
        r(&[&format!("{a}_scheme")], "__scheme__", "(https?)", "$1", "replace"),
        r(&[&format!("{a}_path")], "__metrics_path__", "(.+)", "$1", "replace"),
        r(&["__address__", &format!("{a}_port")], "__address__", r"(.+?)(?::\d+)?;(\d+)", "$1:$2", "replace"),
        r(&[], "", "__meta_kubernetes_service_label_(.+)", "$1", "labelmap"),
        r(&["__meta_kubernetes_namespace"], "namespace", "(.*)", "$1", "replace"),
        r(&["__meta_kubernetes_service_name"], "service", "(.*)", "$1", "replace"),
        r(&["__meta_kubernetes_pod_name"], "pod", "(.+)", "$1", "replace"),
        r(&["__meta_kubernetes_pod_node_name"], "node", "(.+)", "$1", "replace"),
    ]
}
