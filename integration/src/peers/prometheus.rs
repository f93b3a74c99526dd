//! A real Prometheus (Debian package `prometheus`) with `--web.enable-remote-write-receiver`:
//! stands in for Mimir's remote-write endpoint; the tests read back with PromQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: TempDir,
    client: reqwest::Client,
}

/// One series of an instant query: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct QueriedSeries {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus with an empty scrape config, or `None` if it is not installed.
    pub async fn start() -> Option<Prometheus> {
        Prometheus::start_with_scrape_config("").await
    }

    /// Starts Prometheus listening on `port`.
    pub async fn start_on_port(port: u16) -> Option<Prometheus> {
        Prometheus::start_full("", Some(port)).await
    }

    /// Starts Prometheus with `scrape_configs` (YAML list items, may be empty).
    pub async fn start_with_scrape_config(scrape_configs: &str) -> Option<Prometheus> {
        Prometheus::start_full(scrape_configs, None).await
    }

    async fn start_full(scrape_configs: &str, port: Option<u16>) -> Option<Prometheus> {
        let bin = super::which("prometheus")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        let body = if scrape_configs.is_empty() {
            "global:\n  scrape_interval: 1s\nscrape_configs: []\n".to_string()
        } else {
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{scrape_configs}")
        };
        std::fs::write(&cfg, body).expect("write prometheus.yml");
        let port = port.unwrap_or_else(crate::free_port);
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, port, _dir: dir, client: reqwest::Client::new() };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        crate::eventually(Duration::from_secs(30), "prometheus /-/ready", || {
            let c = p.client.clone();
            let u = ready.clone();
            async move { c.get(&u).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        Some(p)
    }

    /// The remote-write receiver URL.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// An instant PromQL query; panics on an error answer (a test bug).
    pub async fn query(&self, promql: &str) -> Vec<QueriedSeries> {
        self.instant(promql)
            .await
            .iter()
            .map(|r| QueriedSeries {
                labels: labels_of(r),
                value: r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// Every sample of a range selector (`metric{...}[5m]`): (timestamp ms, value) per series.
    pub async fn query_range_samples(&self, selector: &str) -> Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)> {
        self.instant(selector)
            .await
            .iter()
            .map(|r| {
                let samples = r["values"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .map(|v| {
                                let ts = (v[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
                                let val = v[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                                (ts, val)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (labels_of(r), samples)
            })
            .collect()
    }

    /// The `data.result` array of `/api/v1/query`.
    async fn instant(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let resp: serde_json::Value = self
            .client
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("json answer");
        assert_eq!(resp["status"], "success", "query {promql} failed: {resp}");
        resp["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn labels_of(result: &serde_json::Value) -> BTreeMap<String, String> {
    result["metric"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus in agent mode (it scrapes and remote-writes, keeps no TSDB): the peer lgtm-agent
/// replaces, used as the reference by the parity and conformance tests and the scrape bench.
/// Killed (by its pid) on drop.
pub struct PrometheusAgent {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl PrometheusAgent {
    /// Starts `bin` with `config` (the text of a `prometheus.yml`) on a free loopback port. The
    /// agent-mode flag follows the binary's major version: `--enable-feature=agent` in 2.x,
    /// `--agent` from 3.0 on (where the feature flag is gone).
    pub fn spawn(bin: &Path, config: &str, log_level: &str) -> std::io::Result<PrometheusAgent> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config)?;
        let port = crate::free_port();
        let agent_flag = if major_version(bin).is_some_and(|v| v >= 3) { "--agent" } else { "--enable-feature=agent" };
        let child = Command::new(bin)
            .arg(agent_flag)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.agent.path={}", dir.path().join("wal").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--log.level={log_level}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(PrometheusAgent { child, port, dir })
    }

    /// The config file it runs (for `promtool check config`, or to keep for a failing case).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `/-/ready` answers 200; false after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for PrometheusAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The major version `bin --version` prints ("prometheus, version 2.42.0 (...)").
pub fn major_version(bin: &Path) -> Option<u32> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}
