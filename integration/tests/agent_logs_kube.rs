//! The real `lgtm-agent` binary with `logs.kubernetes: true`, `KUBECONFIG` pointing at the fake
//! Kubernetes API server: streams carry `app` and the configured pod labels and annotations of
//! this node's pods; a pod of another node, or one that is gone, ships with the path labels; a pod
//! annotated `lgtm-agent.io/exclude: "true"` and the agent's own pod (`POD_NAMESPACE`/`POD_NAME`,
//! as the chart sets them) ship nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_apiserver::FakeApiServer;
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::{eventually, free_port};
use serde_json::json;

fn agent_config(data_dir: &Path, pods_dir: &Path, loki_url: &str, admin_port: u16) -> String {
    AgentConfig::new("it-kube", data_dir, admin_port)
        .set("node_name", "node-a")
        .loki(loki_url, Backoff("50ms", "500ms"))
        .logs_from(pods_dir)
        .set("logs.kubernetes", true)
        .set("logs.pod_labels", ["team", "app.kubernetes.io/version"])
        .set("logs.pod_annotations", ["example.com/owner"])
        .yaml()
}

fn pod(
    name: &str,
    uid: &str,
    node: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": labels, "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "shop:1"}]},
    })
}

/// Appends `n` CRI lines to `<root>/shop_<pod>_<uid>/app/0.log`.
fn write_cri(root: &Path, pod: &str, uid: &str, n: usize) {
    let dir = root.join(format!("shop_{pod}_{uid}")).join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let mut buf = String::new();
    for i in 0..n {
        buf.push_str(&format!("2026-11-25T08:00:00.{i:09}Z stdout F {pod} line {i}\n"));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// `{a="1", b="x, y"}` as a map (values may hold commas and escaped quotes).
fn parse_selector(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim().trim_start_matches('{').trim_end_matches('}');
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim().trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut base: BTreeMap<String, String> = [
        ("cluster", "it-kube"),
        ("namespace", "shop"),
        ("container", "app"),
        ("job", "shop/app"),
        ("node", "node-a"),
        ("stream", "stdout"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    base.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_app_and_configured_pod_labels_of_this_nodes_pods() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(pod(
        "shop-api-7d9",
        "uid-api",
        "node-a",
        json!({"app.kubernetes.io/name": "shop-api", "app": "legacy", "team": "payments", "app.kubernetes.io/version": "2.1.0"}),
        json!({"example.com/owner": "ana@example.com", "unrelated": "x"}),
    ))
    .unwrap();
    api.apply(pod("cart-5c4", "uid-cart", "node-a", json!({"app": "cart"}), json!({}))).unwrap();
    // Same namespace and name as a directory on this node, but scheduled elsewhere: not used.
    api.apply(pod("stray-1", "uid-stray", "node-b", json!({"app": "stray", "team": "other"}), json!({}))).unwrap();
    api.apply(pod("noisy-0", "uid-noisy", "node-a", json!({"app": "noisy"}), json!({"lgtm-agent.io/exclude": "true"})))
        .unwrap();
    api.apply(pod("lgtm-agent-x1", "uid-agent", "node-a", json!({"app": "lgtm-agent"}), json!({}))).unwrap();

    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    // The agent inherits it; this file holds a single test, so no other test sees it.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    // Who the agent is, as the chart's downward API says it.
    std::env::set_var("POD_NAMESPACE", "shop");
    std::env::set_var("POD_NAME", "lgtm-agent-x1");

    let pods = tmp.path().join("pods");
    write_cri(&pods, "shop-api-7d9", "uid-api", 30);
    write_cri(&pods, "cart-5c4", "uid-cart", 20);
    write_cri(&pods, "stray-1", "uid-stray", 10);
    write_cri(&pods, "gone-0", "uid-gone", 5); // no such pod any more: path labels, still shipped
    write_cri(&pods, "noisy-0", "uid-noisy", 40); // annotated: not shipped
    write_cri(&pods, "lgtm-agent-x1", "uid-agent", 12); // the agent itself: not shipped
    let admin = free_port();
    let config = agent_config(&tmp.path().join("data"), &pods, &loki.push_url(), admin);
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;

    // A pod that starts while the agent runs: in the API before the kubelet writes its logs.
    api.apply(pod("worker-0", "uid-worker", "node-a", json!({"app.kubernetes.io/name": "worker"}), json!({}))).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The excluded files keep growing while the agent runs: still nothing of them.
    write_cri(&pods, "noisy-0", "uid-noisy", 40);
    write_cri(&pods, "lgtm-agent-x1", "uid-agent", 12);
    write_cri(&pods, "worker-0", "uid-worker", 15);

    let expected = 30 + 20 + 10 + 5 + 15;
    eventually(Duration::from_secs(60), "every line", || async { (loki.total_entries() >= expected).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        loki.total_entries(),
        expected,
        "nothing of the excluded pods, no duplicates\nagent log:\n{}",
        agent.log()
    );

    let by_stream: BTreeMap<BTreeMap<String, String>, Vec<String>> =
        loki.lines_by_stream().into_iter().map(|(s, lines)| (parse_selector(&s), lines)).collect();
    let want = [
        (
            labels(&[
                ("pod", "shop-api-7d9"),
                ("app", "shop-api"),
                ("team", "payments"),
                ("app_kubernetes_io_version", "2.1.0"),
                ("example_com_owner", "ana@example.com"),
            ]),
            30,
        ),
        (labels(&[("pod", "cart-5c4"), ("app", "cart")]), 20),
        (labels(&[("pod", "stray-1")]), 10),
        (labels(&[("pod", "gone-0")]), 5),
        (labels(&[("pod", "worker-0"), ("app", "worker")]), 15),
    ];
    for (selector, n) in &want {
        let lines = by_stream.get(selector).unwrap_or_else(|| {
            panic!(
                "no stream {selector:?}; streams: {:?}\nagent log:\n{}",
                by_stream.keys().collect::<Vec<_>>(),
                agent.log()
            )
        });
        let pod = &selector["pod"];
        assert_eq!(lines, &(0..*n).map(|i| format!("{pod} line {i}")).collect::<Vec<_>>(), "{pod}");
    }
    assert_eq!(by_stream.len(), want.len(), "one stream per container: {:?}", by_stream.keys().collect::<Vec<_>>());
    assert_eq!(agent.metric_sum("lgtm_agent_logs_pods_known", &[]).await, 5.0, "this node's pods only");

    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}
