//! The agent binary in cluster mode against an API server that refuses or goes away (issue 22,
//! what a real kube-apiserver showed): without the Prometheus Operator CRDs (404) and with a
//! resource the Role does not grant (403) it asks a few times a minute, not twice a second, and
//! annotation targets are scraped without waiting for the refused kinds; after an API server
//! restart the watches resume within seconds.

use std::time::{Duration, Instant};

use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_mimir::FakeMimir;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::{eventually, free_port};
use serde_json::{json, Value};

/// The agent finds the API server through `KUBECONFIG`: the tests of this binary take turns.
static KUBECONFIG_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn annotated_pod(name: &str, target: &FakeTarget) -> Value {
    let port = target.addr.port();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop",
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": port.to_string()}},
        "spec": {"containers": [{"name": "app", "ports": [{"name": "metrics", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}})
}

/// The agent, with a Mimir that takes what it scrapes (flushed at the end: with an unreachable
/// one the agent would retry past the tests' stop timeout).
async fn start_agent(dir: &std::path::Path, server: &FakeApiServer) -> (AgentProcess, String, FakeMimir) {
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let mimir = FakeMimir::start(1e9, 1e9).await;
    let admin = free_port();
    // Scraped every second: with the default 30 s a target's first scrape comes at its phase in
    // the interval, up to 30 s after it is discovered, and the tests wait for `up`.
    let config = format!(
        "mode: cluster\ncluster: c1\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ url: \"{mimir}\" }}\n  tempo: {{ enabled: false }}\n\
         \x20 loki: {{ url: \"http://127.0.0.1:9/loki/api/v1/push\" }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         events: {{ enabled: false }}\nscrape: {{ interval: 1s }}\n",
        data = dir.join("data").display(),
        mimir = mimir.push_url(),
    );
    let agent = AgentProcess::start(dir, &config, admin).await;
    (agent, format!("http://127.0.0.1:{admin}/targets"), mimir)
}

/// The scrape URLs of the targets up on `/targets`.
async fn up_targets(url: &str) -> Option<Vec<String>> {
    let body: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    let targets = body["targets"].as_array()?;
    Some(
        targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["scrape_url"].as_str().map(String::from))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_lists_back_off_and_annotation_targets_do_not_wait() {
    let _turn = KUBECONFIG_ENV.lock().await;
    tokio::task::spawn_blocking(agent_binary).await.expect("building lgtm-agent");
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    // No Prometheus Operator CRDs (404), and a Role without EndpointSlices (403).
    server.set_group_hidden("monitoring.coreos.com", true);
    server.set_forbidden("discovery.k8s.io", "endpointslices", true);
    let target = FakeTarget::start("a 1\n").await;
    server.apply(annotated_pod("web-0", &target)).unwrap();

    let started = Instant::now();
    let (mut agent, url, _mimir) = start_agent(dir.path(), &server).await;
    let want = format!("http://{}/metrics", target.addr);
    eventually(Duration::from_secs(20), "the annotated pod scraped", || {
        let (url, want) = (url.clone(), want.clone());
        async move { up_targets(&url).await.filter(|t| t.contains(&want)) }
    })
    .await;
    let scraped_after = started.elapsed();
    // Before: the first build waited the whole initial_sync_timeout (10 s) for the refused kinds.
    assert!(scraped_after < Duration::from_secs(6), "annotation target up after {scraped_after:?}");

    // A bounded run of 20 s, then the requests counted from the audit log.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    let calls = server.calls();
    let count = |resource: &str| calls.iter().filter(|c| c.resource == resource && c.verb == "list").count();
    let slices = count("endpointslices");
    let monitors = count("servicemonitors") + count("podmonitors");
    let discovery =
        server.request_paths().iter().filter(|p| p.trim_end_matches('/') == "/apis/monitoring.coreos.com/v1").count();
    let log = agent.log();
    agent.terminate(Duration::from_secs(10)).await;
    eprintln!("in {:?}: {slices} LISTs of the forbidden endpointslices, {monitors} of the absent monitors, {discovery} discovery requests of their group", started.elapsed());
    // Before: about one LIST a second (20 here). Now 0.5 s doubling to 5-10 s: at most 7 in 20 s.
    assert!((2..=7).contains(&slices), "{slices} LISTs of a forbidden resource in 20 s");
    assert_eq!(monitors, 0, "absent monitor kinds are not listed");
    assert!((1..=2).contains(&discovery), "{discovery} discovery requests in 20 s (every 60 s)");
    assert_eq!(log.matches("ServiceMonitor is not served").count(), 1, "{log}");
    let warns = log.lines().filter(|l| l.contains("WARN") && l.contains("watch failing")).count();
    assert_eq!(warns, 1, "one warning for the forbidden kind: {log}");
    assert!(!log.contains("watch recovered"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_within_seconds_after_an_apiserver_restart() {
    let _turn = KUBECONFIG_ENV.lock().await;
    tokio::task::spawn_blocking(agent_binary).await.expect("building lgtm-agent");
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeApiServer::start().await.unwrap();
    let (first, second) = (FakeTarget::start("a 1\n").await, FakeTarget::start("a 2\n").await);
    server.apply(annotated_pod("web-0", &first)).unwrap();
    let (mut agent, url, _mimir) = start_agent(dir.path(), &server).await;
    let want = format!("http://{}/metrics", first.addr);
    eventually(Duration::from_secs(20), "the first pod scraped", || {
        let (url, want) = (url.clone(), want.clone());
        async move { up_targets(&url).await.filter(|t| t.contains(&want)) }
    })
    .await;

    // Down for 8 s: long enough for every watcher's backoff to reach its cap.
    server.restart_after(Duration::from_secs(8)).await.unwrap();
    let back = Instant::now();
    server.apply(annotated_pod("web-1", &second)).unwrap();
    let want = format!("http://{}/metrics", second.addr);
    eventually(Duration::from_secs(30), "the pod created during the restart scraped", || {
        let (url, want) = (url.clone(), want.clone());
        async move { up_targets(&url).await.filter(|t| t.contains(&want)) }
    })
    .await;
    let resumed = back.elapsed();
    let log = agent.log();
    agent.terminate(Duration::from_secs(10)).await;
    eprintln!("a pod created as the API server came back was scraped {resumed:?} later");
    // The cap is 5 s plus jitter (10 s at most), and one watch listing again wakes the others.
    assert!(resumed < Duration::from_secs(11), "resumed after {resumed:?}: {log}");
    assert!(log.contains("watch recovered"), "{log}");
}
