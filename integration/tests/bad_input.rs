//! Bad input against the real `lgtm-agent` binary: each case is answered with a clear error or a
//! counted skip, never a crash, and the agent's memory stays bounded (VmHWM from
//! `/proc/<pid>/status`). Every case prints what was sent, what arrived and what was lost.
//!
//! Cases: malformed configs (the error names file, line and field; exit code 2), a 50 MiB log
//! line, binary garbage and invalid UTF-8 in logs, scrape targets with a 200 MiB body, a
//! slow-drip body, invalid gzip and 100,000 labels on one series, and OTLP requests that are
//! oversized, truncated, nested 10,000 deep or not JSON.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::peers::prometheus::Prometheus;
use lgtm_integration::procstat::Process;
use lgtm_integration::{eventually, free_port, require};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

const MIB: u64 = 1024 * 1024;

/// A small deterministic generator (xorshift64*), so every run sends the same garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
}

fn report(case: &str, sent: &str, arrived: &str, lost: &str) {
    println!("[bad_input] {case}\n    sent:    {sent}\n    arrived: {arrived}\n    lost:    {lost}");
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn malformed_configs_are_refused_with_file_line_and_field_and_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    // (what is wrong, the file, the expected `file:line: field` prefix of the message)
    let cases: &[(&str, &str, &str)] = &[
        ("unknown field", "cluster: c\nlogs:\n  enabled: true\n  bogus_field: 1\n", ":4: logs.bogus_field: "),
        ("bad duration", "exporters:\n  loki:\n    batch: { max_wait: 5 parsecs }\n", ":3: exporters.loki.batch.max_wait: "),
        ("bad size", "otlp:\n  max_request_size: 12 apples\n", ":2: otlp.max_request_size: "),
        ("wrong type", "cluster: c\nscrape:\n  interval: [1, 2]\n", ":3: scrape.interval: "),
        ("zero interval", "scrape:\n  interval: 0s\n", ":2: scrape.interval: "),
        ("bad enum", "mode: sideways\n", ":1: mode: "),
        ("unset variable", "cluster: c\ntenant: ${LGTM_IT_SURELY_UNSET}\n", ":2: tenant: "),
        ("bad url", "exporters:\n  mimir:\n    url: \"not a url\"\n", ":3: exporters.mimir.url: "),
        (
            "bad regex",
            "scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        - { action: replace, regex: \"(\", target_label: x }\n",
            ":5: scrape.static_configs[0].relabel_configs[0].regex: ",
        ),
        ("not yaml", "cluster: c\nlogs: {enabled: true\n", ":"),
        ("binary garbage", "\u{1}\u{2}cluster\u{0}: [\n\u{7f}", ":"),
    ];
    let mut refused = 0;
    for (what, text, want) in cases {
        let file = tmp.path().join("agent.yaml");
        std::fs::write(&file, text).unwrap();
        for sub in ["validate", "run"] {
            let out = Command::new(agent_binary())
                .args([sub, "--config"])
                .arg(&file)
                .env_remove("LGTM_IT_SURELY_UNSET")
                .output()
                .expect("run lgtm-agent");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} ({sub}): exit code 2 expected; stderr:\n{stderr}");
            let expected = format!("{}{want}", file.display());
            assert!(
                stderr.contains(&expected),
                "{what} ({sub}): the error must start with {expected:?}; got:\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{what} ({sub}): {stderr}");
            if sub == "validate" {
                println!("    {what:15} -> {}", stderr.lines().find(|l| l.contains("agent.yaml")).unwrap_or(""));
            }
            refused += 1;
        }
    }
    report(
        "malformed configs",
        &format!("{} broken files, each to `validate` and to `run`", cases.len()),
        &format!("{refused} refusals with exit code 2, each naming file:line: field"),
        "nothing (no panic, no start)",
    );
}

// ---------------------------------------------------------------------------------------------
// Logs

fn logs_config(data: &Path, pods: &Path, loki_url: &str, admin: u16) -> String {
    AgentConfig::new("it-bad", data, admin)
        .set("node_name", "node-a")
        .loki(loki_url, Backoff("50ms", "500ms"))
        .set("exporters.loki.queue.max_memory", "8MiB")
        .logs_from(pods)
        .yaml()
}

fn log_file(pods: &Path, pod: &str) -> std::fs::File {
    let dir = pods.join(format!("shop_{pod}_0000-{pod}")).join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap()
}

/// Every entry of the fake Loki as (line, `part` metadata or 0).
fn entries_with_part(loki: &FakeLoki) -> Vec<(String, u32)> {
    let st = loki.state();
    st.pushes
        .iter()
        .flat_map(|p| &p.streams)
        .flat_map(|s| &s.entries)
        .map(|e| {
            let part =
                e.structured_metadata.iter().find(|m| m.name == "part").and_then(|m| m.value.parse().ok()).unwrap_or(0);
            (e.line.clone(), part)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_log_line_arrives_whole_in_parts_with_bounded_memory() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let mut f = log_file(&pods, "big");
    f.write_all(b"2026-11-25T08:00:00.000000001Z stdout F before the long line\n").unwrap();
    let admin = free_port();
    let agent =
        AgentProcess::start(tmp.path(), &logs_config(&tmp.path().join("data"), &pods, &loki.push_url(), admin), admin)
            .await;
    eventually(Duration::from_secs(20), "the first line", || async { (loki.total_entries() == 1).then_some(()) }).await;
    let base = Process::Pid(agent.pid()).peak_rss_bytes();

    let size = 50 * MIB as usize;
    let mut payload = String::with_capacity(size + 16);
    let mut k = 0u64;
    while payload.len() < size {
        payload.push_str(&format!("{k:015}|"));
        k += 1;
    }
    payload.truncate(size);
    f.write_all(b"2026-11-25T08:00:01.000000001Z stdout F ").unwrap();
    f.write_all(payload.as_bytes()).unwrap();
    f.write_all(b"\n2026-11-25T08:00:02.000000001Z stdout F after the long line\n").unwrap();
    drop(f);

    let started = std::time::Instant::now();
    eventually(Duration::from_secs(60), "the line after the long one", || {
        let arrived = loki
            .state()
            .pushes
            .iter()
            .flat_map(|p| &p.streams)
            .flat_map(|s| &s.entries)
            .any(|e| e.line == "after the long line");
        async move { arrived.then_some(()) }
    })
    .await;
    let elapsed = started.elapsed();
    let entries = entries_with_part(&loki);
    let parts: Vec<&(String, u32)> = entries.iter().filter(|(_, p)| *p > 0).collect();
    let numbers: Vec<u32> = parts.iter().map(|(_, p)| *p).collect();
    assert_eq!(numbers, (1..=parts.len() as u32).collect::<Vec<_>>(), "parts numbered 1.. in order");
    let joined: usize = parts.iter().map(|(l, _)| l.len()).sum();
    assert!(parts.iter().all(|(l, _)| l.len() <= 256 * 1024), "no part over max_line_size");
    let whole = parts.iter().map(|(l, _)| l.as_str()).collect::<String>() == payload;
    let peak = Process::Pid(agent.pid()).peak_rss_bytes();
    let split = agent.metric_sum("lgtm_agent_logs_lines_split_total", &[]).await;
    report(
        "50 MiB log line (max_line_size 256KB, Loki queue max_memory 8MiB)",
        &format!("1 line of {} bytes between two short lines", payload.len()),
        &format!(
            "{} parts of <= 256 KB, {joined} bytes, identical when joined: {whole}; split_total {split}; in {elapsed:.1?}",
            parts.len()
        ),
        &format!("{} bytes", payload.len() - joined.min(payload.len())),
    );
    println!("    agent VmHWM: {} MiB before, {} MiB after", base / MIB, peak / MIB);
    assert!(whole, "the parts joined give the line back");
    // Parts of at most `logs.max_line_size`, 256KB by default (Loki's `max_line_size`).
    assert_eq!(parts.len(), (50 * MIB as usize).div_ceil(256_000));
    assert_eq!(entries.len(), parts.len() + 2, "two short lines and the parts, nothing twice");
    assert_eq!(split, 1.0);
    assert!(peak < base + 96 * MIB, "peak RSS grew by {} MiB for a 50 MiB line", (peak - base) / MIB);
    assert_eq!(loki.state().malformed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_and_invalid_utf8_are_shipped_replaced_and_counted() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let mut f = log_file(&pods, "garbage");
    let mut rng = Rng(0x005e_ed0f_bad1);
    // (the message bytes as written, whether it is a well-formed CRI line)
    let mut written: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut file = Vec::new();
    file.extend_from_slice(b"2026-11-25T08:00:00.000000001Z stdout F first line, valid\n");
    written.push((b"first line, valid".to_vec(), true));
    for i in 0..100u32 {
        match i % 4 {
            // Binary garbage: not a CRI line at all (shipped raw, counted as a parse error).
            0 | 1 => {
                let mut g: Vec<u8> = rng.bytes(200).into_iter().map(|b| if b == b'\n' { 0 } else { b }).collect();
                g[0] = 0xff;
                file.extend_from_slice(&g);
                written.push((g, false));
            }
            // A CRI line whose message is not UTF-8.
            2 => {
                let mut m = format!("bad utf8 {i} ").into_bytes();
                m.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc, 0x00, 0x7f]);
                file.extend_from_slice(b"2026-11-25T08:00:01.000000001Z stderr F ");
                file.extend_from_slice(&m);
                written.push((m, true));
            }
            _ => {
                let m = format!("good line {i} é ü 漢字").into_bytes();
                file.extend_from_slice(b"2026-11-25T08:00:02.000000001Z stdout F ");
                file.extend_from_slice(&m);
                written.push((m, true));
            }
        }
        file.push(b'\n');
    }
    file.extend_from_slice(b"2026-11-25T08:00:03.000000001Z stdout F last line, valid\n");
    written.push((b"last line, valid".to_vec(), true));
    f.write_all(&file).unwrap();
    drop(f);

    let admin = free_port();
    let agent =
        AgentProcess::start(tmp.path(), &logs_config(&tmp.path().join("data"), &pods, &loki.push_url(), admin), admin)
            .await;
    let n = written.len();
    eventually(Duration::from_secs(30), "every line", || {
        let l = &loki;
        async move { (l.total_entries() >= n).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<String> = loki.lines_by_stream().into_values().flatten().collect();
    let expected: Vec<String> = written.iter().map(|(m, _)| String::from_utf8_lossy(m).into_owned()).collect();
    let invalid = written.iter().filter(|(m, _)| std::str::from_utf8(m).is_err()).count();
    let garbage = written.iter().filter(|(_, cri)| !cri).count();
    let counted_utf8 = agent.metric_sum("lgtm_agent_logs_invalid_utf8_total", &[]).await;
    let counted_parse = agent.metric_sum("lgtm_agent_logs_parse_errors_total", &[]).await;
    let mut missing = expected.clone();
    for g in &got {
        if let Some(i) = missing.iter().position(|e| e == g) {
            missing.swap_remove(i);
        }
    }
    report(
        "binary garbage and invalid UTF-8 in a CRI file",
        &format!("{n} lines: {garbage} of random bytes, {invalid} with invalid UTF-8 in all"),
        &format!(
            "{} entries, U+FFFD in {}; invalid_utf8_total {counted_utf8}, parse_errors_total {counted_parse}; \
             {} refused by Loki as malformed",
            got.len(),
            got.iter().filter(|l| l.contains('\u{fffd}')).count(),
            loki.state().malformed
        ),
        &format!("{} lines", missing.len()),
    );
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert_eq!(got.len(), n, "nothing twice");
    assert_eq!(counted_utf8, invalid as f64, "every line with invalid UTF-8 counted once");
    assert_eq!(counted_parse, garbage as f64, "every garbage line counted as a parse error");
    assert_eq!(loki.state().malformed, 0, "Loki only ever got valid UTF-8");
}

// ---------------------------------------------------------------------------------------------
// Scrape

/// Bytes the `/huge` target wrote, over all scrapes.
#[derive(Default)]
struct Served {
    huge_bytes: AtomicU64,
    huge_scrapes: AtomicU64,
    drip_scrapes: AtomicU64,
}

const HUGE_BODY: u64 = 200 * MIB;

/// 200 MiB of valid text format, produced 64 KiB at a time and never held whole.
async fn huge(axum::extract::State(served): axum::extract::State<Arc<Served>>) -> Response {
    served.huge_scrapes.fetch_add(1, Ordering::Relaxed);
    let mut chunk = String::with_capacity(64 * 1024);
    let mut i = 0;
    while chunk.len() < 64 * 1024 - 64 {
        chunk.push_str(&format!("huge_series{{i=\"{i:08}\"}} 1\n"));
        i += 1;
    }
    let chunk = Bytes::from(chunk);
    let stream = futures::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        let served = served.clone();
        async move {
            if sent >= HUGE_BODY {
                return None;
            }
            served.huge_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, Infallible>(chunk.clone()), sent + chunk.len() as u64))
        }
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from_stream(stream)).into_response()
}

/// One line every 300 ms: never finishes within the scrape timeout.
async fn drip(axum::extract::State(served): axum::extract::State<Arc<Served>>) -> Response {
    served.drip_scrapes.fetch_add(1, Ordering::Relaxed);
    let stream = futures::stream::unfold(0u32, |i| async move {
        if i >= 100 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((Ok::<_, Infallible>(Bytes::from(format!("drip_series{{i=\"{i}\"}} 1\n"))), i + 1))
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from_stream(stream)).into_response()
}

/// `Content-Encoding: gzip` over a gzip header followed by garbage.
async fn bad_gzip() -> Response {
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
    body.extend(Rng(7).bytes(4096));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4"), (header::CONTENT_ENCODING, "gzip")], body).into_response()
}

fn many_labels_body() -> String {
    let mut s = String::from("many_labels{");
    for i in 0..100_000 {
        s.push_str(&format!("l{i:06}=\"v\","));
    }
    s.push_str("} 1\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_bodies_huge_slow_not_gzip_or_with_100k_labels_fail_cleanly_with_bounded_memory() {
    let Some(prom) = require("prometheus", Prometheus::start().await) else { return };
    let served = Arc::new(Served::default());
    let labels_body = many_labels_body();
    let app = Router::new()
        .route("/huge", get(huge))
        .route("/drip", get(drip))
        .route("/badgzip", get(bad_gzip))
        .route(
            "/labels",
            get(move || {
                let b = labels_body.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], b) }
            }),
        )
        .route("/ok", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], "ok_series 1\n") }))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let jobs = ["huge", "drip", "badgzip", "labels", "ok"];
    let static_configs: serde_json::Value = jobs
        .iter()
        .map(|job| json!({ "targets": [target], "labels": { "job": job }, "metrics_path": format!("/{job}") }))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = AgentConfig::new("it-bad", &tmp.path().join("data"), admin)
        .mimir(&prom.write_url(), Backoff("100ms", "1s"))
        .scrape("2s", "1500ms", static_configs)
        .set("scrape.body_size_limit", "16MiB")
        .yaml();
    let agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let base = Process::Pid(agent.pid()).peak_rss_bytes();
    let up = eventually(Duration::from_secs(30), "up of every job", || {
        let p = &prom;
        async move {
            let r = p.query("up").await;
            let by_job: BTreeMap<String, f64> =
                r.iter().map(|s| (s.labels.get("job").cloned().unwrap_or_default(), s.value)).collect();
            (by_job.len() == jobs.len()).then_some(by_job)
        }
    })
    .await;
    // A few more rounds: memory must not creep up scrape after scrape.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let peak = Process::Pid(agent.pid()).peak_rss_bytes();
    let up_later: BTreeMap<String, f64> =
        prom.query("up").await.iter().map(|s| (s.labels.get("job").cloned().unwrap_or_default(), s.value)).collect();
    let many = prom.query("count({__name__=\"many_labels\"})").await;
    let many_stored = many.first().map_or(0.0, |s| s.value);
    let ok_series = prom.query("ok_series").await;
    let scrapes = served.huge_scrapes.load(Ordering::Relaxed).max(1);
    let huge_read = served.huge_bytes.load(Ordering::Relaxed) / scrapes;
    report(
        "scrape: 200 MiB body (body_size_limit 16MiB)",
        &format!("{scrapes} scrapes offered {} MiB each", HUGE_BODY / MIB),
        &format!("up={}, about {} MiB written per scrape before the agent hung up", up_later["huge"], huge_read / MIB),
        "the body (refused as a whole, as Prometheus does)",
    );
    report(
        "scrape: slow drip (one line every 300 ms, timeout 1500ms)",
        &format!("{} scrapes", served.drip_scrapes.load(Ordering::Relaxed)),
        &format!("up={}", up_later["drip"]),
        "the body (timed out)",
    );
    report(
        "scrape: invalid gzip",
        "Content-Encoding: gzip over garbage",
        &format!("up={}", up_later["badgzip"]),
        "the body",
    );
    report(
        "scrape: one series with 100,000 labels",
        &format!("{} bytes", many_labels_body().len()),
        &format!("up={}, series stored by Prometheus: {many_stored}", up_later["labels"]),
        if many_stored == 1.0 { "nothing" } else { "the series (refused downstream or by a label limit)" },
    );
    println!("    agent VmHWM: {} MiB at start, {} MiB after {} s of bad targets", base / MIB, peak / MIB, 6);
    assert_eq!(up["huge"], 0.0);
    assert_eq!(up_later["huge"], 0.0, "a body over the limit fails the scrape");
    assert_eq!(up_later["drip"], 0.0, "a body slower than the timeout fails the scrape");
    assert_eq!(up_later["badgzip"], 0.0, "a body that is not gzip fails the scrape");
    assert_eq!(up_later["ok"], 1.0, "other targets are unaffected");
    assert_eq!(ok_series.len(), 1);
    assert!(huge_read < 64 * MIB, "the agent stops reading at the limit, read {} MiB", huge_read / MIB);
    assert!(peak < base + 160 * MIB, "peak RSS grew by {} MiB", (peak - base) / MIB);
    let healthy = reqwest::get(format!("http://127.0.0.1:{admin}/healthz")).await.map(|r| r.status().is_success());
    assert!(matches!(healthy, Ok(true)), "agent still healthy");
}

// ---------------------------------------------------------------------------------------------
// OTLP

/// Protobuf of `ExportLogsServiceRequest` with one record whose body is a kvlist nested `depth`
/// deep, encoded by hand from the inside out (a nested struct that deep would overflow the stack of
/// this very test when encoded or dropped).
fn deeply_nested_logs_request(depth: usize) -> Vec<u8> {
    fn varint(mut v: usize, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn varint_len(v: usize) -> usize {
        let mut out = Vec::new();
        varint(v, &mut out);
        out.len()
    }
    // The innermost AnyValue { string_value: "x" }; `len` is the length of what is built so far.
    let core = [0x0a, 0x01, b'x'];
    let mut len = core.len();
    // Prefixes, innermost first; every nested message is the last field of its parent, so the
    // message is the prefixes from the outermost in, then the core.
    let mut heads: Vec<Vec<u8>> = Vec::with_capacity(depth + 4);
    for _ in 0..depth {
        // AnyValue { kvlist_value (6): KeyValueList { values (1): KeyValue { key (1): "k", value (2): <len> } } }
        let kv_len = 3 + 1 + varint_len(len) + len;
        let list_len = 1 + varint_len(kv_len) + kv_len;
        let mut h = vec![(6 << 3) | 2];
        varint(list_len, &mut h);
        h.push((1 << 3) | 2);
        varint(kv_len, &mut h);
        h.extend_from_slice(&[(1 << 3) | 2, 0x01, b'k', (2 << 3) | 2]);
        varint(len, &mut h);
        len += h.len();
        heads.push(h);
    }
    // LogRecord { body (5) } in ScopeLogs { log_records (2) } in ResourceLogs { scope_logs (2) }
    // in ExportLogsServiceRequest { resource_logs (1) }.
    for field in [5u8, 2, 2, 1] {
        let mut h = vec![(field << 3) | 2];
        varint(len, &mut h);
        len += h.len();
        heads.push(h);
    }
    let mut out = Vec::with_capacity(len);
    for h in heads.iter().rev() {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&core);
    assert_eq!(out.len(), len);
    out
}

fn deeply_nested_logs_json(depth: usize) -> String {
    let mut s = String::from(r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"#);
    for _ in 0..depth {
        s.push_str(r#"{"kvlistValue":{"values":[{"key":"k","value":"#);
    }
    s.push_str(r#"{"stringValue":"x"}"#);
    for _ in 0..depth {
        s.push_str("}]}}");
    }
    s.push_str("}]}]}]}");
    s
}

fn traces_request(spans: usize, attr_bytes: usize) -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: vec![1; 16],
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: format!("span-{i}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes: vec![KeyValue {
            key: "payload".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("p".repeat(attr_bytes))) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: (0..spans).map(span).collect(), ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A gRPC unary call with a raw message (so that broken messages can be sent); the status is
/// read from the headers of a trailers-only answer (refusals), else taken as OK.
async fn grpc_raw(client: &reqwest::Client, addr: &str, method: &str, message: &[u8]) -> (i64, String) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let resp = client
        .post(format!("http://{addr}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(framed)
        .send()
        .await
        .expect("gRPC call");
    let code =
        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let message = resp.headers().get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
    (code, percent_decoded(message))
}

/// `grpc-message` is percent-encoded.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_requests_oversized_truncated_nested_10000_deep_or_not_json_are_refused_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (admin, grpc_port, http_port) = (free_port(), free_port(), free_port());
    let config = AgentConfig::new("it-bad", &tmp.path().join("data"), admin)
        .set("otlp", json!({ "grpc": format!("127.0.0.1:{grpc_port}"), "http": format!("127.0.0.1:{http_port}"), "max_request_size": "1MiB",
            "zipkin": "", "jaeger": { "thrift_compact": "", "thrift_binary": "", "thrift_http": "", "grpc": "" } }))
        .yaml();
    let agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let base = Process::Pid(agent.pid()).peak_rss_bytes();
    // A connection per request: after a 413 the agent closes the connection without reading the
    // rest of the body, and a pooled connection would race with that close.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let url = |signal: &str| format!("http://127.0.0.1:{http_port}/v1/{signal}");
    let post = |signal: &'static str, ct: &'static str, body: Vec<u8>, gzip: bool| {
        let mut req = http.post(url(signal)).header("content-type", ct).body(body);
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        async move {
            match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    println!("    request failed: {e:?}");
                    0
                }
            }
        }
    };
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    const PB: &str = "application/x-protobuf";
    const JSON: &str = "application/json";
    const TRACES: &str = "opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const LOGS: &str = "opentelemetry.proto.collector.logs.v1.LogsService/Export";

    let valid = traces_request(3, 10).encode_to_vec();
    let big = traces_request(20, 100 * 1024).encode_to_vec(); // 2 MiB
    let bomb = gzip(&vec![b'{'; 64 * MIB as usize]); // 64 KiB that inflate to 64 MiB
    let mut truncated = traces_request(50, 100).encode_to_vec();
    truncated.truncate(truncated.len() / 2 + 3);
    let deep_pb = deeply_nested_logs_request(10_000);
    let deep_json = deeply_nested_logs_json(10_000);

    // (case, what the agent answered, what it should answer)
    let mut results: Vec<(String, String, String)> = Vec::new();
    let mut check_http = |case: &str, got: u16, want: u16| {
        results.push((case.to_string(), format!("HTTP {got}"), format!("HTTP {want}")));
    };
    check_http("HTTP valid protobuf (control)", post("traces", PB, valid.clone(), false).await, 200);
    check_http(
        &format!("HTTP oversized protobuf ({} KiB)", big.len() / 1024),
        post("traces", PB, big.clone(), false).await,
        413,
    );
    check_http(
        &format!("HTTP gzip bomb ({} KiB -> 64 MiB)", bomb.len() / 1024),
        post("traces", JSON, bomb.clone(), true).await,
        413,
    );
    check_http("HTTP truncated protobuf", post("traces", PB, truncated.clone(), false).await, 400);
    check_http("HTTP invalid gzip", post("traces", PB, vec![0x1f, 0x8b, 8, 0, 1, 2, 3], true).await, 400);
    check_http("HTTP kvlist 10,000 deep (protobuf)", post("logs", PB, deep_pb.clone(), false).await, 400);
    check_http("HTTP kvlist 10,000 deep (JSON)", post("logs", JSON, deep_json.clone().into_bytes(), false).await, 400);
    check_http(
        "HTTP invalid JSON",
        post("traces", JSON, br#"{"resourceSpans": [ {"scopeSpans": "#.to_vec(), false).await,
        400,
    );
    check_http(
        "HTTP JSON of the wrong shape",
        post("metrics", JSON, br#"{"resourceMetrics": 42}"#.to_vec(), false).await,
        400,
    );
    check_http("HTTP binary garbage as JSON", post("logs", JSON, Rng(3).bytes(10_000), false).await, 400);

    let mut check_grpc = |case: &str, (code, message): (i64, String), want: &[i64]| {
        let short: String = message.chars().take(70).collect();
        results.push((case.to_string(), format!("gRPC {code} {short}"), format!("gRPC {want:?}")));
    };
    check_grpc("gRPC valid (control)", grpc_raw(&h2, &grpc_addr, TRACES, &valid).await, &[0]);
    // RESOURCE_EXHAUSTED (8) is what gRPC itself answers for a message over the maximum.
    check_grpc(
        &format!("gRPC oversized ({} KiB)", big.len() / 1024),
        grpc_raw(&h2, &grpc_addr, TRACES, &big).await,
        &[8],
    );
    check_grpc("gRPC truncated protobuf", grpc_raw(&h2, &grpc_addr, TRACES, &truncated).await, &[3]);
    check_grpc("gRPC kvlist 10,000 deep", grpc_raw(&h2, &grpc_addr, LOGS, &deep_pb).await, &[3]);
    check_grpc("gRPC binary garbage", grpc_raw(&h2, &grpc_addr, LOGS, &Rng(4).bytes(10_000)).await, &[3]);

    let alive = reqwest::get(format!("http://127.0.0.1:{admin}/healthz")).await.map(|r| r.status().as_u16());
    let rejected = agent.metric_sum("lgtm_agent_otlp_rejected_total", &[]).await;
    let received = agent.metric_sum("lgtm_agent_otlp_received_total", &[]).await;
    let peak = Process::Pid(agent.pid()).peak_rss_bytes();
    println!("[bad_input] OTLP receivers (max_request_size 1MiB)");
    for (case, got, want) in &results {
        println!("    {case:42} answered {got:90} expected {want}");
    }
    report(
        "OTLP bad requests",
        &format!("{} requests, 2 of them valid", results.len()),
        &format!("rejected_total {rejected}, received_total {received} spans; /healthz {alive:?}"),
        "the refused requests (the clients were told why)",
    );
    println!("    agent VmHWM: {} MiB at start, {} MiB after", base / MIB, peak / MIB);
    assert_eq!(alive.ok(), Some(200), "the agent survived; log:\n{}", agent.log());
    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, got, want)| {
            if let Some(w) = want.strip_prefix("HTTP ") {
                got != &format!("HTTP {w}")
            } else {
                let code = got.split(' ').nth(1).unwrap_or("");
                !want.contains(&format!("[{code}]"))
            }
        })
        .collect();
    assert!(wrong.is_empty(), "unexpected answers: {wrong:#?}");
    assert_eq!(rejected, (results.len() - 2) as f64, "every refusal counted");
    assert_eq!(received, 6.0, "the two valid requests' spans were taken");
    assert!(peak < base + 200 * MIB, "peak RSS grew by {} MiB", (peak - base) / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_with_an_invalid_regex_is_reported_and_the_others_are_scraped() {
    use lgtm_integration::fake_apiserver::FakeApiServer;
    use lgtm_integration::fake_target::FakeTarget;

    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let good = FakeTarget::start("good_metric 1\n").await;
    let bad = FakeTarget::start("bad_metric 1\n").await;
    for (app, t) in [("good", &good), ("bad", &bad)] {
        let port = t.addr.port();
        server
            .apply(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": app, "namespace": "shop", "labels": {"app": app}}, "spec": {}}))
            .unwrap();
        server
            .apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{app}-x"), "namespace": "shop", "labels": {"kubernetes.io/service-name": app}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}],
                "ports": [{"name": "metrics", "port": port}]}))
            .unwrap();
    }
    let monitor = |app: &str, regex: &str| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": app, "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": app}},
                "endpoints": [{"port": "metrics", "interval": "1s",
                    "relabelings": [{"sourceLabels": ["__address__"], "regex": regex, "targetLabel": "addr", "action": "replace"}]}]}})
    };
    server.apply(monitor("good", "(.*)")).unwrap();
    server.apply(monitor("bad", "([unclosed")).unwrap();

    // KUBECONFIG for the agent, as kubectl finds it; no other test of this binary uses Kubernetes.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let admin = free_port();
    let config = AgentConfig::new("it-bad", &dir.path().join("data"), admin)
        .set("mode", "cluster")
        .set("events.enabled", false)
        .set("tail_sampling.enabled", false)
        .set("cluster_state.enabled", false)
        .yaml();
    let mut agent = AgentProcess::start(dir.path(), &config, admin).await;
    let url = format!("http://127.0.0.1:{admin}/targets");
    let body: serde_json::Value = eventually(Duration::from_secs(30), "the good monitor's target up", || {
        let url = url.clone();
        async move {
            let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let up = body["targets"].as_array()?.iter().any(|t| t["labels"]["job"] == "good" && t["health"] == "up");
            up.then_some(body)
        }
    })
    .await;
    let monitors = body["discovery"]["monitors"].as_array().expect("monitors on /targets");
    let find = |name: &str| monitors.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{name}: {body}"));
    let (good_m, bad_m) = (find("good"), find("bad"));
    report(
        "monitor with an invalid regex",
        "ServiceMonitors shop/good and shop/bad (relabeling regex \"([unclosed\")",
        &format!("bad: errors {}, targets here {}", bad_m["errors"], bad_m["targets_here"]),
        &format!("good: errors {}, targets here {}", good_m["errors"], good_m["targets_here"]),
    );
    let target_errors: Vec<String> = body["discovery"]["target_errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    println!("    discovery target_errors: {target_errors:?}");
    // On the monitor, named by the rule's path in it (as the user wrote it).
    let named = bad_m["errors"][0].as_str().is_some_and(|e| e.starts_with("spec.endpoints[0].relabelings[0].regex: "));
    assert!(named, "the bad regex is reported with its path: {bad_m}");
    assert!(target_errors.iter().all(|e| !e.contains("serviceMonitor/shop/bad")), "{target_errors:?}");
    assert_eq!(bad_m["targets_here"], 0, "{bad_m}");
    assert!(good_m["errors"].as_array().is_some_and(|e| e.is_empty()), "{good_m}");
    assert!(target_errors.iter().all(|e| !e.contains("serviceMonitor/shop/good")), "{target_errors:?}");
    let targets = body["targets"].as_array().unwrap();
    assert!(targets.iter().all(|t| t["labels"]["job"] != "bad"), "no target from the bad monitor: {body}");
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
}
