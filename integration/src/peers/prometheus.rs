//! A real Prometheus (Debian package `prometheus`) with `--web.enable-remote-write-receiver`:
//! stands in for Mimir's remote-write endpoint; the tests read back with PromQL.

use std::collections::BTreeMap;
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
