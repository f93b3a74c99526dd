//! The agent binary in cluster mode against the fake Kubernetes API server: a ServiceMonitor
//! selecting a Service with three endpoints shows up on `/targets` with the operator's labels
//! and the monitor's status, and Kubernetes events reach the fake Loki.

use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::{eventually, free_port};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_discovers_monitors_and_ships_events() {
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
    server
        .apply(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "endpoints": [{"port": "metrics", "interval": "1s", "proxyUrl": "http://proxy:3128"}]}}))
        .unwrap();
    server
        .apply(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-0.1", "namespace": "shop"},
            "eventTime": format!("{:.6}", k8s_openapi::jiff::Timestamp::now()),
            "reason": "Started", "type": "Normal", "note": "Started container app",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop"}}))
        .unwrap();

    // The agent finds the API server through KUBECONFIG, as kubectl does. This is the only test
    // of this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin = free_port();
    let config = format!(
        "mode: cluster\ncluster: c1\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n\
         \x20 loki: {{ url: \"{loki}\", batch: {{ max_wait: 100ms }} }}\n\
         otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         events: {{ lease_namespace: observability }}\n",
        data = dir.path().join("data").display(),
        loki = loki.push_url(),
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
