//! The agent binary in cluster mode against the fake Kubernetes API server: a ServiceMonitor
//! selecting a Service with three endpoints shows up on `/targets` with the operator's labels
//! and the monitor's status, its series reach a real Prometheus (remote-write receiver) with
//! exactly the operator's labels, an edited `relabelings` applies without a restart, a deleted
//! monitor's series go stale, and Kubernetes events reach the fake Loki. A monitor with
//! `basicAuth` scrapes a target that requires it, with the credentials of a Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::peers::prometheus::{Prometheus, QueriedSeries};
use lgtm_integration::{eventually, free_port, require};
use serde_json::{json, Value};

/// The agent finds the API server through `KUBECONFIG`, as kubectl does: the tests of this
/// binary take turns, so that each agent starts with its own test's value.
static KUBECONFIG_ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_discovers_monitors_and_ships_events() {
    let _turn = KUBECONFIG_ENV.lock().await;
    // Built before the Event is created: events older than the lookback (5 min) are not shipped.
    tokio::task::spawn_blocking(agent_binary).await.expect("building lgtm-agent");
    let Some(prom) = require("prometheus", Prometheus::start().await) else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let loki = FakeLoki::start().await;
    let targets =
        [FakeTarget::start("a 1\n").await, FakeTarget::start("a 2\n").await, FakeTarget::start("a 3\n").await];

    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}}, "spec": {}}))
        .unwrap();
    let endpoints: Vec<Value> = (0..3)
        .map(|i| json!({"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": format!("web-{i}"), "namespace": "shop"}}))
        .collect();
    for (i, t) in targets.iter().enumerate() {
        let port = t.addr.port();
        server
            .apply(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop"},
                "spec": {"containers": [{"name": "app", "ports": [{"name": "metrics", "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": "127.0.0.1"}}))
            .unwrap();
        server
            .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": [endpoints[i].clone()],
                "ports": [{"name": "metrics", "port": port}]}))
            .unwrap();
    }
    let service_monitor = |relabelings: Value| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "endpoints": [{"port": "metrics", "interval": "1s", "proxyUrl": "http://proxy:3128",
                    "relabelings": relabelings}]}})
    };
    server.apply(service_monitor(json!([]))).unwrap();
    server
        .apply(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-0.1", "namespace": "shop"},
            "eventTime": format!("{:.6}", k8s_openapi::jiff::Timestamp::now()),
            "reason": "Started", "type": "Normal", "note": "Started container app",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop"}}))
        .unwrap();

    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin = free_port();
    let config = format!(
        "mode: cluster\ncluster: c1\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ url: \"{mimir}\", batch: {{ max_wait: 100ms }} }}\n  tempo: {{ enabled: false }}\n\
         \x20 loki: {{ url: \"{loki}\", batch: {{ max_wait: 100ms }} }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         events: {{ lease_namespace: observability }}\n",
        data = dir.path().join("data").display(),
        loki = loki.push_url(),
        mimir = prom.write_url(),
    );
    let mut agent = AgentProcess::start(dir.path(), &config, admin).await;
    let url = format!("http://127.0.0.1:{admin}/targets");
    let body: Value = eventually(Duration::from_secs(20), "three discovered targets up", || {
        let url = url.clone();
        async move {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let targets = body["targets"].as_array()?;
            let up = targets.iter().filter(|t| t["health"] == "up").count();
            (targets.len() == 3 && up == 3).then_some(body)
        }
    })
    .await;
    // Every endpoint of the Service, each with the operator's labels.
    let mut scraped: Vec<&str> = Vec::new();
    for t in body["targets"].as_array().expect("targets") {
        assert_eq!(t["source"], "serviceMonitor/shop/web/0", "{t}");
        for (k, v) in
            [("job", "web"), ("namespace", "shop"), ("service", "web"), ("container", "app"), ("endpoint", "metrics")]
        {
            assert_eq!(t["labels"][k], v, "{t}");
        }
        assert!(t["discovered_labels"]["__meta_kubernetes_endpointslice_name"].is_string(), "{t}");
        scraped.push(t["scrape_url"].as_str().expect("scrape_url"));
    }
    scraped.sort_unstable();
    let mut expected: Vec<String> = targets.iter().map(|t| format!("http://{}/metrics", t.addr)).collect();
    expected.sort_unstable();
    assert_eq!(scraped, expected, "one target per endpoint, at its address");
    let monitor = &body["discovery"]["monitors"][0];
    assert_eq!(monitor["name"], "web");
    assert_eq!(monitor["unsupported"], json!(["spec.endpoints[0].proxyUrl: not supported"]));
    assert_eq!(monitor["targets_here"], 3);

    // The series in a real Prometheus: exactly the labels the Prometheus Operator gives them.
    let expected: Vec<(BTreeMap<String, String>, f64)> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let labels = [
                ("__name__", "a".to_string()),
                ("cluster", "c1".into()),
                ("job", "web".into()),
                ("namespace", "shop".into()),
                ("service", "web".into()),
                ("pod", format!("web-{i}")),
                ("container", "app".into()),
                ("endpoint", "metrics".into()),
                ("instance", t.addr.to_string()),
            ];
            (labels.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), (i + 1) as f64)
        })
        .collect();
    let in_prometheus = |query: &'static str| {
        let prom = &prom;
        async move {
            let mut got: Vec<(BTreeMap<String, String>, f64)> =
                prom.query(query).await.into_iter().map(|QueriedSeries { labels, value }| (labels, value)).collect();
            got.sort_by(|a, b| a.0.get("pod").cmp(&b.0.get("pod")));
            got
        }
    };
    eventually(Duration::from_secs(20), "the three targets' series in Prometheus", || async {
        (in_prometheus(r#"a{cluster="c1"}"#).await.len() == 3).then_some(())
    })
    .await;
    assert_eq!(in_prometheus(r#"a{cluster="c1"}"#).await, expected, "series and labels in Prometheus");

    // An edited `relabelings` applies to the running agent: the series get the new label, the
    // old ones go stale.
    let pid = agent.pid();
    server.apply(service_monitor(json!([{"targetLabel": "team", "replacement": "checkout"}]))).unwrap();
    let relabeled: Vec<(BTreeMap<String, String>, f64)> = expected
        .iter()
        .map(|(labels, v)| {
            let mut labels = labels.clone();
            labels.insert("team".into(), "checkout".into());
            (labels, *v)
        })
        .collect();
    eventually(Duration::from_secs(20), "only the relabeled series in Prometheus", || async {
        (in_prometheus(r#"a{cluster="c1"}"#).await == relabeled).then_some(())
    })
    .await;
    assert_eq!(agent.pid(), pid, "no restart");

    // A deleted monitor: its targets stop and their series go stale (gone from instant queries).
    server.delete("monitoring.coreos.com/v1", "ServiceMonitor", "shop", "web").unwrap();
    eventually(Duration::from_secs(20), "the deleted monitor's series stale in Prometheus", || async {
        in_prometheus(r#"a{cluster="c1"}"#).await.is_empty().then_some(())
    })
    .await;
    let up = prom.query(r#"up{cluster="c1", job="web"}"#).await;
    assert!(up.is_empty(), "`up` of the deleted monitor's targets is stale too: {up:?}");

    eventually(Duration::from_secs(20), "the event at Loki", || {
        let lines = loki.lines_by_stream();
        async move {
            let stream =
                r#"{cluster="c1", job="integrations/kubernetes/eventhandler", namespace="shop", type="Normal"}"#;
            let l = lines.get(stream)?;
            (l == &vec![
                r#"name=web-0 kind=Pod reason=Started type=Normal count=1 msg="Started container app""#.to_string()
            ])
                .then_some(())
        }
    })
    .await;
    assert!(agent.log().contains("proxyUrl"), "unsupported field logged");
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// A target that answers only requests with `Authorization: Basic <scraper:s3cret>`, counting
/// the refused ones.
async fn basic_auth_target() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                // base64("scraper:s3cret")
                if headers.get("authorization").is_some_and(|v| v == "Basic c2NyYXBlcjpzM2NyZXQ=") {
                    (StatusCode::OK, "secured 1\n")
                } else {
                    counter.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::UNAUTHORIZED, "")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the basic-auth target");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_basic_auth_comes_from_a_secret_and_follows_its_rotation() {
    let _turn = KUBECONFIG_ENV.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let (addr, refused) = basic_auth_target().await;
    let port = addr.port();
    let secret = |password_base64: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scrape-auth", "namespace": "shop"},
            "type": "Opaque", "data": {"username": "c2NyYXBlcg==", "password": password_base64}})
    };
    // First a wrong password (base64 "wrong").
    server.apply(secret("d3Jvbmc=")).unwrap();
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "vault", "namespace": "shop", "labels": {"app": "vault"}}, "spec": {}}))
        .unwrap();
    server
        .apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vault-0", "namespace": "shop"},
            "spec": {"containers": [{"name": "vault", "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}))
        .unwrap();
    server
        .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "vault-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "vault"}},
            "addressType": "IPv4", "ports": [{"name": "metrics", "port": port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": "vault-0", "namespace": "shop"}}]}))
        .unwrap();
    server
        .apply(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "vault", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "vault"}},
                "endpoints": [{"port": "metrics", "interval": "1s", "followRedirects": false,
                    "basicAuth": {"username": {"name": "scrape-auth", "key": "username"},
                        "password": {"name": "scrape-auth", "key": "password"}}}]}}))
        .unwrap();

    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin = free_port();
    let config = format!(
        "mode: cluster\ncluster: c1\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n  loki: {{ enabled: false }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         events: {{ enabled: false, lease_namespace: observability }}\n",
        data = dir.path().join("data").display(),
    );
    let mut agent = AgentProcess::start(dir.path(), &config, admin).await;
    let url = format!("http://127.0.0.1:{admin}/targets");
    let target = |health: &'static str| {
        let url = url.clone();
        async move {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let t = body["targets"].as_array()?.first()?.clone();
            (t["health"] == health).then_some((t, body["discovery"]["monitors"][0].clone()))
        }
    };
    let (down, monitor) =
        eventually(Duration::from_secs(20), "the target down with the wrong password", || target("down")).await;
    assert!(down["last_error"].as_str().is_some_and(|e| e.contains("401")), "{down}");
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(monitor["unsupported"], json!([]), "basicAuth and followRedirects are supported: {monitor}");

    // The Secret gets the right password: the agent picks it up without a restart.
    server.apply(secret("czNjcmV0")).unwrap();
    let (up, _) = eventually(Duration::from_secs(20), "the target up with the rotated password", || target("up")).await;
    assert_eq!(up["scrape_url"], format!("http://{addr}/metrics"));
    assert_eq!(up["labels"]["job"], "vault");
    let refused_after_up = refused.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), refused_after_up, "every later scrape authenticated");
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// Two ServiceMonitors selecting one Service: each monitor is its own job, as with the
/// Prometheus Operator (one scrape config per monitor endpoint), so the endpoint is scraped
/// once per monitor; `/targets` lists it under each, and the discovery counts say the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_monitors_of_one_service_scrape_it_once_each() {
    let _turn = KUBECONFIG_ENV.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let targets = [FakeTarget::start("a 1\n").await, FakeTarget::start("a 2\n").await];
    server
        .apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}}, "spec": {}}))
        .unwrap();
    for (i, t) in targets.iter().enumerate() {
        let port = t.addr.port();
        server
            .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("web-{i}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"name": "metrics", "port": port}],
                "endpoints": [{"addresses": ["127.0.0.1"]}]}))
            .unwrap();
    }
    for name in ["web", "web-again"] {
        server
            .apply(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "metrics", "interval": "1s"}]}}))
            .unwrap();
    }

    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin = free_port();
    let config = format!(
        "mode: cluster\ncluster: c1\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n  loki: {{ enabled: false }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         events: {{ enabled: false }}\n",
        data = dir.path().join("data").display(),
    );
    let mut agent = AgentProcess::start(dir.path(), &config, admin).await;
    let url = format!("http://127.0.0.1:{admin}/targets");
    let body: Value = eventually(Duration::from_secs(20), "four targets up", || {
        let url = url.clone();
        async move {
            let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let up = body["targets"].as_array()?.iter().filter(|t| t["health"] == "up").count();
            (up == 4).then_some(body)
        }
    })
    .await;
    let listed = body["targets"].as_array().expect("targets");
    assert_eq!(listed.len(), 4, "{body}");
    let mut seen: Vec<(String, String)> = listed
        .iter()
        .map(|t| (t["source"].as_str().unwrap().to_string(), t["scrape_url"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    let mut want = Vec::new();
    for source in ["serviceMonitor/shop/web-again/0", "serviceMonitor/shop/web/0"] {
        for t in &targets {
            want.push((source.to_string(), format!("http://{}/metrics", t.addr)));
        }
    }
    want.sort();
    assert_eq!(seen, want, "each endpoint under each monitor");
    // The same labels under both (the operator's job is the Service's name).
    assert!(listed.iter().all(|t| t["labels"]["job"] == "web"), "{body}");
    let discovery = &body["discovery"];
    assert_eq!(discovery["targets_total"], 4, "{discovery}");
    assert_eq!(discovery["targets_here"], 4, "{discovery}");
    for m in discovery["monitors"].as_array().expect("monitors") {
        assert_eq!(m["targets_here"], 2, "{m}");
    }
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}
