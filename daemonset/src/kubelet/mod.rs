//! This node's kubelet as scrape targets: `/metrics`, `/metrics/cadvisor`, `/metrics/resource`
//! and `/metrics/probes`, as [`TargetGroup`]s for the scrape crate's `TargetManager`.
//!
//! What it does: builds one target group per path, scraped over HTTPS with the service
//! account's bearer token (the scrape loop re-reads the file before every scrape: projected
//! tokens rotate) and the cluster CA, either from the kubelet itself
//! (`https://<host>:<port>/metrics/...`, `via: direct`) or through the API server's
//! `nodes/proxy` subresource (`https://<apiserver>/api/v1/nodes/<node>/proxy/metrics/...`,
//! `via: apiserver`, for clusters whose network policies keep pods away from port 10250).
//!
//! The series carry the labels kube-prometheus users have in their dashboards and alerts:
//! `job="kubelet"`, `metrics_path` (`/metrics/cadvisor`, ...), `node`, and
//! `instance="<host>:<port>"`, whichever way the kubelet is reached; the sink adds `cluster`.
//! As in kube-prometheus, `honor_labels` is on (cAdvisor's and the probe metrics' own
//! `namespace`, `pod` and `container` labels are kept as they are), and cAdvisor's explicit
//! timestamps are ignored unless `scrape.kubelet.cadvisor_honor_timestamps` is set: cAdvisor
//! stamps each container's samples with the time of its last housekeeping, which makes series
//! look stale between housekeepings and produces out-of-order samples when a container's stats
//! are refreshed out of step with the scrape.
//!
//! What it does not: scrape anything itself (the `TargetManager` does), discover the node's
//! address (`scrape.kubelet.address` names it, e.g. `${NODE_IP}`; else the host the agent
//! passes, the node name), or read the environment.

use std::collections::BTreeMap;
use std::sync::Arc;

use lgtm_config::{KubeletVia, ScrapeConfig};
use lgtm_scrape::{Auth, ScrapeOptions, TargetGroup, TlsOptions};

/// The `job` label of every kubelet series (kube-prometheus's).
pub const JOB: &str = "kubelet";

/// The API server as pods reach it (its serving certificate names this host).
pub const DEFAULT_APISERVER: &str = "kubernetes.default.svc:443";

/// The kubelet's metrics endpoints, as they appear in the `metrics_path` label.
pub const PATHS: [&str; 4] = ["/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes"];

const CADVISOR_PATH: &str = "/metrics/cadvisor";

/// Where this node's kubelet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletNode {
    /// The node's name (`node` label; the `nodes/proxy` path).
    pub name: String,
    /// The host the kubelet is reached at with `via: direct`, and the host part of `instance`.
    /// Usually the node name or its IP.
    pub host: String,
    /// `host:port` of the API server, for `via: apiserver`.
    pub apiserver: String,
}

impl KubeletNode {
    /// The node `name`, reached at that name; the API server at [`DEFAULT_APISERVER`].
    pub fn new(name: &str) -> KubeletNode {
        KubeletNode { name: name.to_string(), host: name.to_string(), apiserver: DEFAULT_APISERVER.to_string() }
    }

    /// Reach the kubelet at `host` (e.g. the node IP) instead of the node name.
    pub fn with_host(mut self, host: &str) -> KubeletNode {
        self.host = host.to_string();
        self
    }

    /// Go through the API server at `address` (`host:port`) for `via: apiserver`.
    pub fn with_apiserver(mut self, address: &str) -> KubeletNode {
        self.apiserver = address.to_string();
        self
    }
}

/// Why the kubelet cannot be scraped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeletError {
    #[error("the node name is empty: set `node_name` or the NODE_NAME environment variable")]
    NoNodeName,
}

/// One target group per kubelet path, scraped with the global `scrape` settings (interval,
/// timeout, body size and sample limits) and `scrape.kubelet`'s credentials.
pub fn kubelet_target_groups(scrape: &ScrapeConfig, node: &KubeletNode) -> Result<Vec<TargetGroup>, KubeletError> {
    if node.name.is_empty() || node.host.is_empty() {
        return Err(KubeletError::NoNodeName);
    }
    let cfg = &scrape.kubelet;
    let host = if cfg.address.is_empty() { node.host.as_str() } else { cfg.address.as_str() };
    let instance = format!("{}:{}", host_for_url(host), cfg.port);
    let auth = Auth {
        bearer_token_file: Some(cfg.bearer_token_file.clone()),
        tls: Some(TlsOptions {
            ca_file: Some(cfg.ca_file.clone()),
            insecure_skip_verify: cfg.insecure_skip_verify,
            ..TlsOptions::default()
        }),
        ..Auth::default()
    };
    let interval = scrape.interval.get();
    let groups = PATHS
        .iter()
        .map(|&path| {
            let (address, metrics_path) = match cfg.via {
                KubeletVia::Direct => (instance.clone(), path.to_string()),
                KubeletVia::Apiserver => (node.apiserver.clone(), format!("/api/v1/nodes/{}/proxy{path}", node.name)),
            };
            let options = ScrapeOptions {
                job: JOB.to_string(),
                scheme: "https".to_string(),
                metrics_path,
                interval,
                timeout: scrape.timeout.get().min(interval),
                body_size_limit: scrape.body_size_limit.bytes(),
                sample_limit: scrape.sample_limit,
                honor_labels: true,
                honor_timestamps: path != CADVISOR_PATH || cfg.cadvisor_honor_timestamps,
                auth: auth.clone(),
                ..ScrapeOptions::default()
            };
            let labels = BTreeMap::from([
                ("job".to_string(), JOB.to_string()),
                ("metrics_path".to_string(), path.to_string()),
                ("node".to_string(), node.name.clone()),
                ("instance".to_string(), instance.clone()),
            ]);
            TargetGroup {
                source: format!("kubelet{}", path.trim_start_matches("/metrics")),
                targets: vec![BTreeMap::from([("__address__".to_string(), address)])],
                labels,
                options: Arc::new(options),
            }
        })
        .collect();
    Ok(groups)
}

/// IPv6 addresses need brackets in `host:port`.
fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use lgtm_scrape::relabel::Relabeler;
    use lgtm_scrape::target::populate;

    use super::*;

    fn targets(scrape: &ScrapeConfig, node: &KubeletNode) -> Vec<(String, String, bool)> {
        kubelet_target_groups(scrape, node)
            .unwrap()
            .iter()
            .map(|g| {
                let t =
                    populate(&g.targets[0], &g.labels, &g.options, &Relabeler::default(), &g.source).unwrap().unwrap();
                (t.url.to_string(), t.labels.to_string(), t.options.honor_timestamps)
            })
            .collect()
    }

    #[test]
    fn direct_targets_have_kube_prometheus_labels_and_ignore_cadvisor_timestamps() {
        let scrape = ScrapeConfig::default();
        let got = targets(&scrape, &KubeletNode::new("node-a").with_host("10.0.0.7"));
        let want = [
            ("https://10.0.0.7:10250/metrics", "/metrics", true),
            ("https://10.0.0.7:10250/metrics/cadvisor", "/metrics/cadvisor", false),
            ("https://10.0.0.7:10250/metrics/resource", "/metrics/resource", true),
            ("https://10.0.0.7:10250/metrics/probes", "/metrics/probes", true),
        ];
        for ((url, labels, honor), (want_url, path, want_honor)) in got.into_iter().zip(want) {
            assert_eq!(url, want_url);
            assert_eq!(
                labels,
                format!(r#"{{instance="10.0.0.7:10250", job="kubelet", metrics_path="{path}", node="node-a"}}"#)
            );
            assert_eq!(honor, want_honor, "{url}");
        }
    }

    #[test]
    fn apiserver_targets_go_through_nodes_proxy_and_keep_the_same_labels() {
        let mut scrape = ScrapeConfig::default();
        scrape.kubelet.via = KubeletVia::Apiserver;
        scrape.kubelet.cadvisor_honor_timestamps = true;
        let got = targets(&scrape, &KubeletNode::new("node-a"));
        assert_eq!(got[1].0, "https://kubernetes.default.svc/api/v1/nodes/node-a/proxy/metrics/cadvisor");
        assert_eq!(
            got[1].1,
            r#"{instance="node-a:10250", job="kubelet", metrics_path="/metrics/cadvisor", node="node-a"}"#
        );
        assert!(got.iter().all(|t| t.2), "cadvisor_honor_timestamps: true honours them");
    }

    #[test]
    fn credentials_and_limits_come_from_the_config() {
        let mut scrape =
            ScrapeConfig { interval: lgtm_config::Duration::from_secs(5), sample_limit: 77, ..ScrapeConfig::default() };
        scrape.kubelet.insecure_skip_verify = true;
        scrape.kubelet.bearer_token_file = "/tok".into();
        let groups = kubelet_target_groups(&scrape, &KubeletNode::new("n")).unwrap();
        let o = &groups[0].options;
        assert_eq!(o.auth.bearer_token_file.as_deref(), Some(std::path::Path::new("/tok")));
        let tls = o.auth.tls.as_ref().unwrap();
        assert!(tls.insecure_skip_verify);
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"))
        );
        assert_eq!(o.timeout, std::time::Duration::from_secs(5), "timeout never exceeds the interval");
        assert_eq!(o.sample_limit, 77);
        assert!(o.honor_labels);
    }

    #[test]
    fn the_configured_address_replaces_the_node_host() {
        let mut scrape = ScrapeConfig::default();
        scrape.kubelet.address = "10.1.2.3".into();
        scrape.kubelet.port = 10255;
        let got = targets(&scrape, &KubeletNode::new("node-a"));
        assert_eq!(got[0].0, "https://10.1.2.3:10255/metrics");
        assert_eq!(got[0].1, r#"{instance="10.1.2.3:10255", job="kubelet", metrics_path="/metrics", node="node-a"}"#);
        scrape.kubelet.via = KubeletVia::Apiserver;
        let got = targets(&scrape, &KubeletNode::new("node-a"));
        assert_eq!(got[0].0, "https://kubernetes.default.svc/api/v1/nodes/node-a/proxy/metrics");
    }

    #[test]
    fn ipv6_hosts_are_bracketed_and_an_empty_node_is_an_error() {
        let got = targets(&ScrapeConfig::default(), &KubeletNode::new("n").with_host("fd00::7"));
        assert_eq!(got[0].0, "https://[fd00::7]:10250/metrics");
        assert_eq!(
            kubelet_target_groups(&ScrapeConfig::default(), &KubeletNode::new("")).unwrap_err(),
            KubeletError::NoNodeName
        );
    }
}
