//! Traces end to end with real clients: the OpenTelemetry Python SDK sends (directly, or through a
//! real `rotel-agent` in front) to a daemonset-mode agent, which routes by trace ID to two
//! cluster-mode agents, which tail-sample with the PoC's policies (errors kept, slow traces kept
//! at 30%) and export each to its own OTLP receiver, so a trace split across replicas shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::otlp_receiver::OtlpReceiver;
use lgtm_integration::peers::rotel::rotel_binary;
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

/// Daemonset-mode agent -> cluster-mode replicas -> one OTLP receiver ("Tempo") per replica.
struct Chain {
    tempos: Vec<OtlpReceiver>,
    replicas: Vec<AgentProcess>,
    /// Directory, config and admin port of each replica, to start it again.
    replica_setups: Vec<(std::path::PathBuf, String, u16)>,
    node: AgentProcess,
    node_grpc: u16,
    _tmp: tempfile::TempDir,
}

impl Chain {
    async fn start(replicas: usize, decision_wait: &str) -> Chain {
        let tmp = tempfile::tempdir().unwrap();
        let mut tempos = Vec::new();
        let mut agents = Vec::new();
        let mut members = Vec::new();
        let mut replica_setups = Vec::new();
        for r in 0..replicas {
            let tempo = OtlpReceiver::start().await;
            let dir = tmp.path().join(format!("cluster-{r}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (admin, grpc) = (free_port(), free_port());
            let cfg = format!(
                "{}mode: cluster\nexporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  \
                 tempo: {{ endpoint: \"{}\", batch: {{ max_wait: 100ms }} }}\n\
                 scrape: {{ monitors: {{ enabled: false }} }}\n\
                 otlp: {{ grpc: \"127.0.0.1:{grpc}\", http: \"\", zipkin: \"\", jaeger: {{ thrift_compact: \"\", thrift_binary: \"\", thrift_http: \"\", grpc: \"\" }} }}\n\
                 tail_sampling: {{ decision_wait: {decision_wait} }}\n",
                base(&dir.join("data"), admin),
                tempo.endpoint()
            );
            agents.push(AgentProcess::start(&dir, &cfg, admin).await);
            replica_setups.push((dir, cfg, admin));
            tempos.push(tempo);
            members.push(format!("127.0.0.1:{grpc}"));
        }
        let dir = tmp.path().join("node");
        std::fs::create_dir_all(&dir).unwrap();
        let (admin, node_grpc) = (free_port(), free_port());
        let cfg = format!(
            "{}mode: daemonset\nexporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  tempo: {{ console: true }}\n\
             scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
             otlp: {{ grpc: \"127.0.0.1:{node_grpc}\", http: \"\", forward_traces_to: \"{}\", zipkin: \"\", jaeger: {{ thrift_compact: \"\", thrift_binary: \"\", thrift_http: \"\", grpc: \"\" }} }}\n",
            base(&dir.join("data"), admin),
            members.join(",")
        );
        let node = AgentProcess::start(&dir, &cfg, admin).await;
        Chain { tempos, replicas: agents, replica_setups, node, node_grpc, _tmp: tmp }
    }

    /// Spans per trace ID (hex) at each replica's receiver.
    fn spans_by_trace(&self) -> Vec<BTreeMap<String, usize>> {
        self.tempos
            .iter()
            .map(|rx| {
                let mut m: BTreeMap<String, usize> = BTreeMap::new();
                for e in &rx.state().exports {
                    for s in e.request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
                        *m.entry(s.trace_id.iter().map(|b| format!("{b:02x}")).collect()).or_default() += 1;
                    }
                }
                m
            })
            .collect()
    }

    /// SIGTERM replica `r` (it decides what it buffered and flushes), then, once `while_down`
    /// returns, starts it again on the same address.
    async fn restart<F: std::future::Future<Output = ()>>(&mut self, r: usize, while_down: F) {
        assert!(self.replicas[r].terminate(Duration::from_secs(30)).await.success());
        while_down.await;
        let (dir, cfg, admin) = &self.replica_setups[r];
        self.replicas[r] = AgentProcess::start(dir, cfg, *admin).await;
    }

    async fn stop(mut self) {
        assert!(self.node.terminate(Duration::from_secs(30)).await.success());
        for r in &mut self.replicas {
            assert!(r.terminate(Duration::from_secs(30)).await.success());
        }
    }
}

const N_ERROR: usize = 50;
const N_SLOW: usize = 400;
const N_FAST: usize = 200;

/// `scripts/send_traces.py` to `endpoint`: the trace IDs it sent, by kind (`error`, `slow`,
/// `fast`); every trace is a root and two children of a second service.
fn send_traces(endpoint: &str) -> BTreeMap<String, Vec<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/send_traces.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(endpoint)
        .args([N_ERROR.to_string(), N_SLOW.to_string(), N_FAST.to_string()])
        .output()
        .expect("run send_traces.py");
    assert!(out.status.success(), "send_traces.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ids json")
}

/// What a user of the PoC's policies checks at Tempo: every error trace whole, slow traces at
/// 30% (within 3 sigma) and whole, fast ones absent, nothing that was not sent, no trace at two
/// replicas, the tenant on every export.
async fn assert_sampled_as_the_poc_says(chain: &Chain, ids: &BTreeMap<String, Vec<String>>) {
    let errors: BTreeSet<String> = ids["error"].iter().cloned().collect();
    let total = |per_replica: &[BTreeMap<String, usize>]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for (id, n) in per_replica.iter().flatten() {
            *m.entry(id.clone()).or_default() += n;
        }
        m
    };
    eventually(Duration::from_secs(60), "every error trace at Tempo", || {
        let m = total(&chain.spans_by_trace());
        let errors = errors.clone();
        async move { errors.iter().all(|id| m.get(id) == Some(&3)).then_some(()) }
    })
    .await;
    // Let the remaining decisions land.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let per_replica = chain.spans_by_trace();
    let got = total(&per_replica);
    let sent: BTreeSet<&String> = ids.values().flatten().collect();
    let unknown: Vec<&String> = got.keys().filter(|id| !sent.contains(id)).collect();
    assert!(unknown.is_empty(), "traces at Tempo that were never sent: {unknown:?}");
    let split: Vec<&String> =
        got.keys().filter(|id| per_replica.iter().filter(|m| m.contains_key(*id)).count() > 1).collect();
    assert!(split.is_empty(), "traces exported by more than one replica: {split:?}");
    let errors_at: Vec<usize> =
        per_replica.iter().map(|m| errors.iter().filter(|id| m.contains_key(*id)).count()).collect();
    assert!(errors_at.iter().all(|&n| n > 0), "both replicas own some error traces: {errors_at:?}");
    let errors_whole = errors.iter().filter(|id| got.get(*id) == Some(&3)).count();
    let fast_kept = ids["fast"].iter().filter(|id| got.contains_key(*id)).count();
    let slow_kept = ids["slow"].iter().filter(|id| got.contains_key(*id)).count();
    let slow_whole = ids["slow"].iter().filter(|id| got.get(*id) == Some(&3)).count();
    let p = 0.3;
    let sigma = (N_SLOW as f64 * p * (1.0 - p)).sqrt();
    println!(
        "errors kept {errors_whole}/{N_ERROR} (per replica {errors_at:?}); slow kept {slow_kept}/{N_SLOW} \
         (expected {:.0} ± {:.0}); fast kept {fast_kept}/{N_FAST}",
        N_SLOW as f64 * p,
        3.0 * sigma
    );
    assert_eq!(errors_whole, N_ERROR, "every error trace kept, whole and once");
    assert_eq!(fast_kept, 0, "fast OK traces are dropped");
    assert_eq!(slow_whole, slow_kept, "kept slow traces arrive whole");
    assert!(
        (slow_kept as f64 - N_SLOW as f64 * p).abs() <= 3.0 * sigma,
        "slow traces kept at 30% within 3 sigma: {slow_kept}/{N_SLOW}"
    );
    for tempo in &chain.tempos {
        assert!(tempo.state().exports.iter().all(|e| e.tenant.as_deref() == Some("remote04")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_to_daemonset_to_cluster_mode_tail_sampling_to_tempo() {
    if !python_sdk_available() {
        return;
    }
    let chain = Chain::start(2, "2s").await;
    let ids = send_traces(&format!("127.0.0.1:{}", chain.node_grpc));
    assert_sampled_as_the_poc_says(&chain, &ids).await;
    chain.stop().await;
}

/// A `rotel-agent` receiving OTLP/gRPC and exporting it (gzip, batched) to `endpoint`; killed
/// when dropped.
struct RotelSender {
    child: Child,
    grpc_port: u16,
    _dir: tempfile::TempDir,
}

impl RotelSender {
    async fn start(bin: &Path, endpoint: &str) -> RotelSender {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rotel.log");
        let out = std::fs::File::create(&log).unwrap();
        let (grpc_port, http_port) = (free_port(), free_port());
        let child = Command::new(bin)
            .args(["start", "--exporter", "otlp", "--otlp-exporter-endpoint", endpoint])
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http_port}"))
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn rotel-agent");
        let r = RotelSender { child, grpc_port, _dir: dir };
        eventually(Duration::from_secs(20), "rotel-agent listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", grpc_port)).await.ok().map(|_| ())
        })
        .await;
        r
    }
}

impl Drop for RotelSender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_through_rotel_agent_to_daemonset_to_cluster_mode_tail_sampling_to_tempo() {
    if !python_sdk_available() {
        return;
    }
    let Some(rotel_bin) = require("rotel-agent (pip rotel)", rotel_binary()) else { return };
    let chain = Chain::start(2, "2s").await;
    let rotel = RotelSender::start(&rotel_bin, &format!("http://127.0.0.1:{}", chain.node_grpc)).await;
    let ids = send_traces(&format!("127.0.0.1:{}", rotel.grpc_port));
    assert_sampled_as_the_poc_says(&chain, &ids).await;
    drop(rotel);
    chain.stop().await;
}

/// A rolling restart of one cluster-mode replica while traces are in flight: traces the replica
/// had whole when it stopped are decided at shutdown, so none is lost; traces whose spans straddle
/// the restart (inside `decision_wait` when it stopped, more spans after) are decided twice on
/// halves, so an error trace whose error span came after the restart loses its first half. The
/// test counts those and asserts that nothing else is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restart_loses_only_traces_straddling_it_inside_decision_wait() {
    use lgtm_integration::bench_traces::{load, wire};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    // decision_wait longer than the restart, so only the restarted replica decides on halves.
    let mut chain = Chain::start(2, "10s").await;
    let node: std::net::SocketAddr = ([127, 0, 0, 1], chain.node_grpc).into();
    let sender = wire::Sender::connect(node).await.unwrap();
    // 4 spans per trace: the frontend's root and the cart's span (the first two resources of a
    // request), then two database calls, the last one failing in error traces.
    let whole = load::generate(600, 4, 400, 1);
    let straddling = load::generate(600, 4, 400, 2);
    let (mut first_halves, mut second_halves) = (Vec::new(), Vec::new());
    for encoded in &straddling.requests {
        let mut first = ExportTraceServiceRequest::decode(encoded.clone()).unwrap();
        let second = ExportTraceServiceRequest { resource_spans: first.resource_spans.split_off(2) };
        first_halves.push(bytes::Bytes::from(first.encode_to_vec()));
        second_halves.push(bytes::Bytes::from(second.encode_to_vec()));
    }
    sender.send_all(&whole.requests, 2).await.unwrap();
    sender.send_all(&first_halves, 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The second halves are sent while replica 0 is down: the daemonset agent holds and retries
    // what is for it.
    chain
        .restart(0, async {
            sender.send_all(&second_halves, 2).await.unwrap();
        })
        .await;

    let kind = |id: &String| load::Kind::of_tag(u8::from_str_radix(&id[..2], 16).unwrap()).unwrap();
    let error_traces = |l: &load::Load| l.traces_by_kind[load::Kind::Error.index()] as usize;
    let expected_errors = error_traces(&whole) + error_traces(&straddling);
    let at_tempo = eventually(Duration::from_secs(60), "every error trace at Tempo, whole or not", || {
        let per_replica = chain.spans_by_trace();
        async move {
            let errors: Vec<(usize, String, usize)> = per_replica
                .iter()
                .enumerate()
                .flat_map(|(r, m)| m.iter().map(move |(id, n)| (r, id.clone(), *n)))
                .filter(|(_, id, _)| kind(id) == load::Kind::Error)
                .collect();
            (errors.len() >= expected_errors).then_some(errors)
        }
    })
    .await;
    let straddling_ids: BTreeSet<String> = straddling
        .requests
        .iter()
        .flat_map(|r| ExportTraceServiceRequest::decode(r.clone()).unwrap().resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let broken: Vec<&(usize, String, usize)> = at_tempo.iter().filter(|(_, _, n)| *n != 4).collect();
    let straddling_at_0 = at_tempo.iter().filter(|(r, id, _)| *r == 0 && straddling_ids.contains(id)).count();
    println!(
        "error traces: {} sent, {} at Tempo, {} not whole (of {straddling_at_0} straddling the restart of replica 0)",
        expected_errors,
        at_tempo.len(),
        broken.len()
    );
    assert_eq!(at_tempo.len(), expected_errors, "every error trace reaches Tempo, at one replica");
    for (r, id, n) in &broken {
        assert!(
            *r == 0 && straddling_ids.contains(id),
            "trace {id} ({n} spans at replica {r}) lost spans but did not straddle the restart"
        );
    }
    chain.stop().await;
}
