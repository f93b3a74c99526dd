//! Events to a fake Loki through the real pipeline, with the fake API server: list + watch ship
//! with the exact stream labels and logfmt lines; the first start skips events older than the
//! lookback; a graceful handover and a crashed leader lose nothing and send nothing twice.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use lgtm_config::{Config, Mode};
use lgtm_integration::eventually;
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_pipeline::Pipeline;
use lgtm_statefulset::events::lease::{LeaseConfig, POSITION_ANNOTATION};
use lgtm_statefulset::events::shipper::ShipperOptions;
use lgtm_statefulset::events::{self, EventsOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn client(server: &FakeApiServer, dir: &Path) -> kube::Client {
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn options(identity: &str) -> EventsOptions {
    let duration = Duration::from_secs(2);
    EventsOptions {
        lease: LeaseConfig {
            name: "lgtm-agent-events".into(),
            namespace: "observability".into(),
            identity: identity.into(),
            duration,
        },
        retry_period: duration / 4,
        shipper: ShipperOptions {
            cluster: "c1".into(),
            lookback: Duration::from_secs(300),
            max_batch: 100,
            flush_after: Duration::from_millis(100),
            ack_grace: Duration::from_secs(5),
        },
    }
}

fn rfc3339(secs_ago: u64) -> String {
    let t = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
    let ts = k8s_openapi::jiff::Timestamp::try_from(t).unwrap();
    format!("{ts:.6}")
}

fn apply_event(server: &FakeApiServer, n: usize, secs_ago: u64) {
    server
        .apply(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": format!("web-0.{n}"), "namespace": "shop"},
            "eventTime": rfc3339(secs_ago), "reportingController": "kubelet", "reportingInstance": "node-a",
            "action": "Pulling", "reason": "Pulled", "type": if n.is_multiple_of(2) { "Normal" } else { "Warning" },
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop", "apiVersion": "v1"},
            "note": format!("event number {n}")}))
        .unwrap();
}

fn lines(loki: &FakeLoki) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (stream, lines) in loki.lines_by_stream() {
        out.extend(lines.into_iter().map(|l| (stream.clone(), l)));
    }
    out
}

/// The event numbers that reached Loki, in order of their number, with duplicates kept.
fn numbers(loki: &FakeLoki) -> Vec<usize> {
    let mut v: Vec<usize> = lines(loki)
        .iter()
        .filter_map(|(_, l)| l.rsplit_once("event number ").and_then(|(_, n)| n.trim_end_matches('"').parse().ok()))
        .collect();
    v.sort();
    v
}

async fn wait_for_numbers(loki: &FakeLoki, want: &[usize]) {
    eventually(Duration::from_secs(15), &format!("events {want:?} at Loki"), || {
        let got = numbers(loki);
        async move { (got.len() >= want.len()).then_some(()) }
    })
    .await;
    // Give stragglers (duplicates) a moment to show up before comparing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(numbers(loki), want, "every event once");
}

fn stored_position(server: &FakeApiServer) -> Option<u64> {
    let lease = server.get("coordination.k8s.io/v1", "Lease", "observability", "lgtm-agent-events")?;
    lease["metadata"]["annotations"][POSITION_ANNOTATION].as_str()?.parse().ok()
}

fn holder(server: &FakeApiServer) -> Option<String> {
    let lease = server.get("coordination.k8s.io/v1", "Lease", "observability", "lgtm-agent-events")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ship_once_across_handover_and_leader_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let loki = FakeLoki::start().await;
    let mut cfg = Config::default_for(Mode::Cluster);
    cfg.data_dir = dir.path().join("data");
    cfg.cluster = "c1".into();
    cfg.exporters.mimir.enabled = false;
    cfg.exporters.tempo.enabled = false;
    cfg.exporters.loki.url = Some(loki.push_url());
    cfg.exporters.loki.batch.max_wait = lgtm_config::Duration::from_millis(50);
    cfg.exporters.loki.queue.max_disk = Some(lgtm_config::ByteSize::from_bytes(0));
    let (pipeline, handle) = Pipeline::start(&cfg).unwrap();

    // Older than the lookback: not shipped on the first start.
    apply_event(&server, 0, 3600);
    for n in 1..=3 {
        apply_event(&server, n, 5);
    }

    // Leader A: list, then watch.
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(events::run(
        client(&server, dir.path()).await,
        options("agent-0"),
        pipeline.logs.clone(),
        stop_a.clone(),
    ));
    wait_for_numbers(&loki, &[1, 2, 3]).await;
    let all = lines(&loki);
    assert_eq!(
        all[0],
        (
            r#"{cluster="c1", job="integrations/kubernetes/eventhandler", namespace="shop", type="Normal"}"#.to_string(),
            r#"name=web-0 kind=Pod action=Pulling objectAPIversion=v1 reason=Pulled type=Normal reportingcontroller=kubelet reportinginstance=node-a count=1 msg="event number 2""#.to_string()
        )
    );
    assert!(all.iter().any(|(s, _)| s.contains(r#"type="Warning""#)));
    apply_event(&server, 4, 0);
    apply_event(&server, 5, 0);
    wait_for_numbers(&loki, &[1, 2, 3, 4, 5]).await;
    assert_eq!(holder(&server).as_deref(), Some("agent-0"));

    // Graceful handover: A stops (stores the position, releases); events meanwhile; B continues.
    stop_a.cancel();
    a.await.unwrap();
    assert_eq!(holder(&server), None, "released");
    apply_event(&server, 6, 0);
    apply_event(&server, 7, 0);
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(events::run(
        client(&server, dir.path()).await,
        options("agent-1"),
        pipeline.logs.clone(),
        stop_b.clone(),
    ));
    wait_for_numbers(&loki, &[1, 2, 3, 4, 5, 6, 7]).await;

    // Crash: B dies without releasing; C, already waiting, takes over after the lease duration.
    let stop_c = CancellationToken::new();
    let c = tokio::spawn(events::run(
        client(&server, dir.path()).await,
        options("agent-2"),
        pipeline.logs.clone(),
        stop_c.clone(),
    ));
    let latest: u64 = server.get("events.k8s.io/v1", "Event", "shop", "web-0.7").unwrap()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(10), "B stored its position", || {
        let p = stored_position(&server);
        async move { (p >= Some(latest)).then_some(()) }
    })
    .await;
    b.abort();
    let _ = b.await;
    apply_event(&server, 8, 0);
    eventually(Duration::from_secs(10), "C holds the lease", || {
        let h = holder(&server);
        async move { (h.as_deref() == Some("agent-2")).then_some(()) }
    })
    .await;
    apply_event(&server, 9, 0);
    wait_for_numbers(&loki, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).await;

    stop_c.cancel();
    c.await.unwrap();
    drop(stop_b);
    drop(pipeline);
    handle.shutdown(Duration::from_secs(2)).await;
}
