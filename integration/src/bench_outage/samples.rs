//! Reading back from the receiving Prometheus what the targets served: per target, the scrape
//! numbers stored (`outage_scrape_seq`), the scrapes the agent recorded as failed (`up` = 0), and
//! the count of stored samples of every served series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;

use super::targets::{PREFIX, SEQ_METRIC};

/// The job label of the targets in the agent's config.
pub const JOB: &str = "outage";

/// One series of a query answer: its labels and its values (one for an instant vector, with
/// their timestamps in seconds for a range).
struct Series {
    labels: BTreeMap<String, String>,
    values: Vec<(f64, f64)>,
}

pub struct Promql {
    base: String,
    client: reqwest::Client,
}

impl Promql {
    pub fn new(port: u16) -> Promql {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap_or_default();
        Promql { base: format!("http://127.0.0.1:{port}/api/v1/query"), client }
    }

    async fn query(&self, promql: &str) -> anyhow::Result<Vec<Series>> {
        let resp: serde_json::Value =
            self.client.get(&self.base).query(&[("query", promql)]).send().await?.json().await?;
        if resp["status"] != "success" {
            bail!("query {promql} failed: {resp}");
        }
        let point = |v: &serde_json::Value| {
            let t = v[0].as_f64().unwrap_or(0.0);
            (t, v[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN))
        };
        let results = resp["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(results
            .iter()
            .map(|r| Series {
                labels: r["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default(),
                values: match r["values"].as_array() {
                    Some(vs) => vs.iter().map(point).collect(),
                    None => vec![point(&r["value"])],
                },
            })
            .collect())
    }

    /// Per `instance`, the first value of a query grouped by instance.
    async fn by_instance(&self, promql: &str) -> anyhow::Result<HashMap<String, f64>> {
        Ok(self
            .query(promql)
            .await?
            .into_iter()
            .filter_map(|s| Some((s.labels.get("instance")?.clone(), s.values.first()?.1)))
            .collect())
    }

    /// The highest scrape number stored per target (0 for none), in the order of `addrs`.
    pub async fn max_seq(&self, addrs: &[SocketAddr], range: Duration) -> anyhow::Result<Vec<u64>> {
        let q = format!("max by (instance) (max_over_time({SEQ_METRIC}{{job=\"{JOB}\"}}[{}s]))", range.as_secs());
        let got = self.by_instance(&q).await?;
        Ok(addrs.iter().map(|a| got.get(&a.to_string()).map_or(0, |v| *v as u64)).collect())
    }

    /// What Prometheus holds of each target, against what it served.
    pub async fn account(
        &self,
        addrs: &[SocketAddr],
        served: &[u64],
        series_per_target: usize,
        range: Duration,
        stopped_at_unix: f64,
    ) -> anyhow::Result<Vec<TargetAccount>> {
        let r = range.as_secs();
        let seqs = self.query(&format!("{SEQ_METRIC}{{job=\"{JOB}\"}}[{r}s]")).await?;
        let ups = self.query(&format!("up{{job=\"{JOB}\"}}[{r}s]")).await?;
        let counts = self
            .by_instance(&format!(
                "sum by (instance) (count_over_time({{__name__=~\"{PREFIX}.*\",job=\"{JOB}\"}}[{r}s]))"
            ))
            .await?;
        let of = |list: &[Series], addr: &str| -> Vec<(f64, f64)> {
            list.iter()
                .filter(|s| s.labels.get("instance").map(String::as_str) == Some(addr))
                .flat_map(|s| s.values.iter().copied())
                .collect()
        };
        let mut out = Vec::with_capacity(addrs.len());
        for (addr, served) in addrs.iter().zip(served) {
            let addr = addr.to_string();
            let stored: BTreeSet<u64> = of(&seqs, &addr).iter().map(|(_, v)| *v as u64).collect();
            let missing_scrapes: Vec<u64> = (1..=*served).filter(|s| !stored.contains(s)).collect();
            let failed_scrapes =
                of(&ups, &addr).iter().filter(|(t, v)| *v == 0.0 && *t < stopped_at_unix - 0.5).count() as u64;
            out.push(TargetAccount {
                served_scrapes: *served,
                expected_samples: served * series_per_target as u64,
                stored_samples: counts.get(&addr).map_or(0, |v| *v as u64),
                stored_scrapes: stored.len() as u64,
                missing_scrapes,
                failed_scrapes,
                series_per_target: series_per_target as u64,
            });
        }
        Ok(out)
    }
}

/// One target's samples: served, stored, missing.
#[derive(Debug, Clone, Default)]
pub struct TargetAccount {
    pub served_scrapes: u64,
    pub expected_samples: u64,
    pub stored_samples: u64,
    pub stored_scrapes: u64,
    /// Scrape numbers served and not found in Prometheus.
    pub missing_scrapes: Vec<u64>,
    /// Scrapes the agent recorded as failed (`up` = 0) before the targets were stopped: served
    /// perhaps, but never collected, so not lost in delivery.
    pub failed_scrapes: u64,
    pub series_per_target: u64,
}

impl TargetAccount {
    /// Samples served and not stored, beyond those of the scrapes that failed.
    pub fn lost_samples(&self) -> u64 {
        let collected = self.served_scrapes.saturating_sub(self.failed_scrapes) * self.series_per_target;
        collected.saturating_sub(self.stored_samples)
    }
}
