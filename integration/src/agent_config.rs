//! The `lgtm-agent` config files the end-to-end tests start the binary with, built instead of
//! written out in each test: a base with every source and exporter off, plus the few sections a
//! test turns on. The result is the YAML text `AgentProcess::start` writes to disk.
//!
//! ```
//! use lgtm_integration::agent_config::{AgentConfig, Backoff};
//! let yaml = AgentConfig::new("it-logs", std::path::Path::new("/tmp/data"), 9901)
//!     .set("node_name", "node-a")
//!     .loki("http://127.0.0.1:3100/loki/api/v1/push", Backoff("50ms", "500ms"))
//!     .logs_from(std::path::Path::new("/var/log/pods"))
//!     .yaml();
//! assert!(yaml.contains("rescan_interval: 1s"));
//! ```

use std::path::Path;

use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// `retry.initial_backoff` and `retry.max_backoff` of an exporter, as config durations.
#[derive(Debug, Clone, Copy)]
pub struct Backoff(pub &'static str, pub &'static str);

/// An agent config under construction.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    root: Value,
}

impl AgentConfig {
    /// Cluster `cluster`, tenant `remote04`, state in `data_dir`, the admin server on
    /// `127.0.0.1:<admin_port>`; no exporter, no log tailing, no OTLP receiver, and no kubelet or
    /// host metrics scrape.
    pub fn new(cluster: &str, data_dir: &Path, admin_port: u16) -> AgentConfig {
        let off = || serde_json::json!({ "enabled": false });
        AgentConfig { root: Value::Mapping(Mapping::new()) }
            .set("cluster", cluster)
            .set("tenant", "remote04")
            .set("data_dir", data_dir.display().to_string())
            .set("admin.listen", format!("127.0.0.1:{admin_port}"))
            .set("exporters.mimir", off())
            .set("exporters.loki", off())
            .set("exporters.tempo", off())
            .set("logs", off())
            .set("otlp", off())
            .set("scrape.kubelet", off())
            .set("scrape.host_metrics", off())
    }

    /// Starts from a whole config text (e.g. one the Helm chart rendered), to be adjusted with
    /// [`AgentConfig::set`].
    pub fn from_yaml(yaml: &str) -> Result<AgentConfig, serde_yaml::Error> {
        Ok(AgentConfig { root: serde_yaml::from_str(yaml)? })
    }

    /// Sets the value at a dotted path (`exporters.loki.queue.max_memory`), creating the
    /// mappings on the way and replacing whatever was there.
    pub fn set(mut self, path: &str, value: impl Serialize) -> AgentConfig {
        let value = serde_yaml::to_value(value).expect("a test config value serializes to YAML");
        let (parents, key) = path.rsplit_once('.').map_or((None, path), |(p, k)| (Some(p), k));
        let mut node = &mut self.root;
        for part in parents.into_iter().flat_map(|p| p.split('.')) {
            node = mapping(node).entry(part.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
        }
        mapping(node).insert(key.into(), value);
        self
    }

    /// Remote-write to `url`, batches sent after 100 ms at the latest.
    pub fn mimir(self, url: &str, backoff: Backoff) -> AgentConfig {
        self.set("exporters.mimir", exporter(url, backoff))
    }

    /// Loki push to `url`, batches sent after 100 ms at the latest. The fake Loki enforces no
    /// limit unless a test tells it to, and tests write lines with fixed dates: the agent's
    /// check of Loki's `reject_old_samples_max_age` is off to match (tests of the limits set
    /// `exporters.loki.limits` themselves).
    pub fn loki(self, url: &str, backoff: Backoff) -> AgentConfig {
        self.set("exporters.loki", exporter(url, backoff)).set("exporters.loki.limits.reject_old_samples", false)
    }

    /// Tails the `/var/log/pods`-like tree at `pods`, without asking Kubernetes about the pods,
    /// looking for new files every second.
    pub fn logs_from(self, pods: &Path) -> AgentConfig {
        self.set(
            "logs",
            serde_json::json!({ "path": pods.display().to_string(), "kubernetes": false, "rescan_interval": "1s" }),
        )
    }

    /// Scrapes `static_configs` every `interval`, giving up on a target after `timeout`.
    pub fn scrape(self, interval: &str, timeout: &str, static_configs: serde_json::Value) -> AgentConfig {
        self.set("scrape.interval", interval)
            .set("scrape.timeout", timeout)
            .set("scrape.static_configs", static_configs)
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.root).expect("a test config serializes to YAML")
    }
}

fn exporter(url: &str, Backoff(initial, max): Backoff) -> serde_json::Value {
    serde_json::json!({
        "url": url,
        "batch": { "max_wait": "100ms" },
        "retry": { "initial_backoff": initial, "max_backoff": max },
    })
}

fn mapping(node: &mut Value) -> &mut Mapping {
    if !node.is_mapping() {
        *node = Value::Mapping(Mapping::new());
    }
    node.as_mapping_mut().expect("just made a mapping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_turned_on_replaces_its_base_and_keeps_the_rest() {
        let yaml = AgentConfig::new("c", Path::new("/d"), 1)
            .loki("http://l/push", Backoff("50ms", "500ms"))
            .set("exporters.loki.queue.max_memory", "8MiB")
            .yaml();
        let parsed: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        let expected = serde_json::json!({
            "cluster": "c", "tenant": "remote04", "data_dir": "/d",
            "admin": { "listen": "127.0.0.1:1" },
            "exporters": {
                "mimir": { "enabled": false },
                "loki": {
                    "url": "http://l/push",
                    "batch": { "max_wait": "100ms" },
                    "retry": { "initial_backoff": "50ms", "max_backoff": "500ms" },
                    "queue": { "max_memory": "8MiB" },
                    "limits": { "reject_old_samples": false },
                },
                "tempo": { "enabled": false },
            },
            "logs": { "enabled": false },
            "otlp": { "enabled": false },
            "scrape": { "kubelet": { "enabled": false }, "host_metrics": { "enabled": false } },
        });
        assert_eq!(parsed, expected);
    }
}
