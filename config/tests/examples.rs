//! The example files load, with the environment a pod would have.

use std::path::Path;

use lgtm_config::{Config, Mode};

fn fake_env(name: &str) -> Option<String> {
    match name {
        "NODE_NAME" => Some("node-a".into()),
        "POD_NAME" => Some("lgtm-agent-cluster-1".into()),
        _ => None,
    }
}

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    Config::from_yaml(&path.display().to_string(), &text, None, fake_env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn local_example_needs_no_kubernetes() {
    let c = example("local.yaml");
    assert_eq!(c.mode(), Mode::Daemonset);
    assert_eq!(c.admin.listen, "127.0.0.1:9464");
    assert!(c.data_dir.starts_with("./data") || c.data_dir.starts_with("/tmp"));
    assert!(!c.logs.enabled() && !c.scrape.kubelet.enabled() && !c.scrape.host_metrics.enabled());
    assert!(!c.events.enabled() && !c.scrape.monitors.enabled());
    assert!(c.otlp.enabled());
    assert_eq!((c.otlp.grpc.as_str(), c.otlp.http.as_str()), ("127.0.0.1:4317", "127.0.0.1:4318"));
    let own = &c.scrape.static_configs[0];
    assert_eq!(own.targets, ["127.0.0.1:9464"]);
    assert_eq!(own.labels["job"], "lgtm-agent");
    assert_eq!(c.scrape.interval_of(own), lgtm_config::Duration::from_secs(15));
    for e in [&c.exporters.mimir, &c.exporters.loki, &c.exporters.tempo] {
        assert!(e.console);
    }
}

#[test]
fn daemonset_example_ships_to_the_central_stack() {
    let c = example("daemonset.yaml");
    assert_eq!(c.mode(), Mode::Daemonset);
    assert_eq!(c.cluster, "lgtm-remote-agent");
    assert_eq!(
        c.exporters.mimir.url.as_deref(),
        Some("http://mimir-distributor-lgtm-central.mimir.svc:8080/api/v1/push")
    );
    assert_eq!(c.exporters.loki.url.as_deref(), Some("http://loki-write-lgtm-central.loki.svc:3100/loki/api/v1/push"));
    assert_eq!(c.exporters.tempo.url.as_deref(), Some("http://tempo-distributor-lgtm-central.tempo.svc:4317"));
    assert_eq!(c.scrape.static_configs[0].labels["node"], "node-a");
    assert!(c.logs.enabled() && c.scrape.kubelet.enabled());
}

#[test]
fn cluster_example_samples_tails_and_watches_monitors() {
    let c = example("cluster.yaml");
    assert_eq!(c.mode(), Mode::Cluster);
    assert_eq!(c.exporters.mimir.headers["X-Agent-Pod"], "lgtm-agent-cluster-1");
    assert_eq!(c.scrape.monitors.replicas, Some(3));
    assert!(c.tail_sampling.enabled() && c.events.enabled() && c.cluster_state.enabled());
    assert_eq!(c.tail_sampling.policies, Config::default_for(Mode::Cluster).tail_sampling.policies);
}
