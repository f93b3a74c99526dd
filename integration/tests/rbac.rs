//! The chart's RBAC is what the code calls, no more and no less. The chart is rendered (with
//! `../shared/tools/helm-template`, as `scripts/check-chart.sh` does); the agent runs in each mode
//! on the config the chart rendered for it (endpoints pointed at loopback fakes) against the fake
//! API server, whose audit log records every call with the verb RBAC checks. Every call must be
//! allowed by the rules bound to that mode's ServiceAccount, and every rule must be used by a call
//! or be listed in [`NEEDED_WITHOUT_A_CALL`] with the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::AgentConfig;
use lgtm_integration::fake_apiserver::{ApiCall, FakeApiServer};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::{eventually, free_port, require};
use serde_json::json;
use serde_yaml::Value;

const RELEASE: &str = "lgtm-agent";
const NAMESPACE: &str = "observability";

/// Rules the chart grants that no API call of the agent uses, with why they are needed anyway:
/// (ServiceAccount, API group, resource, verb, reason).
const NEEDED_WITHOUT_A_CALL: &[(&str, &str, &str, &str, &str)] = &[
    (
        "lgtm-agent-daemonset",
        "",
        "nodes/metrics",
        "get",
        "the kubelet authorizes scrapes of /metrics* (via: direct) with a SubjectAccessReview on it",
    ),
    (
        "lgtm-agent-daemonset",
        "",
        "nodes/proxy",
        "get",
        "granted only with daemonset.kubelet.via: apiserver (not the default rendered here): scrapes through the API server are requests for nodes/proxy",
    ),
];

/// One RBAC rule as bound to a ServiceAccount; `namespace` is `None` for a ClusterRoleBinding.
#[derive(Debug, Clone)]
struct Rule {
    role: String,
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

impl Rule {
    fn allows(&self, c: &ApiCall) -> bool {
        self.namespace.as_ref().is_none_or(|ns| c.namespace.as_ref() == Some(ns))
            && self.groups.contains(&c.group)
            && self.resources.contains(&c.resource)
            && self.verbs.contains(&c.verb)
            && (self.names.is_empty() || c.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }

    /// Each (group, resource, verb) the rule grants.
    fn grants(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for g in &self.groups {
            for r in &self.resources {
                for v in &self.verbs {
                    out.push((g.clone(), r.clone(), v.clone()));
                }
            }
        }
        out
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// The rules bound to ServiceAccount `sa` of the release namespace.
fn rules_of(docs: &[Value], sa: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for binding in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding") {
        let subjects = binding["subjects"].as_sequence().cloned().unwrap_or_default();
        if !subjects.iter().any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE) {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role =
            find(docs, role_kind, role_name).unwrap_or_else(|| panic!("{role_kind} {role_name} is not rendered"));
        let namespace = (binding["kind"] == "RoleBinding")
            .then(|| binding["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE).to_string());
        for r in role["rules"].as_sequence().cloned().unwrap_or_default() {
            out.push(Rule {
                role: format!("{role_kind} {role_name}"),
                namespace: namespace.clone(),
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                names: strings(&r["resourceNames"]),
            });
        }
    }
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The chart rendered with its defaults, as documents; `None` when helm-template cannot be built.
fn render_chart() -> Option<Vec<Value>> {
    let build = repo_root().join("../shared/tools/helm-template/build.sh");
    let out = Command::new("bash").arg(&build).output().ok().filter(|o| o.status.success())?;
    let bin = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let rendered = Command::new(&bin)
        .args(["--name", RELEASE, "--namespace", NAMESPACE])
        // The two values the chart requires (deploy-remote-agent.sh sets them the same way).
        .args(["--set", "clusterName=lgtm-remote-agent", "--set", "tenant=remote04"])
        .arg(repo_root().join("charts/lgtm-agent"))
        .output()
        .expect("run helm-template");
    assert!(rendered.status.success(), "chart renders: {}", String::from_utf8_lossy(&rendered.stderr));
    let text = String::from_utf8(rendered.stdout).expect("utf-8 manifests");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("manifest YAML"))
        .filter(|d| !d.is_null())
        .collect();
    Some(docs)
}

use serde::Deserialize;

/// The agent config the chart rendered into ConfigMap `name`.
fn rendered_config(docs: &[Value], name: &str) -> AgentConfig {
    let cm = find(docs, "ConfigMap", name).unwrap_or_else(|| panic!("ConfigMap {name} rendered"));
    let text = cm["data"].as_mapping().and_then(|m| m.values().next()).and_then(Value::as_str).expect("config");
    AgentConfig::from_yaml(text).expect("the rendered config is YAML")
}

fn service_account_of(docs: &[Value], kind: &str, name: &str) -> String {
    let w = find(docs, kind, name).unwrap_or_else(|| panic!("{kind} {name} rendered"));
    w["spec"]["template"]["spec"]["serviceAccountName"].as_str().expect("serviceAccountName").to_string()
}

/// What the cluster has: a node, a pod with a Service, EndpointSlice, ServiceMonitor (with a
/// bearer token Secret) and PodMonitor, the StatefulSet of the cluster-mode agent, workloads for
/// the cluster-state metrics, and an event.
fn cluster_objects(server: &FakeApiServer, uid: &str) {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "ports": [{"name": "metrics", "containerPort": 1}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}}, "spec": {}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "shop"}}],
            "ports": [{"name": "metrics", "port": 1}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": "shop"},
            "data": {"token": "c2VjcmV0"}}),
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "endpoints": [{"port": "metrics", "bearerTokenSecret": {"name": "token", "key": "token"},
                    "tlsConfig": {"ca": {"configMap": {"name": "ca", "key": "ca.crt"}}}}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "shop"},
            "data": {"ca.crt": "not a certificate"}}),
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "podMetricsEndpoints": [{"port": "metrics"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "lgtm-agent-cluster", "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {"containers": []}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": []}}}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {"containers": []}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "shop"}, "spec": {}}),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web-0.1", "namespace": "shop"},
            "eventTime": format!("{:.6}", k8s_openapi::jiff::Timestamp::now()),
            "reason": "Started", "type": "Normal", "note": "Started container app",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop"}}),
    ];
    for o in objects {
        server.apply(o).expect("apply fixture");
    }
}

/// A config the chart rendered, with its state in `data`, its endpoints on loopback (admin,
/// OTLP, its self-scrape), logs to `loki` and no Mimir or Tempo.
fn on_loopback(config: AgentConfig, data: &Path, admin: u16, loki: &FakeLoki) -> AgentConfig {
    config
        .set("data_dir", data.display().to_string())
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .set("shutdown.grace_period", "2s")
        .set("exporters.loki.url", loki.push_url())
        .set("exporters.loki.batch.max_wait", "100ms")
        // Its line has a fixed date, older than Loki's reject_old_samples_max_age.
        .set("exporters.loki.limits.reject_old_samples", false)
        .set("exporters.mimir.enabled", false)
        .set("exporters.tempo.enabled", false)
        .set("otlp.grpc", format!("127.0.0.1:{}", free_port()))
        .set("otlp.http", format!("127.0.0.1:{}", free_port()))
        // The receivers' default ports (0.0.0.0:9411, :6831, ...) may be taken on a shared machine,
        // which is fatal since a listener that cannot bind stops the agent.
        .set("otlp.zipkin", "")
        .set("otlp.jaeger", json!({ "thrift_compact": "", "thrift_binary": "", "thrift_http": "", "grpc": "" }))
        .set("scrape.static_configs", json!([{ "targets": [format!("127.0.0.1:{admin}")] }]))
}

/// Runs the agent on `config` until `ready` holds, then stops it with SIGTERM; the calls it made.
async fn calls_of_a_run<F, Fut>(
    server: &FakeApiServer,
    config: AgentConfig,
    admin: u16,
    what: &str,
    ready: F,
) -> Vec<ApiCall>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let from = server.calls().len();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(dir.path(), &config.yaml(), admin).await;
    eventually(Duration::from_secs(30), what, ready).await;
    // A few more seconds for the periodic work (lease renewals, resyncs).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{what}: SIGTERM exits 0: {status:?}\n{}", agent.log());
    server.calls()[from..].to_vec()
}

fn describe(c: &ApiCall) -> String {
    let group = if c.group.is_empty() { "core".to_string() } else { c.group.clone() };
    format!(
        "{} {group}/{}{}{}",
        c.verb,
        c.resource,
        c.namespace.as_ref().map(|n| format!(" in {n}")).unwrap_or_default(),
        c.name.as_ref().map(|n| format!(" named {n}")).unwrap_or_default()
    )
}

/// Checks `calls` against the rules bound to `sa`: prints both, returns the problems.
fn compare(sa: &str, rules: &[Rule], calls: &[ApiCall]) -> Vec<String> {
    let mut problems = Vec::new();
    let distinct: BTreeSet<&ApiCall> = calls.iter().collect();
    println!("[rbac] {sa}: {} calls ({} distinct)", calls.len(), distinct.len());
    for c in &distinct {
        match rules.iter().find(|r| r.allows(c)) {
            Some(r) => println!("    {:<70} allowed by {}", describe(c), r.role),
            None => {
                println!("    {:<70} FORBIDDEN", describe(c));
                problems.push(format!("{sa}: {} is not allowed by the chart", describe(c)));
            }
        }
    }
    for r in rules {
        for (g, res, v) in r.grants() {
            let used = distinct.iter().any(|c| c.group == g && c.resource == res && c.verb == v && r.allows(c));
            let excused = NEEDED_WITHOUT_A_CALL.iter().find(|n| n.0 == sa && n.1 == g && n.2 == res && n.3 == v);
            match (used, excused) {
                (true, _) => {}
                (false, Some(n)) => println!("    granted without a call: {v} {g}/{res} ({}): {}", r.role, n.4),
                (false, None) => {
                    println!("    UNUSED: {v} {g}/{res} ({})", r.role);
                    problems.push(format!("{sa}: {} grants {v} on {g}/{res}, which nothing calls", r.role));
                }
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_exactly_what_each_mode_calls() {
    let Some(docs) = require("helm-template (../shared/tools/helm-template)", render_chart()) else { return };
    let server = FakeApiServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let uid = "0d9b7f1e-0000-4000-8000-000000000001";
    cluster_objects(&server, uid);
    let loki = FakeLoki::start().await;
    // As the chart's pods have them (downward API). This is the only test of this binary.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    std::env::set_var("POD_NAME", "lgtm-agent-cluster-0");
    std::env::set_var("POD_NAMESPACE", NAMESPACE);
    std::env::set_var("NODE_NAME", "node-a");
    // The chart scrapes the kubelet at the node's IP (status.hostIP); not reached here.
    std::env::set_var("NODE_IP", "127.0.0.1");

    // Cluster mode, on the config the chart rendered, endpoints on loopback.
    let admin = free_port();
    let config = on_loopback(rendered_config(&docs, "lgtm-agent-cluster"), &tmp.path().join("cluster"), admin, &loki);
    let targets = format!("http://127.0.0.1:{admin}/targets");
    let cluster_calls = calls_of_a_run(&server, config, admin, "monitors discovered and the event shipped", || {
        let (url, loki) = (targets.clone(), &loki);
        async move {
            let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let sources: BTreeSet<&str> =
                body["targets"].as_array()?.iter().filter_map(|t| t["source"].as_str()).collect();
            let both = sources.iter().any(|s| s.starts_with("serviceMonitor/"))
                && sources.iter().any(|s| s.starts_with("podMonitor/"));
            (both && loki.total_entries() > 0).then_some(())
        }
    })
    .await;

    // Daemonset mode: pod logs enriched from the API, host metrics, OTLP. The kubelet is not
    // scraped here: reaching it is not an API call (see NEEDED_WITHOUT_A_CALL).
    let pods = tmp.path().join("pods");
    let dir = pods.join(format!("shop_web-0_{uid}")).join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0.log"), "2026-11-25T08:00:00.000000000Z stdout F hello from web-0\n").unwrap();
    let admin = free_port();
    let config =
        on_loopback(rendered_config(&docs, "lgtm-agent-daemonset"), &tmp.path().join("daemonset"), admin, &loki)
            .set("logs.path", pods.display().to_string())
            .set("scrape.kubelet.enabled", false)
            .set("scrape.host_metrics.root", "/")
            .set("otlp.forward_traces_to", format!("127.0.0.1:{}", free_port()));
    let daemonset_calls = calls_of_a_run(&server, config, admin, "the pod's line shipped with its app label", || {
        let lines = loki.lines_by_stream();
        async move {
            lines
                .iter()
                .any(|(stream, l)| stream.contains("app=\"web\"") && l.iter().any(|l| l.contains("hello")))
                .then_some(())
        }
    })
    .await;

    let mut problems = Vec::new();
    for (kind, name, calls) in
        [("StatefulSet", "lgtm-agent-cluster", &cluster_calls), ("DaemonSet", "lgtm-agent-daemonset", &daemonset_calls)]
    {
        let sa = service_account_of(&docs, kind, name);
        problems.extend(compare(&sa, &rules_of(&docs, &sa), calls));
    }
    assert!(problems.is_empty(), "the chart's RBAC and the agent's calls differ:\n{}", problems.join("\n"));
}
