//! The agent binary with its Jaeger (agent UDP compact, collector HTTP) and Zipkin receivers on,
//! exporting to an OTLP receiver standing in for Tempo: the real OpenTelemetry Python exporters
//! send a known trace (pipeline/tests/clients/send_spans.py) and the spans that reach "Tempo"
//! carry the same ids, parents, names, times, status, service name and attributes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::otlp_receiver::OtlpReceiver;
use lgtm_integration::{eventually, free_port, require};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Whether `python` can import `module`; skips (fails under CI) when it cannot.
fn python_with(python: &Path, module: &str) -> bool {
    let ok = Command::new(python).args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success());
    require(module, ok.then_some(())).is_some()
}

fn send(python: &Path, mode: &str, port: u16) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/clients/send_spans.py");
    let out = Command::new(python)
        .arg(&script)
        .args([mode, "127.0.0.1", &port.to_string()])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run send_spans.py");
    assert!(out.status.success(), "send_spans.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("sent spans json")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// Spans at "Tempo" of one trace, with their resource attributes.
fn exported(tempo: &OtlpReceiver, trace: &str) -> Vec<(Vec<KeyValue>, Span)> {
    let mut out = Vec::new();
    for e in &tempo.state().exports {
        for rs in &e.request.resource_spans {
            let resource = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                if hex(&s.trace_id) == trace {
                    out.push((resource.clone(), s.clone()));
                }
            }
        }
    }
    out
}

fn check(sent: &[serde_json::Value], got: &[(Vec<KeyValue>, Span)], typed: bool) {
    assert_eq!(got.len(), sent.len());
    for want in sent {
        let name = want["name"].as_str().unwrap();
        let (resource, span) = got
            .iter()
            .find(|(_, s)| hex(&s.span_id) == want["span_id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{name} did not reach Tempo"));
        assert_eq!(span.name, name);
        assert_eq!(hex(&span.parent_span_id), want["parent_span_id"].as_str().unwrap(), "{name}: parent");
        let start = want["start"].as_u64().unwrap() / 1000 * 1000;
        assert!(span.start_time_unix_nano.abs_diff(start) <= 1000, "{name}: start");
        assert!(span.end_time_unix_nano > span.start_time_unix_nano, "{name}: end");
        let error = want["status"] == "ERROR";
        assert_eq!(span.status.as_ref().map(|s| s.code).unwrap_or(0), if error { 2 } else { 0 }, "{name}: status");
        if error {
            assert_eq!(span.status.as_ref().unwrap().message, want["status_description"].as_str().unwrap());
        }
        assert_eq!(attr(resource, "service.name"), Some(&Value::StringValue("tns-app".into())), "{name}: service");
        for (key, value) in want["attributes"].as_object().unwrap() {
            let expected = match value {
                serde_json::Value::String(s) => Value::StringValue(s.clone()),
                serde_json::Value::Bool(b) if typed => Value::BoolValue(*b),
                serde_json::Value::Number(n) if typed && n.is_i64() => Value::IntValue(n.as_i64().unwrap()),
                serde_json::Value::Number(n) if typed => Value::DoubleValue(n.as_f64().unwrap()),
                other => Value::StringValue(other.to_string()),
            };
            assert_eq!(attr(&span.attributes, key), Some(&expected), "{name}: attribute {key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_and_zipkin_exporters_reach_tempo_through_the_agent_unchanged() {
    let jaeger_python = std::env::var_os("LGTM_JAEGER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/lgtm-agent-jaeger-venv/bin/python"));
    if !python_with(&jaeger_python, "opentelemetry.exporter.jaeger.thrift")
        || !python_with(Path::new("python3"), "opentelemetry.exporter.zipkin.json")
    {
        return;
    }
    let tempo = OtlpReceiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (admin, compact, thrift_http, zipkin) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        "cluster: it-jaeger\ntenant: remote04\nmode: daemonset\ndata_dir: {data}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         logs: {{ enabled: false }}\n\
         scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  \
         tempo: {{ endpoint: \"{tempo}\", batch: {{ max_wait: 100ms }} }}\n\
         otlp:\n  grpc: \"\"\n  http: \"\"\n  zipkin: \"127.0.0.1:{zipkin}\"\n  jaeger:\n    \
         thrift_compact: \"127.0.0.1:{compact}\"\n    thrift_binary: \"\"\n    \
         thrift_http: \"127.0.0.1:{thrift_http}\"\n    grpc: \"\"\n",
        data = tmp.path().join("data").display(),
        tempo = tempo.endpoint(),
    );
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;

    for (python, mode, port, typed) in [
        (jaeger_python.clone(), "jaeger-agent", compact, true),
        (jaeger_python.clone(), "jaeger-collector", thrift_http, true),
        (PathBuf::from("python3"), "zipkin", zipkin, false),
    ] {
        let sent = tokio::task::spawn_blocking(move || send(&python, mode, port)).await.unwrap();
        let trace = sent[0]["trace_id"].as_str().unwrap().to_string();
        let got = eventually(Duration::from_secs(30), &format!("{mode} spans at Tempo"), || {
            let got = exported(&tempo, &trace);
            async move { (got.len() >= 3).then_some(got) }
        })
        .await;
        check(&sent, &got, typed);
        // Every request to Tempo carries the tenant.
        assert!(tempo.state().exports.iter().all(|e| e.tenant.as_deref() == Some("remote04")));
    }
    for (metric, filter) in [
        ("lgtm_agent_jaeger_received_total", "transport=\"thrift_compact\""),
        ("lgtm_agent_jaeger_received_total", "transport=\"thrift_http\""),
        ("lgtm_agent_zipkin_received_total", "format=\"json\""),
    ] {
        assert_eq!(agent.metric_sum(metric, &[filter]).await, 3.0, "{metric}{{{filter}}}: the three spans sent");
    }
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "agent exit: {status}");
}

/// UDP cannot say "later": when the queue toward Tempo is full, every datagram of a refused
/// request is dropped and counted one by one (the readers hand several waiting datagrams on as
/// one request, so counting requests would hide datagrams), and a malformed datagram is counted
/// on its own. Every datagram sent is taken (its spans counted), counted as refused, or dropped
/// by the kernel (`/proc/net/udp`), and the first refusal is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_udp_datagrams_refused_by_a_full_queue_are_each_counted() {
    use lgtm_pipeline::receiver::jaeger::encode::compact_emit_batch;

    const DATAGRAMS: u64 = 2_000;
    const SPANS: u64 = 10;
    let tmp = tempfile::tempdir().unwrap();
    let (admin, compact) = (free_port(), free_port());
    // Tempo on a port nobody listens on: the exporter retries, the 2 MiB memory-only queue fills.
    let config = format!(
        "cluster: it-jaeger-full\ntenant: remote04\nmode: daemonset\ndata_dir: {data}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         logs: {{ enabled: false }}\n\
         scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  \
         tempo: {{ endpoint: \"http://127.0.0.1:{closed}\", batch: {{ max_wait: 100ms }}, \
         queue: {{ max_memory: 2MiB, max_disk: 0 }} }}\n\
         otlp:\n  grpc: \"\"\n  http: \"\"\n  zipkin: \"\"\n  jaeger:\n    \
         thrift_compact: \"127.0.0.1:{compact}\"\n    thrift_binary: \"\"\n    thrift_http: \"\"\n    grpc: \"\"\n",
        data = tmp.path().join("data").display(),
        closed = free_port(),
    );
    let agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut malformed = 0;
    for seq in 0..DATAGRAMS {
        let datagram = compact_emit_batch(&lgtm_integration::bench_jaeger::batch(seq, SPANS as usize));
        socket.send_to(&datagram, ("127.0.0.1", compact)).unwrap();
        if seq % 50 == 49 {
            socket.send_to(b"not thrift at all", ("127.0.0.1", compact)).unwrap();
            malformed += 1;
        }
    }
    let transport = "transport=\"thrift_compact\"";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (received, refused, bad, drops) = loop {
        let received = agent.metric_sum("lgtm_agent_jaeger_received_total", &[transport]).await;
        let rejected = agent.metric_sum("lgtm_agent_jaeger_rejected_total", &[transport]).await;
        let bad = agent.metric_sum("lgtm_agent_jaeger_rejected_total", &[transport, "reason=\"malformed\""]).await;
        // The kernel's drops as the agent counted them (when a later datagram is read): the
        // socket's own count in /proc/net/udp is the reference.
        let seen_dropped =
            agent.metric_sum("lgtm_agent_jaeger_rejected_total", &[transport, "reason=\"kernel_dropped\""]).await;
        let drops = kernel_drops(compact) as f64;
        let accounted = received / SPANS as f64 + (rejected - seen_dropped) + drops;
        if accounted == (DATAGRAMS + malformed) as f64 || std::time::Instant::now() > deadline {
            assert!(seen_dropped <= drops, "the agent counted {seen_dropped} kernel drops of {drops}");
            break (received, rejected - bad - seen_dropped, bad, drops);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "[agent_jaeger] {DATAGRAMS} datagrams of {SPANS} spans and {malformed} malformed sent to a full queue: \
         {received} spans taken, {refused} datagrams refused, {bad} malformed, {drops} dropped by the kernel"
    );
    assert_eq!(received / SPANS as f64 + refused + bad + drops, (DATAGRAMS + malformed) as f64, "every datagram");
    assert!(received > 0.0 && refused > 0.0, "the 2 MiB queue took some and refused the rest");
    assert!(bad + drops >= malformed as f64 && bad <= malformed as f64, "malformed ones counted as such");
    assert!(agent.log().contains("Jaeger datagrams dropped"), "the refusal is logged");
}

/// Datagrams the kernel dropped on the UDP socket bound to `port` (`/proc/net/udp`, last column).
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .filter(|line| line.split_whitespace().nth(1).is_some_and(|addr| addr.ends_with(&local)))
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}
