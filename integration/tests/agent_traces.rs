//! Traces end to end with real clients: the OpenTelemetry Python SDK sends to a daemonset-mode
//! agent, which routes by trace ID to a cluster-mode agent, which tail-samples with the PoC's
//! policies (errors kept, slow traces kept at 30%) and exports to an OTLP receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::otlp_receiver::OtlpReceiver;
use lgtm_integration::{eventually, free_port, require};

/// Skips (fails under CI) without the OpenTelemetry Python SDK and its OTLP gRPC exporter.
fn python_sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc"])
        .status()
        .is_ok_and(|s| s.success());
    require("the OpenTelemetry Python SDK", ok.then_some(())).is_some()
}

fn base(data: &Path, admin: u16) -> String {
    format!(
        "cluster: it-traces\ntenant: remote04\ndata_dir: {}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         logs: {{ enabled: false }}\nevents: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n",
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_to_daemonset_to_cluster_mode_tail_sampling_to_tempo() {
    if !python_sdk_available() {
        return;
    }
    let tempo = OtlpReceiver::start().await;
    let tmp = tempfile::tempdir().unwrap();

    let cluster_dir = tmp.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir).unwrap();
    let (cluster_admin, cluster_grpc) = (free_port(), free_port());
    let cluster_cfg = format!(
        "{}mode: cluster\nexporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  \
         tempo: {{ endpoint: \"{}\", batch: {{ max_wait: 100ms }} }}\n\
         scrape: {{ monitors: {{ enabled: false }} }}\n\
         otlp: {{ grpc: \"127.0.0.1:{cluster_grpc}\", http: \"\" }}\n\
         tail_sampling: {{ decision_wait: 2s }}\n",
        base(&cluster_dir.join("data"), cluster_admin),
        tempo.endpoint()
    );
    let mut cluster = AgentProcess::start(&cluster_dir, &cluster_cfg, cluster_admin).await;

    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let (node_admin, node_grpc) = (free_port(), free_port());
    let node_cfg = format!(
        "{}mode: daemonset\nexporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  tempo: {{ console: true }}\n\
         scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
         otlp: {{ grpc: \"127.0.0.1:{node_grpc}\", http: \"\", forward_traces_to: \"127.0.0.1:{cluster_grpc}\" }}\n",
        base(&node_dir.join("data"), node_admin)
    );
    let mut node = AgentProcess::start(&node_dir, &node_cfg, node_admin).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/send_traces.py");
    let (n_error, n_slow, n_fast) = (50usize, 400usize, 200usize);
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("127.0.0.1:{node_grpc}"))
        .args([n_error.to_string(), n_slow.to_string(), n_fast.to_string()])
        .output()
        .expect("run send_traces.py");
    assert!(out.status.success(), "send_traces.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let ids: BTreeMap<String, Vec<String>> = serde_json::from_slice(&out.stdout).expect("ids json");

    // Every error trace arrives whole (3 spans: root + 2 children).
    let spans_by_trace = |rx: &OtlpReceiver| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for e in &rx.state().exports {
            for rs in &e.request.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        let id: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        *m.entry(id).or_default() += 1;
                    }
                }
            }
        }
        m
    };
    let errors: BTreeSet<String> = ids["error"].iter().cloned().collect();
    eventually(Duration::from_secs(60), "every error trace at Tempo", || {
        let m = spans_by_trace(&tempo);
        let errors = errors.clone();
        async move { errors.iter().all(|id| m.get(id) == Some(&3)).then_some(()) }
    })
    .await;
    // Let the remaining decisions land.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = spans_by_trace(&tempo);
    let sent: BTreeSet<&String> = ids.values().flatten().collect();
    let unknown: Vec<&String> = got.keys().filter(|id| !sent.contains(id)).collect();
    assert!(unknown.is_empty(), "traces at Tempo that were never sent: {unknown:?}");
    let errors_whole = errors.iter().filter(|id| got.get(*id) == Some(&3)).count();
    let fast_kept = ids["fast"].iter().filter(|id| got.contains_key(*id)).count();
    let slow_kept = ids["slow"].iter().filter(|id| got.contains_key(*id)).count();
    let slow_whole = ids["slow"].iter().filter(|id| got.get(*id) == Some(&3)).count();
    let p = 0.3;
    let sigma = (n_slow as f64 * p * (1.0 - p)).sqrt();
    println!(
        "errors kept {errors_whole}/{n_error}; slow kept {slow_kept}/{n_slow} (expected {:.0} ± {:.0}); fast kept {fast_kept}/{n_fast}",
        n_slow as f64 * p,
        3.0 * sigma
    );
    assert_eq!(errors_whole, n_error, "every error trace kept, whole and once");
    assert_eq!(fast_kept, 0, "fast OK traces are dropped");
    assert_eq!(slow_whole, slow_kept, "kept slow traces arrive whole");
    assert!(
        (slow_kept as f64 - n_slow as f64 * p).abs() <= 3.0 * sigma,
        "slow traces kept at 30% within 3 sigma: {slow_kept}/{n_slow}"
    );
    assert!(tempo.state().exports.iter().all(|e| e.tenant.as_deref() == Some("remote04")));
    assert!(node.terminate(Duration::from_secs(30)).await.success());
    assert!(cluster.terminate(Duration::from_secs(30)).await.success());
}
