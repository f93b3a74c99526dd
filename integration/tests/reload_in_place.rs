//! A config reload (`POST /-/reload`, as SIGHUP) against the real `lgtm-agent` binary restarts
//! only the components whose config changed (issue 17, item 8): a scrape config change leaves
//! the Loki exporter and the log tailer running (no line lost or sent twice, counters go on), a
//! Loki exporter change leaves the tailer and the scrape loops running (no line lost or sent
//! twice, no scrape missed). Each case prints what it measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::fake_mimir::FakeMimir;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::{eventually, free_port};
use serde_json::json;

/// Appends CRI lines `from..from + n` to one container's log.
fn write_cri(root: &Path, from: usize, n: usize) {
    write_container(root, "app", from, n)
}

fn write_container(root: &Path, container: &str, from: usize, n: usize) {
    let dir = root.join("shop_web_0000-web").join(container);
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let mut buf = String::new();
    for i in from..from + n {
        buf.push_str(&format!("2026-11-25T08:00:00.{i:09}Z stdout F line {i}\n"));
    }
    f.write_all(buf.as_bytes()).unwrap();
    f.flush().unwrap();
}

/// The lines the fake Loki received from the `app` container, by line number, with how often
/// each came.
fn received(loki: &FakeLoki) -> BTreeMap<usize, usize> {
    let mut out = BTreeMap::new();
    for (_, lines) in loki.lines_by_stream().iter().filter(|(s, _)| s.contains("container=\"app\"")) {
        for l in lines {
            let n: usize = l.rsplit(' ').next().unwrap().parse().unwrap();
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// Waits until lines `0..n` arrived, then asserts each arrived exactly once.
async fn exactly_once(loki: &FakeLoki, n: usize, what: &str) {
    eventually(Duration::from_secs(20), what, || async { (received(loki).len() >= n).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received(loki);
    let twice: Vec<_> = got.iter().filter(|(_, c)| **c > 1).map(|(l, _)| *l).collect();
    let missing: Vec<_> = (0..n).filter(|l| !got.contains_key(l)).collect();
    assert!(twice.is_empty() && missing.is_empty(), "{what}: sent twice {twice:?}, missing {missing:?}");
    assert_eq!(got.len(), n, "{what}: no other line");
}

fn static_target(addr: std::net::SocketAddr, job: &str) -> serde_json::Value {
    json!([{ "targets": [addr.to_string()], "labels": { "job": job } }])
}

fn base(tmp: &Path, admin: u16, loki: &FakeLoki, mimir: &FakeMimir, targets: serde_json::Value) -> AgentConfig {
    AgentConfig::new("it-reload", &tmp.join("data"), admin)
        .set("node_name", "node-a")
        .set("admin.enable_reload", true)
        .loki(&loki.push_url(), Backoff("50ms", "500ms"))
        .mimir(&mimir.push_url(), Backoff("50ms", "500ms"))
        .logs_from(&tmp.join("pods"))
        .scrape("500ms", "400ms", targets)
}

async fn post_reload(admin: u16) -> (u16, String) {
    let r = reqwest::Client::new().post(format!("http://127.0.0.1:{admin}/-/reload")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn samples(mimir: &FakeMimir, prefix: &str) -> usize {
    mimir.state().samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| n).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_config_reload_leaves_the_loki_exporter_and_the_tailer_running() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, 0, 100);
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let b = FakeTarget::start("# TYPE it_b gauge\nit_b 1\n").await;
    let admin = free_port();
    let config = |targets| base(tmp.path(), admin, &loki, &mimir, targets).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &config(static_target(a.addr, "a")), admin).await;
    let pid = agent.pid();
    exactly_once(&loki, 100, "lines before the reload").await;
    eventually(Duration::from_secs(10), "target a scraped", || async { (samples(&mimir, "it_a{") > 0).then_some(()) })
        .await;
    let sent_before = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
    assert_eq!(sent_before, 100.0);

    // Target a replaced by b; lines written just before and just after the reload.
    std::fs::write(&agent.config_path, config(static_target(b.addr, "b"))).unwrap();
    write_cri(&pods, 100, 50);
    let (code, body) = post_reload(admin).await;
    write_cri(&pods, 150, 50);
    assert_eq!((code, body.as_str()), (200, "reloaded: scrape\n"), "{}", agent.log());
    exactly_once(&loki, 200, "lines written around the reload").await;

    eventually(Duration::from_secs(10), "target b scraped", || async { (samples(&mimir, "it_b{") > 0).then_some(()) })
        .await;
    // a's loop sends its staleness markers, then nothing more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let a_after = samples(&mimir, "it_a{");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a_later = samples(&mimir, "it_a{");
    let sent_after = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
    let restarts = |c: &'static str| {
        let agent = &agent;
        async move { agent.metric_sum("lgtm_agent_config_reload_restarts_total", &[&format!("component=\"{c}\"")]).await }
    };
    let (scrape, loki_restarts, logs_restarts, all) = (
        restarts("scrape").await,
        restarts("exporter/loki").await,
        restarts("source/logs").await,
        agent.metric_sum("lgtm_agent_config_reload_restarts_total", &[]).await,
    );
    println!(
        "[reload_in_place] scrape config changed (target a -> b): 200 lines once each; \
         lgtm_agent_exporter_sent_total{{loki}} {sent_before} -> {sent_after}; it_a samples {a_after} -> {a_later} \
         after the reload; it_b scraped; restarts: scrape {scrape}, exporter/loki {loki_restarts}, \
         source/logs {logs_restarts}, all {all}; pid {pid} -> {}",
        agent.pid()
    );
    assert_eq!(a_after, a_later, "the removed target is not scraped any more");
    assert_eq!(sent_after, 200.0, "the Loki exporter's counter went on (not reset by a restart)");
    assert_eq!((scrape, loki_restarts, logs_restarts, all), (1.0, 0.0, 0.0, 1.0));
    assert_eq!(agent.metric_sum("lgtm_agent_config_reloads_total", &["applied"]).await, 1.0);
    assert_eq!(agent.metric_sum("lgtm_agent_config_last_reload_successful", &[]).await, 1.0);
    assert!(agent.log().contains("config reloaded in place"), "{}", agent.log());
    assert!(!agent.log().contains("log checkpoints written"), "the tailer was not stopped");
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loki_exporter_reload_loses_no_line_sends_none_twice_and_misses_no_scrape() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, 0, 100);
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    mimir.state().keep_timestamps_of = Some("it_a{".into());
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let admin = free_port();
    let config = |tenant: &str| {
        base(tmp.path(), admin, &loki, &mimir, static_target(a.addr, "a")).set("exporters.loki.tenant", tenant).yaml()
    };
    let mut agent = AgentProcess::start(tmp.path(), &config("before"), admin).await;
    let pid = agent.pid();
    exactly_once(&loki, 100, "lines before the reload").await;
    eventually(Duration::from_secs(10), "target a scraped", || async { (samples(&mimir, "it_a{") > 1).then_some(()) })
        .await;

    // Lines keep coming while the exporter is replaced: 20 every 20 ms for 2 s.
    let writer = {
        let pods = pods.clone();
        tokio::spawn(async move {
            for k in 0..100 {
                write_cri(&pods, 100 + k * 20, 20);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&agent.config_path, config("after")).unwrap();
    let asked = std::time::Instant::now();
    let (code, body) = post_reload(admin).await;
    let took = asked.elapsed();
    assert_eq!((code, body.as_str()), (200, "reloaded: exporter/loki\n"), "{}", agent.log());
    writer.await.unwrap();
    write_cri(&pods, 2100, 100);
    exactly_once(&loki, 2200, "lines before, during and after the reload").await;

    let tenants: Vec<String> = loki.state().pushes.iter().map(|p| p.tenant.clone().unwrap_or_default()).collect();
    let last = tenants.last().cloned().unwrap_or_default();
    let times = mimir.state().timestamps.values().next().cloned().unwrap_or_default();
    let max_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let restarts = agent.metric_sum("lgtm_agent_config_reload_restarts_total", &["component=\"exporter/loki\""]).await;
    let others = agent.metric_sum("lgtm_agent_config_reload_restarts_total", &[]).await;
    println!(
        "[reload_in_place] exporters.loki.tenant before -> after while 2,000 lines were written: 2,200 lines once \
         each; pushes {} (first tenant {:?}, last {last:?}); it_a samples {} with the largest gap {max_gap} ms \
         (interval 500 ms); POST /-/reload answered in {took:?}; restarts: exporter/loki {restarts}, all {others}; \
         pid {pid} -> {}",
        tenants.len(),
        tenants.first(),
        times.len(),
        agent.pid()
    );
    assert_eq!(last, "after", "the new exporter sends");
    assert!(tenants.iter().any(|t| t == "before"));
    assert!(times.len() >= 4, "{times:?}");
    assert!(max_gap <= 750, "no scrape missed: gaps {times:?}");
    assert_eq!((restarts, others), (1.0, 1.0), "only the Loki exporter restarted");
    assert_eq!(agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await, 2200.0);
    assert!(!agent.log().contains("log checkpoints written"), "the tailer was not stopped");
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_filter_reload_restarts_the_tailer_alone_from_its_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, 0, 100);
    write_container(&pods, "sidecar", 0, 10);
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let admin = free_port();
    let config = |exclude: Vec<&str>| {
        base(tmp.path(), admin, &loki, &mimir, static_target(a.addr, "a"))
            .set("logs.exclude_containers", exclude)
            .yaml()
    };
    let mut agent = AgentProcess::start(tmp.path(), &config(vec![]), admin).await;
    let pid = agent.pid();
    exactly_once(&loki, 100, "lines before the reload").await;
    let sidecar = |loki: &FakeLoki| {
        loki.lines_by_stream()
            .iter()
            .filter(|(s, _)| s.contains("container=\"sidecar\""))
            .map(|(_, l)| l.len())
            .sum::<usize>()
    };
    eventually(Duration::from_secs(10), "sidecar lines", || async { (sidecar(&loki) == 10).then_some(()) }).await;

    std::fs::write(&agent.config_path, config(vec!["sidecar"])).unwrap();
    write_cri(&pods, 100, 50);
    let (code, body) = post_reload(admin).await;
    write_cri(&pods, 150, 50);
    write_container(&pods, "sidecar", 10, 10);
    assert_eq!((code, body.as_str()), (200, "reloaded: source/logs\n"), "{}", agent.log());
    exactly_once(&loki, 200, "lines written around the tailer's restart").await;
    let sidecar_after = sidecar(&loki);
    let restarts = |c: &'static str| {
        let agent = &agent;
        async move { agent.metric_sum("lgtm_agent_config_reload_restarts_total", &[&format!("component=\"{c}\"")]).await }
    };
    let (logs, loki_restarts, all) = (
        restarts("source/logs").await,
        restarts("exporter/loki").await,
        agent.metric_sum("lgtm_agent_config_reload_restarts_total", &[]).await,
    );
    let checkpoints = agent.log().matches("log checkpoints written").count();
    println!(
        "[reload_in_place] logs.exclude_containers [] -> [sidecar]: 200 app lines once each; sidecar lines {sidecar_after} \
         (10 before, 10 written after); restarts: source/logs {logs}, exporter/loki {loki_restarts}, all {all}; \
         checkpoints written {checkpoints}; pid {pid} -> {}",
        agent.pid()
    );
    assert_eq!(sidecar_after, 10, "the new filter applies");
    assert_eq!((logs, loki_restarts, all), (1.0, 0.0, 1.0));
    assert_eq!(checkpoints, 1, "the old tailer wrote its checkpoints before the new one started");
    assert_eq!(agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await, 210.0, "the exporter went on");
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_stuck_in_retries_hands_its_batches_to_the_new_one_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, 0, 100);
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let admin = free_port();
    let config = |tenant: &str| {
        base(tmp.path(), admin, &loki, &mimir, static_target(a.addr, "a"))
            .set("exporters.loki.tenant", tenant)
            .set("shutdown.grace_period", "2s")
            .yaml()
    };
    let mut agent = AgentProcess::start(tmp.path(), &config("before"), admin).await;
    exactly_once(&loki, 100, "lines before the outage").await;

    // Loki answers 503 to everything: the exporter retries the next lines.
    loki.state().fail_next.extend(std::iter::repeat_n(503, 10_000));
    write_cri(&pods, 100, 100);
    eventually(Duration::from_secs(10), "the exporter retrying", || async {
        (agent.metric_sum("lgtm_agent_exporter_retries_total", &["loki"]).await > 0.0).then_some(())
    })
    .await;
    std::fs::write(&agent.config_path, config("after")).unwrap();
    let asked = std::time::Instant::now();
    let (code, body) = post_reload(admin).await;
    let took = asked.elapsed();
    assert_eq!((code, body.as_str()), (200, "reloaded: exporter/loki\n"), "{}", agent.log());
    loki.state().fail_next.clear();
    write_cri(&pods, 200, 100);
    exactly_once(&loki, 300, "lines retried across the reload").await;
    let accepted: Vec<String> = loki.state().pushes.iter().map(|p| p.tenant.clone().unwrap_or_default()).collect();
    let failed = loki.state().failed;
    println!(
        "[reload_in_place] exporters.loki.tenant changed while Loki answered 503 (grace period 2 s): POST answered \
         in {took:?}; 300 lines once each; {failed} requests refused; accepted pushes by tenant: before {}, after {}",
        accepted.iter().filter(|t| *t == "before").count(),
        accepted.iter().filter(|t| *t == "after").count()
    );
    assert!(took >= Duration::from_secs(2), "the old exporter had the grace period: {took:?}");
    assert!(agent.log().contains("did not finish within the grace period"), "{}", agent.log());
    // Lines 100.. were written during the outage: the old exporter never got them through.
    let old_sent_later = loki.state().pushes.iter().filter(|p| p.tenant.as_deref() == Some("before")).any(|p| {
        p.streams
            .iter()
            .flat_map(|s| &s.entries)
            .any(|e| e.line.rsplit(' ').next().unwrap().parse::<usize>().unwrap() >= 100)
    });
    assert!(!old_sent_later, "what the old exporter held went to the new one: {accepted:?}");
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mimir_exporter_reload_sends_every_scrape_once_without_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    mimir.state().keep_timestamps_of = Some("it_a{".into());
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let admin = free_port();
    let config = |shards: usize| {
        base(tmp.path(), admin, &loki, &mimir, static_target(a.addr, "a")).set("exporters.mimir.shards", shards).yaml()
    };
    let mut agent = AgentProcess::start(tmp.path(), &config(1), admin).await;
    eventually(Duration::from_secs(10), "target a scraped", || async { (samples(&mimir, "it_a{") >= 3).then_some(()) })
        .await;
    std::fs::write(&agent.config_path, config(2)).unwrap();
    let (code, body) = post_reload(admin).await;
    assert_eq!((code, body.as_str()), (200, "reloaded: exporter/mimir\n"), "{}", agent.log());
    let before = samples(&mimir, "it_a{");
    eventually(Duration::from_secs(10), "scrapes after the reload", || async {
        (samples(&mimir, "it_a{") >= before + 4).then_some(())
    })
    .await;
    let times = mimir.state().timestamps.values().next().cloned().unwrap_or_default();
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let restarts = agent.metric_sum("lgtm_agent_config_reload_restarts_total", &["component=\"exporter/mimir\""]).await;
    println!(
        "[reload_in_place] exporters.mimir.shards 1 -> 2: it_a samples {}, gaps between timestamps (ms) {gaps:?}; \
         restarts: exporter/mimir {restarts}",
        times.len()
    );
    assert!(gaps.iter().all(|g| *g > 0), "each scrape sent once, in order: {times:?}");
    assert!(gaps.iter().all(|g| *g <= 750), "no scrape missed: {gaps:?}");
    assert_eq!(restarts, 1.0);
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tailer_turned_on_and_off_by_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, 0, 100);
    let (loki, mimir) = (FakeLoki::start().await, FakeMimir::start(1e9, 1e9).await);
    let a = FakeTarget::start("# TYPE it_a gauge\nit_a 1\n").await;
    let admin = free_port();
    let config =
        |on: bool| base(tmp.path(), admin, &loki, &mimir, static_target(a.addr, "a")).set("logs.enabled", on).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &config(false), admin).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(loki.total_entries(), 0, "no tailer yet");

    std::fs::write(&agent.config_path, config(true)).unwrap();
    let on = post_reload(admin).await;
    assert_eq!((on.0, on.1.as_str()), (200, "reloaded: source/logs\n"), "{}", agent.log());
    exactly_once(&loki, 100, "lines once the tailer is on").await;

    std::fs::write(&agent.config_path, config(false)).unwrap();
    let off = post_reload(admin).await;
    assert_eq!((off.0, off.1.as_str()), (200, "reloaded: source/logs\n"), "{}", agent.log());
    write_cri(&pods, 100, 50);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
    let (ready_code, ready_body) = (ready.status().as_u16(), ready.text().await.unwrap());
    let up = agent.metric_sum("lgtm_agent_component_up", &["source/logs"]).await;
    let lines_off = received(&loki).len();
    println!(
        "[reload_in_place] logs.enabled false -> true -> false: 100 lines once each while on, {lines_off} after \
         50 more were written while off; /readyz {ready_code}; component_up{{source/logs}} {up}"
    );
    assert_eq!(lines_off, 100, "the tailer stopped");
    assert_eq!(ready_code, 200, "{ready_body}");
    assert!(!agent.metrics().await.contains("component=\"source/logs\"} 1"), "no running tailer reported");

    // On again: it goes on from its checkpoints.
    std::fs::write(&agent.config_path, config(true)).unwrap();
    let again = post_reload(admin).await;
    assert_eq!(again.0, 200);
    exactly_once(&loki, 150, "the lines written while off, once the tailer is on again").await;
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}
