//! The target manager: loops start and stop with the target set, removed targets send
//! staleness markers, the targets page reflects what happened.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lgtm_config::RelabelConfig;
use lgtm_scrape::{Health, ScrapeOptions, TargetGroup, TargetManager};

fn group(addrs: &[String], options: ScrapeOptions) -> TargetGroup {
    TargetGroup {
        source: "test/0".into(),
        targets: addrs.iter().map(|a| BTreeMap::from([("__address__".to_string(), a.clone())])).collect(),
        labels: BTreeMap::from([("team".to_string(), "obs".to_string())]),
        options: Arc::new(options),
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_removed_target_sends_staleness_markers_for_its_series_and_synthetic_series() {
    let server = Server::start(Reply::text("a 1\nb 2\n")).await;
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 42);
    let errors = manager.sync(vec![group(&[server.addr.to_string()], options("mgr_remove"))]);
    assert!(errors.is_empty(), "{errors:?}");

    let first = sink.wait_for(WAIT, |b| b.iter().any(|t| name(t) == "up")).await;
    assert_eq!(value(&first, "up"), 1.0);
    assert!(first.iter().all(|t| label(t, "team") == Some("obs") && label(t, "job") == Some("mgr_remove")));

    let targets = manager.targets();
    assert_eq!(targets.len(), 1);
    let status = &targets[0];
    assert_eq!(status.job, "mgr_remove");
    assert_eq!(status.health, Health::Up);
    assert_eq!(status.scrape_url, format!("http://{}/metrics", server.addr));
    assert_eq!(status.labels.get("team").map(String::as_str), Some("obs"));
    assert_eq!(status.discovered_labels.get("__address__"), Some(&server.addr.to_string()));
    assert_eq!(status.scrape_interval, "200ms");
    assert!(status.last_scrape_unix_ms.is_some());
    let json = serde_json::to_value(&targets).unwrap();
    assert_eq!(json[0]["health"], "up");

    manager.sync(vec![]);
    let markers = sink.wait_for(WAIT, |b| !b.is_empty() && b.iter().all(is_stale)).await;
    let mut want = vec!["a".to_string(), "b".to_string()];
    want.extend(SYNTHETIC.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(stale_names(&markers), want);
    assert!(markers.iter().all(|t| t.samples[0].value.to_bits() == 0x7ff0_0000_0000_0002));
    assert!(manager.targets().is_empty());

    // The loop is gone: no more scrapes.
    let requests = server.requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.requests().len(), requests);
    manager.shutdown().await;
}

#[tokio::test]
async fn sync_with_the_same_targets_keeps_the_loops_running() {
    let server = Server::start(Reply::text("a 1\n")).await;
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 1);
    let groups = vec![group(&[server.addr.to_string()], options("mgr_same"))];
    manager.sync(groups.clone());
    sink.wait_for(WAIT, |b| b.iter().any(|t| name(t) == "up")).await;
    manager.sync(groups.clone());
    manager.sync(groups);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.batches().iter().all(|b| !b.iter().any(is_stale)), "no staleness markers on a no-op sync");
    assert_eq!(manager.targets().len(), 1);
    manager.shutdown().await;
    assert!(sink.batches().iter().all(|b| !b.iter().any(is_stale)), "no staleness markers on shutdown");
}

#[tokio::test]
async fn a_target_whose_options_change_restarts_without_staleness_markers() {
    let server = Server::start(Reply::text("a 1\n")).await;
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 1);
    manager.sync(vec![group(&[server.addr.to_string()], options("mgr_change"))]);
    sink.wait_for(WAIT, |b| b.iter().any(|t| name(t) == "up")).await;
    let changed = ScrapeOptions { sample_limit: 1000, ..options("mgr_change") };
    manager.sync(vec![group(&[server.addr.to_string()], changed)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.batches().iter().all(|b| !b.iter().any(is_stale)));
    assert_eq!(manager.targets().len(), 1);
    manager.shutdown().await;
}

#[tokio::test]
async fn relabeling_drops_targets_and_invalid_targets_are_reported() {
    let kept = Server::start(Reply::text("a 1\n")).await;
    let options = ScrapeOptions {
        relabel_configs: vec![RelabelConfig {
            source_labels: vec!["__address__".into()],
            regex: Some("dropme:.*".into()),
            action: Some("drop".into()),
            ..Default::default()
        }],
        ..options("mgr_relabel")
    };
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 1);
    let errors = manager.sync(vec![group(
        &[kept.addr.to_string(), "dropme:9100".into(), "bad/address:1".into(), kept.addr.to_string()],
        options,
    )]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("__address__"), "{}", errors[0]);
    let targets = manager.targets();
    assert_eq!(targets.len(), 1, "duplicates are one target, dropped ones none");
    assert_eq!(targets[0].scrape_url, format!("http://{}/metrics", kept.addr));

    let bad_rules = ScrapeOptions {
        relabel_configs: vec![RelabelConfig { action: Some("explode".into()), ..Default::default() }],
        ..ScrapeOptions::default()
    };
    let errors = manager.sync(vec![group(&[kept.addr.to_string()], bad_rules)]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("action"), "{}", errors[0]);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_down_target_shows_its_error() {
    let server = Server::start(Reply { status: 503, ..Reply::text("") }).await;
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 1);
    manager.sync(vec![group(&[server.addr.to_string()], options("mgr_down"))]);
    let batch = sink.wait_for(WAIT, |b| b.iter().any(|t| name(t) == "up")).await;
    assert_eq!(value(&batch, "up"), 0.0);
    let t = &manager.targets()[0];
    assert_eq!(t.health, Health::Down);
    assert!(t.last_error.as_deref().unwrap_or("").contains("503"));
    let rendered = lgtm_pipeline::metrics::render();
    assert!(rendered.contains("lgtm_agent_scrape_targets{job=\"mgr_down\"} 1"), "{rendered}");
    manager.shutdown().await;
    let rendered = lgtm_pipeline::metrics::render();
    assert!(rendered.contains("lgtm_agent_scrape_targets{job=\"mgr_down\"} 0"));
}

#[tokio::test]
async fn one_provider_syncing_keeps_the_targets_of_the_others() {
    let fixed = Server::start(Reply::text("a 1\n")).await;
    let found = Server::start(Reply::text("b 1\n")).await;
    let sink = CollectingSink::default();
    let manager = TargetManager::new(sink.clone(), 3);
    assert!(manager
        .sync_provider("static_configs", vec![group(&[fixed.addr.to_string()], options("mgr_static"))])
        .is_empty());
    assert!(manager
        .sync_provider("discovery", vec![group(&[found.addr.to_string()], options("mgr_found"))])
        .is_empty());
    let jobs = |m: &TargetManager<CollectingSink>| m.targets().into_iter().map(|t| t.job).collect::<Vec<_>>();
    assert_eq!(jobs(&manager), vec!["mgr_found".to_string(), "mgr_static".to_string()]);

    // Discovery finds nothing any more: only its own target goes, and goes stale.
    manager.sync_provider("discovery", vec![]);
    assert_eq!(jobs(&manager), vec!["mgr_static".to_string()]);
    let markers = sink.wait_for(WAIT, |b| !b.is_empty() && b.iter().all(is_stale)).await;
    assert!(
        markers.iter().all(|t| label(t, "job") == Some("mgr_found")),
        "only the dropped provider's series go stale"
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn a_target_scraped_elsewhere_is_listed_with_its_status() {
    let manager = TargetManager::new(CollectingSink::default(), 1);
    let shown = target("127.0.0.1:9100".parse().unwrap(), options("mgr_shown"));
    let status = Arc::new(std::sync::Mutex::new(lgtm_scrape::scrape_loop::LoopStatus::default()));
    manager.show(shown, status.clone());
    status.lock().unwrap().record(Ok(42), 1_700_000_000_000, 0.25);
    let listed = manager.targets();
    assert_eq!(listed.len(), 1);
    let t = &listed[0];
    assert_eq!((t.job.as_str(), t.scrape_url.as_str()), ("mgr_shown", "http://127.0.0.1:9100/metrics"));
    assert_eq!((t.health, t.last_samples, t.last_scrape_unix_ms), (Health::Up, 42, Some(1_700_000_000_000)));
    status.lock().unwrap().record(Err(&"collecting host metrics: gone"), 1_700_000_005_000, 0.1);
    let t = &manager.targets()[0];
    assert_eq!(t.health, Health::Down);
    assert_eq!(t.last_error.as_deref(), Some("collecting host metrics: gone"));
    manager.shutdown().await;
}
