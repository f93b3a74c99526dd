//! The real `lgtm-agent` binary scraping the real node_exporter and fake targets, remote-writing
//! into a real Prometheus; checked with PromQL as a user would.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::peers::node_exporter::NodeExporter;
use lgtm_integration::peers::prometheus::Prometheus;
use lgtm_integration::{eventually, free_port, require};
use serde_json::json;

fn agent_config(data_dir: &Path, write_url: &str, admin_port: u16, static_configs: serde_json::Value) -> String {
    AgentConfig::new("it-scrape", data_dir, admin_port)
        .mimir(write_url, Backoff("100ms", "1s"))
        .scrape("1s", "900ms", static_configs)
        .yaml()
}

/// One static config: `targets`, all with the label `job`.
fn job(job: &str, targets: &[&str]) -> serde_json::Value {
    json!({ "targets": targets, "labels": { "job": job } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_series_arrive_like_prometheus_scrapes_them_and_dead_target_is_down() {
    let Some(node) = require("node_exporter", NodeExporter::start(&["meminfo", "loadavg", "cpu", "uname"]).await)
    else {
        return;
    };
    // Prometheus scrapes node_exporter itself as job "direct": the reference series set.
    let direct = format!(
        "  - job_name: direct\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n",
        node.address()
    );
    let Some(prom) = require("prometheus", Prometheus::start_with_scrape_config(&direct).await) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let targets = json!([job("node", &[&node.address()]), job("dead", &[&dead])]);
    let admin = free_port();
    let mut agent = AgentProcess::start(
        tmp.path(),
        &agent_config(&tmp.path().join("data"), &prom.write_url(), admin, targets),
        admin,
    )
    .await;

    let up = eventually(Duration::from_secs(30), "up{job=\"node\"} via the agent", || {
        let p = &prom;
        async move {
            let r = p.query("up{job=\"node\"}").await;
            (!r.is_empty()).then_some(r)
        }
    })
    .await;
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].value, 1.0);
    assert_eq!(up[0].labels["cluster"], "it-scrape");
    assert_eq!(up[0].labels["instance"], node.address());
    let dead_up = eventually(Duration::from_secs(30), "up{job=\"dead\"}", || {
        let p = &prom;
        async move {
            let r = p.query("up{job=\"dead\"}").await;
            (!r.is_empty()).then_some(r)
        }
    })
    .await;
    assert_eq!(dead_up.len(), 1);
    assert_eq!(dead_up[0].value, 0.0, "a target nobody answers on is down");
    assert_eq!(dead_up[0].labels["cluster"], "it-scrape");
    assert_eq!(dead_up[0].labels["instance"], dead);

    // Same series (names and labels, job and cluster aside) as Prometheus's own scrape. Polled:
    // Prometheus's first scrape of job "direct" may come a while after start on a loaded machine.
    let key = |labels: &std::collections::BTreeMap<String, String>| {
        labels
            .iter()
            .filter(|(k, _)| *k != "job" && *k != "cluster")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = "{__name__=~\"node_(memory|load|cpu|uname).*\", job=\"%JOB%\"}";
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        let ours: BTreeSet<String> =
            prom.query(&selector.replace("%JOB%", "node")).await.iter().map(|s| key(&s.labels)).collect();
        let theirs: BTreeSet<String> =
            prom.query(&selector.replace("%JOB%", "direct")).await.iter().map(|s| key(&s.labels)).collect();
        let done = ours.len() > 20 && ours == theirs;
        last = (ours, theirs);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.0.len() > 20, "node_exporter exposes many series, got {}", last.0.len());
    assert_eq!(last.0, last.1, "lgtm-agent and Prometheus see the same series");
    // Synthetic series as Prometheus has them.
    for name in [
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        let r = prom.query(&format!("{name}{{job=\"node\"}}")).await;
        assert_eq!(r.len(), 1, "{name}");
    }
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_removed_from_the_target_is_gone_after_the_next_scrape() {
    let Some(prom) = require("prometheus", Prometheus::start().await) else { return };
    let target = FakeTarget::start("# TYPE it_items gauge\nit_items{kind=\"a\"} 1\nit_items{kind=\"b\"} 2\n").await;
    let tmp = tempfile::tempdir().unwrap();
    let targets = json!([job("fake", &[&target.addr.to_string()])]);
    let admin = free_port();
    let mut agent = AgentProcess::start(
        tmp.path(),
        &agent_config(&tmp.path().join("data"), &prom.write_url(), admin, targets),
        admin,
    )
    .await;
    eventually(Duration::from_secs(30), "both series", || {
        let p = &prom;
        async move { (p.query("it_items").await.len() == 2).then_some(()) }
    })
    .await;
    let b = prom.query("it_items{kind=\"b\"}").await;
    assert_eq!(b[0].value, 2.0);
    assert_eq!(b[0].labels["cluster"], "it-scrape");
    target.set_body("# TYPE it_items gauge\nit_items{kind=\"a\"} 5\n");
    // Prometheus would keep a vanished series for 5 minutes without the stale marker.
    eventually(Duration::from_secs(20), "kind=b to be stale", || {
        let p = &prom;
        async move {
            let r = p.query("it_items").await;
            (r.len() == 1 && r[0].labels["kind"] == "a" && r[0].value == 5.0).then_some(())
        }
    })
    .await;
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_queued_on_disk_survive_kill_nine_and_arrive_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let target = FakeTarget::start("# TYPE it_queued gauge\nit_queued 1\n").await;
    let targets = json!([job("queued", &[&target.addr.to_string()])]);
    // Mimir is down: nothing listens on this port yet.
    let prom_port = free_port();
    let write_url = format!("http://127.0.0.1:{prom_port}/api/v1/write");
    let admin = free_port();
    let config = agent_config(&tmp.path().join("data"), &write_url, admin, targets);
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let scraped = eventually(Duration::from_secs(30), "five scrapes while Mimir is down", || {
        let a = &agent;
        async move {
            let n = a.metric_sum("lgtm_agent_scrapes_total", &["job=\"queued\""]).await;
            (n >= 5.0).then_some(n)
        }
    })
    .await;
    let queued = agent.metric_sum("lgtm_agent_queue_bytes", &["exporter=\"mimir\"", "medium=\"disk\""]).await;
    assert!(queued > 0.0, "the disk queue holds the samples");
    agent.kill();
    let scrapes_before_kill = scraped as usize;

    // Mimir comes back (a real Prometheus on that port) and the agent restarts.
    let Some(prom) = require("prometheus", Prometheus::start_on_port(prom_port).await) else { return };
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let counted = eventually(Duration::from_secs(60), "every sample scraped before the kill", || {
        let p = &prom;
        async move {
            let r = p.query("count_over_time(up{job=\"queued\"}[10m])").await;
            let n = r.first().map(|s| s.value as usize).unwrap_or(0);
            (n >= scrapes_before_kill).then_some(n)
        }
    })
    .await;
    println!("scrapes before kill -9: {scrapes_before_kill}; `up` samples in Prometheus after restart: {counted}");
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
}
