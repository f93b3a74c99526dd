//! The same targets scraped by Prometheus in agent mode and by `lgtm-agent`, both remote-writing
//! into one real Prometheus: the series sets read back with PromQL are equal (names and labels,
//! `job` and `cluster` aside), synthetic series included.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::peers::node_exporter::NodeExporter;
use lgtm_integration::peers::prometheus::{Prometheus, PrometheusAgent};
use lgtm_integration::{free_port, require};
use serde_json::json;

/// Every kind of series a target exposes: types, escaping, a conflict with a target label
/// (`instance`, renamed `exported_instance`), NaN and infinities, explicit timestamps left out
/// (they would make the two scrapers' samples depend on the clock).
const EXPOSITION: &str = "\
# HELP parity_requests_total Requests.
# TYPE parity_requests_total counter
parity_requests_total{code=\"200\",path=\"/a\\\"b\"} 12
parity_requests_total{code=\"500\",path=\"C:\\\\dir\"} 3
# TYPE parity_temperature gauge
parity_temperature{room=\"line\\nbreak\"} -4.5
parity_temperature{room=\"inf\"} +Inf
parity_temperature{room=\"nan\"} NaN
# TYPE parity_latency_seconds histogram
parity_latency_seconds_bucket{le=\"0.1\"} 1
parity_latency_seconds_bucket{le=\"1\"} 4
parity_latency_seconds_bucket{le=\"+Inf\"} 5
parity_latency_seconds_sum 2.5
parity_latency_seconds_count 5
# TYPE parity_size_bytes summary
parity_size_bytes{quantile=\"0.5\"} 100
parity_size_bytes{quantile=\"0.99\"} 900
parity_size_bytes_sum 5000
parity_size_bytes_count 20
parity_untyped{instance=\"from-the-target\"} 1
";

fn start_prometheus_agent(job: &str, targets: &[String], write_url: &str) -> Option<PrometheusAgent> {
    let bin = lgtm_integration::peers::which("prometheus")?;
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: {job}\n    \
         static_configs:\n      - targets: [{list}]\nremote_write:\n  - url: '{write_url}'\n    \
         queue_config: {{ batch_send_deadline: 500ms }}\n"
    );
    Some(PrometheusAgent::spawn(&bin, &config, "warn").expect("spawn prometheus in agent mode"))
}

/// A series' identity without the labels that differ by design. `le` and `quantile` values are
/// compared as numbers: the agent writes them in float form as Prometheus 3 does (`"1"` ->
/// `"1.0"`), Debian's Prometheus 2.42 as the target gave them (`tests/conformance.rs` checks
/// that difference exactly, per Prometheus version).
fn key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| *k != "job" && *k != "cluster")
        .map(|(k, v)| match (k.as_str(), v.parse::<f64>()) {
            ("le" | "quantile", Ok(f)) if f.is_finite() => format!("{k}={f:?}"),
            _ => format!("{k}={v:?}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_agent_mode_and_lgtm_agent_ship_the_same_series() {
    let Some(prom) = require("prometheus", Prometheus::start().await) else { return };
    let Some(node) = require("node_exporter", NodeExporter::start(&["meminfo", "loadavg", "cpu", "uname"]).await)
    else {
        return;
    };
    let fake = FakeTarget::start(EXPOSITION).await;
    let targets = vec![node.address(), fake.addr.to_string()];

    let Some(_reference) = require("prometheus", start_prometheus_agent("prom", &targets, &prom.write_url())) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = AgentConfig::new("it-parity", &tmp.path().join("data"), admin)
        .mimir(&prom.write_url(), Backoff("100ms", "1s"))
        .scrape("1s", "900ms", json!([{ "targets": targets, "labels": { "job": "lgtm" } }]))
        .yaml();
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;

    // Polled: the two scrapers start at different moments and batch differently.
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let ours: BTreeSet<String> = prom.query("{job=\"lgtm\"}").await.iter().map(|s| key(&s.labels)).collect();
        let theirs: BTreeSet<String> = prom.query("{job=\"prom\"}").await.iter().map(|s| key(&s.labels)).collect();
        let done = ours.len() > 40 && ours == theirs;
        last = (ours, theirs);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ours, theirs) = last;
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only lgtm-agent: {only_ours:#?}\nonly Prometheus agent mode: {only_theirs:#?}"
    );
    assert!(ours.len() > 40, "node_exporter and the fake target expose many series, got {}", ours.len());
    // The cases that are easy to get wrong are among them.
    let fake_instance = fake.addr.to_string();
    for must in [
        format!("__name__=\"parity_untyped\",exported_instance=\"from-the-target\",instance={fake_instance:?}"),
        format!("__name__=\"parity_requests_total\",code=\"200\",instance={fake_instance:?},path=\"/a\\\"b\""),
        format!("__name__=\"parity_latency_seconds_bucket\",instance={fake_instance:?},le=\"+Inf\""),
        format!("__name__=\"up\",instance={:?}", node.address()),
    ] {
        assert!(ours.contains(&must), "{must} missing from {ours:#?}");
    }
    // Every lgtm-agent series carries the cluster label.
    assert!(prom.query("{job=\"lgtm\", cluster!=\"it-parity\"}").await.is_empty());
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}
