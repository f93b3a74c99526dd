//! Backends that push back with their default limits, against the real `lgtm-agent` binary on
//! loopback, each case bounded in time: the stand-ins in `integration/src` answer as Loki, Tempo
//! and Mimir do (the texts are theirs), and each case checks what a user would: what was stored
//! once, twice, or dropped and counted in `/metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::{FakeLoki, LokiLimits};
use lgtm_integration::fake_mimir::{FakeMimir, CORTEX_INGESTION_BURST, CORTEX_INGESTION_RATE};
use lgtm_integration::fake_target::FakeTarget;
use lgtm_integration::{eventually, free_port};
use serde_json::json;

/// A Prometheus text body of `n` series.
fn many_series(n: usize) -> String {
    let mut body = String::with_capacity(n * 40);
    body.push_str("# TYPE wide gauge\n");
    for i in 0..n {
        body.push_str(&format!("wide{{i=\"{i}\"}} {i}\n"));
    }
    body
}

/// Issue 23, item 4: a scrape larger than the tenant's ingestion burst (Cortex's default 50,000
/// samples; 60,000 were seen) used to go in one request per shard, refused with 429 forever:
/// nothing stored, not even `up`. Requests are now cut at `batch.max_items`, so every one fits
/// the bucket and only the rate holds them back (429, the shard waits and retries). Scaled down
/// tenfold (a debug build scrapes 60,000 series slowly): burst 5,000, 5,000 samples/s, 12,000
/// series in one scrape (about 11-21 s on a loaded 2-core machine; bounded at 90 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_larger_than_the_ingestion_burst_is_stored_whole() {
    let series = 12_000;
    let mimir = FakeMimir::start(CORTEX_INGESTION_RATE / 5.0, CORTEX_INGESTION_BURST / 10.0).await;
    let target = FakeTarget::start(&many_series(series)).await;
    let data = tempfile::tempdir().unwrap();
    let admin = free_port();
    let cfg = AgentConfig::new("it-limits", data.path(), admin)
        .mimir(&mimir.push_url(), Backoff("100ms", "1s"))
        .set("exporters.mimir.shards", 1)
        .set("exporters.mimir.batch.max_items", 1000)
        .set("exporters.mimir.batch.max_bytes", "4MiB")
        .scrape("60s", "20s", json!([{ "targets": [target.addr.to_string()], "labels": { "job": "wide" } }]));
    let agent = AgentProcess::start(data.path(), &cfg.yaml(), admin).await;

    let started = Instant::now();
    let all_stored = || {
        let st = mimir.state();
        st.series_with_prefix("wide{") == series && st.series_with_prefix("up{") == 1
    };
    while started.elapsed() < Duration::from_secs(90) && !all_stored() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let st = mimir.state();
        let done = st.series_with_prefix("wide{") == series && st.series_with_prefix("up{") == 1;
        assert!(done, "after 90 s: {} series; requests {:?}\n{}", st.samples.len(), st.requests, agent.log());
    }
    let (stored, requests, largest, refused, twice) = {
        let st = mimir.state();
        (
            st.samples.len(),
            st.requests.len(),
            st.requests.iter().map(|(n, _)| *n).max().unwrap_or(0),
            st.requests.iter().filter(|(_, status)| *status == 429).count(),
            st.samples.values().filter(|n| **n > 1).count(),
        )
    };
    eprintln!(
        "stored {stored} series in {:.1?}; {requests} requests, largest {largest} samples, {refused} answered 429; twice {twice}",
        started.elapsed(),
    );
    assert!(largest <= 1000, "a request of {largest} samples");
    assert_eq!(twice, 0, "a sample stored twice");
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["mimir"]).await, 0.0);
}

/// Appends `lines` CRI lines (stdout and stderr alternately) to
/// `<pods>/shop_<pod>_0000-<pod>/app/0.log`, numbered from `from`, each `pad` bytes long at least.
fn write_cri(pods: &Path, pod: &str, from: usize, lines: usize, pad: usize) {
    let dir = pods.join(format!("shop_{pod}_0000-{pod}")).join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let mut buf = String::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for i in from..from + lines {
        let stream = if i % 2 == 0 { "stdout" } else { "stderr" };
        let text = format!("{pod} line {i} ");
        let fill = "x".repeat(pad.saturating_sub(text.len()));
        buf.push_str(&format!("{} {stream} F {text}{fill}\n", rfc3339(now, i)));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// `secs` (Unix) as an RFC 3339 UTC time with `nanos` nanoseconds.
fn rfc3339(secs: u64, nanos: usize) -> String {
    lgtm_integration::bench_node::load::cri_time(std::time::UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// Lines of the fake Loki, with how often each arrived.
fn stored(loki: &FakeLoki) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in &loki.state().pushes {
        for s in &p.streams {
            for e in &s.entries {
                *out.entry(e.line.split(' ').take(3).collect::<Vec<_>>().join(" ")).or_default() += 1;
            }
        }
    }
    out
}

fn logs_agent(data: &Path, pods: &Path, url: &str, admin: u16) -> AgentConfig {
    AgentConfig::new("it-limits", data, admin)
        .set("node_name", "node-a")
        .loki(url, Backoff("50ms", "500ms"))
        .logs_from(pods)
}

/// How many lines arrived once, twice or more; printed for RELIABILITY.md.
fn once_twice(stored: &BTreeMap<String, usize>) -> (usize, usize) {
    (stored.values().filter(|n| **n == 1).count(), stored.values().filter(|n| **n > 1).count())
}

/// Issue 23, item 1: Loki 2.9 (`allow_structured_metadata: false` by default) answers 400 to
/// every entry with structured metadata; every line was dropped. Now the exporter sends them
/// again without it, remembers that for the tenant, logs it once and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_metadata_refused_is_sent_again_without_it() {
    let loki = FakeLoki::start().await;
    loki.state().limits = LokiLimits { refuse_structured_metadata: true, ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, "pod-0", 0, 2000, 60);
    let admin = free_port();
    // `stream` as structured metadata, which Loki 3 takes and Loki 2.9 refuses by default.
    let cfg =
        logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin).set("logs.stream", "structured_metadata");
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    write_cri(&pods, "pod-0", 2000, 2000, 60);
    eventually(Duration::from_secs(30), "4,000 lines stored", || async { (stored(&loki).len() == 4000).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = stored(&loki);
    let (once, twice) = once_twice(&lines);
    let refusals = loki.state().refusals.get(&400).copied().unwrap_or(0);
    let log = agent.log();
    let logged = log.matches("refuses structured metadata").count();
    eprintln!("structured metadata refused: 4,000 lines written, {once} stored once, {twice} twice; Loki answered 400 {refusals} time(s); logged {logged} time(s)");
    assert_eq!((once, twice), (4000, 0));
    assert_eq!(refusals, 1, "refused once, then sent without metadata");
    assert_eq!(logged, 1, "logged once:\n{log}");
    assert_eq!(agent.metric_sum("lgtm_agent_loki_structured_metadata_refused_total", &[]).await, 1.0);
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await, 0.0);
}

/// Issue 17, item 4: a 413 dropped the whole batch. Now the batch is cut in halves down to the
/// one line still too large, which alone is dropped and counted; the rest is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_too_large_drops_only_the_line_that_is() {
    let loki = FakeLoki::start().await;
    loki.state().limits = LokiLimits { max_request_bytes: Some(64 * 1024), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, "pod-0", 0, 1500, 100);
    write_cri(&pods, "pod-0", 1500, 1, 100 * 1024);
    write_cri(&pods, "pod-0", 1501, 1499, 100);
    let admin = free_port();
    let cfg = logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin)
        .set("exporters.loki.batch.max_bytes", "512KiB");
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    eventually(Duration::from_secs(30), "2,999 lines stored", || async { (stored(&loki).len() >= 2999).then_some(()) })
        .await;
    eventually(Duration::from_secs(10), "the large line counted", || async {
        (agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki", "http_413"]).await >= 1.0).then_some(())
    })
    .await;
    let lines = stored(&loki);
    let (once, twice) = once_twice(&lines);
    let dropped = agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await;
    eprintln!("413: 3,000 lines written (one of 100 KiB, limit 64 KiB), {once} stored once, {twice} twice, dropped and counted {dropped}; 413 answered {} times", loki.state().refusals.get(&413).copied().unwrap_or(0));
    assert!(!lines.contains_key("pod-0 line 1500"), "the large line");
    assert_eq!((once, twice), (2999, 0));
    assert_eq!(dropped, 1.0);
}

/// Issue 17, item 5: a redirect dropped everything. A redirect to the same host is followed; one
/// to another host is not (the credentials stay), is logged as an error with its Location and is
/// retried, never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_the_same_host_are_followed_and_others_are_loud_and_retried() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    write_cri(&pods, "pod-0", 0, 500, 60);
    let admin = free_port();
    let moved = format!("http://{}/moved/loki/api/v1/push", loki.addr);
    let agent =
        AgentProcess::start(tmp.path(), &logs_agent(&tmp.path().join("data"), &pods, &moved, admin).yaml(), admin)
            .await;
    eventually(Duration::from_secs(20), "500 lines through the redirect", || async {
        (stored(&loki).len() == 500).then_some(())
    })
    .await;
    assert_eq!(once_twice(&stored(&loki)), (500, 0));
    drop(agent);

    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let admin = free_port();
    let elsewhere = format!("http://{}/elsewhere/loki/api/v1/push", loki.addr);
    let cfg = logs_agent(&tmp.path().join("data"), &pods, &elsewhere, admin)
        .set("exporters.loki.basic_auth", json!({ "username": "agent", "password": "s3cret" }));
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    write_cri(&pods, "pod-0", 0, 500, 60);
    eventually(Duration::from_secs(20), "retries of the redirected request", || async {
        (agent.metric_sum("lgtm_agent_exporter_retries_total", &["loki"]).await >= 3.0).then_some(())
    })
    .await;
    let readyz = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
    let (status, text) = (readyz.status().as_u16(), readyz.text().await.unwrap_or_default());
    assert_eq!(status, 503, "/readyz while the backend redirects elsewhere: {text}");
    assert!(text.contains("loki"), "{text}");
    let log = agent.log();
    assert!(log.contains("ERROR") && log.contains("loki.elsewhere.invalid"), "an error naming the Location:\n{log}");
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await, 0.0);
    assert_eq!(loki.total_entries(), 0);
}

/// Issue 23, item 2: past the tenant's stream limit every request with a new stream was retried
/// forever, one at a time, so the streams Loki had stopped too. Now only the refused streams are
/// held back (and dropped and counted after `stream_limit_hold_back`); the others keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stream_limit_only_the_refused_streams_are_held_back() {
    let loki = FakeLoki::start().await;
    loki.state().limits = LokiLimits { max_streams: Some(3), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    for p in 0..3 {
        write_cri(&pods, &format!("pod-{p}"), 0, 100, 60);
    }
    let admin = free_port();
    let cfg = logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin)
        .set("exporters.loki.stream_limit_hold_back", "3s")
        // One Loki stream per pod (stdout and stderr in metadata), as the counts below assume.
        .set("logs.stream", "structured_metadata");
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    eventually(Duration::from_secs(20), "the first three streams", || async {
        (stored(&loki).len() == 300).then_some(())
    })
    .await;
    // Two more streams, past the limit, and more lines of the three Loki has.
    for p in 3..5 {
        write_cri(&pods, &format!("pod-{p}"), 0, 100, 60);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for round in 1..6 {
        for p in 0..3 {
            write_cri(&pods, &format!("pod-{p}"), round * 100, 100, 60);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(Duration::from_secs(20), "every line of the three streams", || async {
        (stored(&loki).keys().filter(|l| ["pod-0", "pod-1", "pod-2"].iter().any(|p| l.starts_with(p))).count() == 1800)
            .then_some(())
    })
    .await;
    let flowing = started.elapsed();
    eventually(Duration::from_secs(20), "the refused streams dropped and counted", || async {
        (agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await >= 200.0).then_some(())
    })
    .await;
    let lines = stored(&loki);
    let (once, twice) = once_twice(&lines);
    let refused = lines.keys().filter(|l| l.starts_with("pod-3") || l.starts_with("pod-4")).count();
    let held = agent.metric_sum("lgtm_agent_loki_held_back_total", &[]).await;
    let dropped = agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await;
    let counted = agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki", "stream_limit"]).await;
    eprintln!(
        "stream limit 3, 5 streams: 1,800 lines of the 3 admitted streams all stored ({flowing:.1?} after the limit was hit), {once} once, {twice} twice; \
         200 lines of the 2 refused streams: {refused} stored, {held} held back, {dropped} dropped and counted (stream_limit {counted})"
    );
    assert_eq!(refused, 0);
    assert_eq!(twice, 0);
    assert_eq!(dropped, 200.0);
    assert_eq!(counted, 200.0);
}

/// Issue 23, item 6: Loki stores the valid entries of a request and answers 400 listing the
/// refused ones; the whole request was counted as dropped. Now what was refused is counted, by
/// Loki's reason, and the rest as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_400_counts_only_the_refused_entries_by_reason() {
    let loki = FakeLoki::start().await;
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    loki.state().limits = LokiLimits { oldest_accepted_ns: Some(now_ns - 3_600_000_000_000), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    // 150 lines two days old, then 100 current ones, in one file (one stream).
    let dir = pods.join("shop_pod-0_0000-pod-0").join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let old = (now_ns / 1_000_000_000) as u64 - 2 * 86_400;
    let mut text = String::new();
    for i in 0..150 {
        text.push_str(&format!("{} stdout F pod-0 line {i} old\n", rfc3339(old, i)));
    }
    std::fs::write(dir.join("0.log"), text).unwrap();
    write_cri(&pods, "pod-0", 150, 100, 40);
    let admin = free_port();
    // One stream (stdout and stderr in metadata): Loki's 400 answers for the request's last
    // stream only (see the next tests).
    let cfg =
        logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin).set("logs.stream", "structured_metadata");
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    eventually(Duration::from_secs(20), "the 100 current lines", || async {
        (stored(&loki).len() == 100).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the refusals counted", || async {
        (agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await >= 150.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let too_old = agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki", "greater_than_max_sample_age"]).await;
    let failed = agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await;
    let sent = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
    eprintln!(
        "partial 400: 250 lines, 150 too old; stored {}, counted refused {failed} (too old {too_old}), sent {sent}",
        stored(&loki).len()
    );
    assert_eq!(too_old, 150.0);
    assert_eq!(failed, 150.0);
    assert_eq!(sent, 100.0);
}

/// Issue 23, item 5: above the per-stream rate Loki stores what fits and answers 429 for the
/// rest; the whole request was sent again, storing lines twice (23 % of a 64 MiB catch-up). Now
/// each stream is paced below `per_stream_rate`, so a catch-up stores each line once. Scaled
/// down: 512 KB/s per stream, burst 2.56 MB (Loki: 3MB/s, 15MB), ~4.6 MB written before the
/// agent starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_above_the_per_stream_rate_stores_each_line_once() {
    let loki = FakeLoki::start().await;
    // Loki's burst is 5 times its rate (3MB, 15MB): larger than any request the agent builds.
    loki.state().limits = LokiLimits { per_stream_rate: Some((512_000.0, 2_560_000.0)), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let lines = 20_000;
    write_cri(&pods, "pod-0", 0, lines, 200);
    let admin = free_port();
    let cfg = logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin)
        .set("exporters.loki.per_stream_rate", "512KB")
        .set("exporters.loki.per_stream_burst", "2MB")
        .set("exporters.loki.batch.max_bytes", "256KiB");
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) && stored(&loki).len() < lines {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    if stored(&loki).len() < lines {
        let refusals = loki.state().refusals.clone();
        let n = stored(&loki).len();
        panic!("after {took:?}: {n} of {lines} lines; refusals {refusals:?}; log:\n{}", agent.log());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored(&loki);
    let (once, twice) = once_twice(&stored);
    let refused = loki.state().refusals.get(&429).copied().unwrap_or(0);
    eprintln!("per-stream rate 512 KB/s: {lines} lines (~4 MiB) of one stream, {once} stored once, {twice} twice, in {took:.1?}; Loki answered 429 {refused} times");
    assert_eq!((once, twice), (lines, 0));
    assert_eq!(refused, 0);
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["loki"]).await, 0.0);
}

/// Issue 23, item 3: Tempo refuses a message over its 4 MiB gRPC limit with RESOURCE_EXHAUSTED
/// "received message after decompression larger than max", which was retried forever: no later
/// trace arrived. Now requests stay within `batch.max_bytes`, a "larger than max" is cut in
/// halves, and only a span that alone is too large is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_larger_than_max_is_cut_and_only_a_span_too_large_alone_is_dropped() {
    use lgtm_integration::otlp_receiver::OtlpReceiver;
    use opentelemetry_proto::tonic::trace::v1::Span;

    let tempo = OtlpReceiver::start().await;
    tempo.state().max_message = Some(256 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let http = free_port();
    // The exporter's bound is larger than this Tempo's limit: the backend's answer must cut.
    let cfg = AgentConfig::new("it-limits", &tmp.path().join("data"), admin)
        .set("exporters.tempo", json!({ "url": tempo.endpoint(), "batch": { "max_wait": "100ms", "max_bytes": "2MiB" }, "retry": { "initial_backoff": "50ms", "max_backoff": "500ms" } }))
        .set("otlp", json!({ "enabled": true, "grpc": "", "http": format!("127.0.0.1:{http}") }));
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    let span = |i: usize, size: usize| Span {
        trace_id: vec![1; 16],
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: format!("span-{i}-{}", "n".repeat(size)),
        ..Default::default()
    };
    let mut sent = 0;
    for r in 0..4 {
        // 400 spans of ~2 KiB (~800 KiB per request); the third request also holds a 300 KiB span.
        let mut spans: Vec<Span> = (0..400).map(|i| span(r * 1000 + i, 2000)).collect();
        if r == 2 {
            spans.push(span(99_999, 300 * 1024));
        }
        sent += spans.len();
        post_otlp_spans(http, spans).await;
    }
    eventually(Duration::from_secs(30), "1,600 spans at Tempo", || async {
        (tempo.span_count() >= 1600).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the large span counted", || async {
        (agent.metric_sum("lgtm_agent_exporter_failed_total", &["tempo", "too_large"]).await >= 1.0).then_some(())
    })
    .await;
    let mut names = BTreeMap::new();
    for e in &tempo.state().exports {
        for rs in &e.request.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    *names.entry(s.name.split('-').take(2).collect::<Vec<_>>().join("-")).or_insert(0usize) += 1;
                }
            }
        }
    }
    let (once, twice) = once_twice(&names);
    let too_large = tempo.state().too_large;
    eprintln!("tempo (limit 256 KiB): {sent} spans sent, {once} stored once, {twice} twice; {too_large} requests refused as larger than max; dropped and counted {}", agent.metric_sum("lgtm_agent_dropped_total", &["tempo"]).await);
    assert_eq!((once, twice), (1600, 0));
    assert!(!names.contains_key("span-99999"));
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["tempo"]).await, 1.0);
}

/// Issue 21, item 6: Loki requests of 5,172 entries and 1.26 MB were seen with the documented
/// `batch.max_items: 2000` / `max_bytes: 1MiB` (a tailer batch went out whole). Every request
/// now stays within both, and every line is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loki_request_exceeds_the_batch_limits() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    // Short lines, written before the agent starts: one read block holds thousands of them.
    write_cri(&pods, "pod-0", 0, 12_000, 40);
    let admin = free_port();
    let cfg = logs_agent(&tmp.path().join("data"), &pods, &loki.push_url(), admin);
    let _agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    eventually(Duration::from_secs(30), "12,000 lines stored", || async {
        (stored(&loki).len() == 12_000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (once, twice) = once_twice(&stored(&loki));
    let (requests, largest, largest_bytes) = {
        let st = loki.state();
        let request = |p: &lgtm_integration::fake_loki::ReceivedPush| lgtm_pipeline::proto::PushRequest {
            streams: p.streams.clone(),
        };
        (
            st.pushes.len(),
            st.pushes.iter().map(|p| p.streams.iter().map(|s| s.entries.len()).sum::<usize>()).max().unwrap_or(0),
            st.pushes.iter().map(|p| prost::Message::encoded_len(&request(p))).max().unwrap_or(0),
        )
    };
    eprintln!("batch limits: 12,000 lines, {once} stored once, {twice} twice, {requests} requests, largest {largest} entries / {largest_bytes} bytes");
    assert_eq!((once, twice), (12_000, 0));
    assert!(largest <= 2000, "a request of {largest} entries (batch.max_items 2000)");
    assert!(largest_bytes <= 1024 * 1024, "a request of {largest_bytes} bytes (batch.max_bytes 1MiB)");
}

/// Unix nanoseconds now.
fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// One OTLP resource's logs: `service.name` (and more resource attributes), records `(line, ts)`.
fn otlp_resource(
    attributes: &[(&str, &str)],
    records: &[(String, i64)],
) -> opentelemetry_proto::tonic::logs::v1::ResourceLogs {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let string = |s: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(s.to_string())) });
    ResourceLogs {
        resource: Some(Resource {
            attributes: attributes
                .iter()
                .map(|(k, v)| KeyValue { key: k.to_string(), value: string(v), ..Default::default() })
                .collect(),
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: records
                .iter()
                .map(|(line, ts)| LogRecord { time_unix_nano: *ts as u64, body: string(line), ..Default::default() })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// POSTs one OTLP/HTTP logs request of `resources` to the agent.
async fn post_otlp_logs(port: u16, resources: Vec<opentelemetry_proto::tonic::logs::v1::ResourceLogs>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    post_otlp(port, "/v1/logs", ExportLogsServiceRequest { resource_logs: resources }.encode_to_vec()).await;
}

/// POSTs one OTLP/HTTP traces request of `spans` (one resource, one scope) to the agent.
async fn post_otlp_spans(port: u16, spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    let scope_spans = vec![ScopeSpans { spans, ..Default::default() }];
    let body = ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans, ..Default::default() }] }
        .encode_to_vec();
    post_otlp(port, "/v1/traces", body).await;
}

/// POSTs one OTLP/HTTP protobuf `body` to the agent's `path`; it must be accepted.
async fn post_otlp(port: u16, path: &str, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// An agent taking OTLP/HTTP logs on `http` and pushing them to `loki`, with `limits` as
/// `exporters.loki.limits`.
fn otlp_logs_agent(data: &Path, loki: &FakeLoki, admin: u16, http: u16, limits: serde_json::Value) -> AgentConfig {
    AgentConfig::new("it-limits", data, admin)
        .loki(&loki.push_url(), Backoff("50ms", "500ms"))
        .set("exporters.loki.limits", limits)
        // Jaeger and Zipkin off: their fixed ports would clash with the other tests' agents.
        .set(
            "otlp",
            json!({
                "enabled": true, "grpc": "", "http": format!("127.0.0.1:{http}"), "zipkin": "",
                "jaeger": { "thrift_compact": "", "thrift_binary": "", "thrift_http": "", "grpc": "" },
            }),
        )
}

/// Issue 23, item 6: entries and streams Loki would certainly refuse (too old, too far in the
/// future, a line too long, too many labels, a label value too long) used to ride in requests
/// with healthy ones: Loki stored the healthy ones and answered 400 (or 204), and the agent's
/// counts were guesswork. Now the agent checks Loki's limits (`exporters.loki.limits`) before
/// sending: the refused ones are dropped and counted exactly by Loki's reason, and the healthy
/// ones arrive once, in requests Loki takes whole. The fake Loki enforces the same limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_loki_would_refuse_is_dropped_before_sending_and_counted_by_reason() {
    let loki = FakeLoki::start().await;
    let now = now_ns();
    let (sec, hour) = (1_000_000_000i64, 3_600_000_000_000i64);
    loki.state().limits = LokiLimits {
        oldest_accepted_ns: Some(now - hour),
        newest_accepted_ns: Some(now + 600 * sec),
        max_line_size: Some(1000),
        max_label_names_per_series: Some(3),
        max_label_value_length: Some(100),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (admin, http) = (free_port(), free_port());
    let limits = json!({
        "max_line_size": 1000,
        "max_label_names_per_series": 3,
        "max_label_value_length": 100,
        "reject_old_samples": true,
        "reject_old_samples_max_age": "1h",
        "creation_grace_period": "10m",
    });
    let agent = AgentProcess::start(
        tmp.path(),
        &otlp_logs_agent(&tmp.path().join("data"), &loki, admin, http, limits).yaml(),
        admin,
    )
    .await;
    let lines = |prefix: &str, n: usize, ts: i64| -> Vec<(String, i64)> {
        (0..n).map(|i| (format!("{prefix} {i}"), ts + i as i64)).collect()
    };
    let mut healthy = lines("healthy", 200, now);
    healthy.extend(lines("old", 10, now - 2 * hour));
    healthy.extend(lines("future", 5, now + hour));
    healthy.extend((0..7).map(|i| (format!("long {i} {}", "x".repeat(2000)), now + 300 + i)));
    let resources = vec![
        otlp_resource(&[("service.name", "healthy")], &healthy),
        otlp_resource(&[("service.name", &"v".repeat(150))], &lines("long-value", 20, now)),
        otlp_resource(
            &[
                ("service.name", "many"),
                ("k8s.namespace.name", "ns"),
                ("k8s.pod.name", "p"),
                ("k8s.container.name", "c"),
            ],
            &lines("many-labels", 30, now),
        ),
        otlp_resource(&[("service.name", "also-healthy")], &lines("also", 100, now)),
    ];
    post_otlp_logs(http, resources).await;
    eventually(Duration::from_secs(20), "the 300 healthy lines", || async {
        (loki.total_entries() >= 300).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the 72 refused ones counted", || async {
        (agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await >= 72.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut arrived: BTreeMap<String, usize> = BTreeMap::new();
    for (_, ls) in loki.lines_by_stream() {
        for l in ls {
            *arrived.entry(l).or_default() += 1;
        }
    }
    let expected: Vec<String> =
        (0..200).map(|i| format!("healthy {i}")).chain((0..100).map(|i| format!("also {i}"))).collect();
    let (once, twice) = once_twice(&arrived);
    let mut counted = BTreeMap::new();
    for reason in [
        "greater_than_max_sample_age",
        "too_far_in_future",
        "line_too_long",
        "label_value_too_long",
        "max_label_names_per_series",
    ] {
        counted.insert(reason, agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki", reason]).await);
    }
    let failed = agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await;
    let sent = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
    let retries = agent.metric_sum("lgtm_agent_exporter_retries_total", &["loki"]).await;
    let (refusals, discarded, pushes) = {
        let st = loki.state();
        (st.refusals.clone(), st.discarded.clone(), st.pushes.len())
    };
    eprintln!(
        "pre-checks: 372 lines in one OTLP request, 300 healthy: {once} stored once, {twice} twice, in {pushes} request(s); \
         Loki refused {refusals:?}, discarded {discarded:?}; the agent counted {counted:?} ({failed} in all), sent {sent}, retried {retries}"
    );
    assert_eq!(
        arrived.keys().cloned().collect::<Vec<_>>().len(),
        300,
        "{:?}",
        arrived.keys().take(5).collect::<Vec<_>>()
    );
    assert!(expected.iter().all(|l| arrived.get(l) == Some(&1)), "every healthy line once");
    assert_eq!(twice, 0);
    assert!(refusals.is_empty(), "Loki refused nothing: {refusals:?}");
    assert!(discarded.is_empty(), "Loki discarded nothing: {discarded:?}");
    assert_eq!(
        counted.into_iter().collect::<Vec<_>>(),
        vec![
            ("greater_than_max_sample_age", 10.0),
            ("label_value_too_long", 20.0),
            ("line_too_long", 7.0),
            ("max_label_names_per_series", 30.0),
            ("too_far_in_future", 5.0),
        ]
    );
    assert_eq!(failed, 72.0);
    assert_eq!(sent, 300.0);
    assert_eq!(retries, 0.0);
    assert_eq!(agent.metric_sum("lgtm_agent_dropped_total", &["loki", "rejected"]).await, 72.0);
    let log = agent.log();
    assert_eq!(log.matches("dropping entries before sending").count(), 5, "warned once per reason:\n{log}");
}

/// Issue 23, item 6: Loki stores what passes and answers for the request's last stream only:
/// when only an earlier stream was refused it answers 204, and no client can tell; only
/// `loki_discarded_samples_total` shows it. Here the agent's own check of the age is off (a Loki
/// stricter than `exporters.loki.limits`), so the old entries reach the fake Loki: when their
/// stream comes first the agent counts everything as sent, and only the fake's discarded counter
/// shows the loss; when it comes last, the 400 lets the agent count them by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_answers_204_when_only_an_earlier_stream_was_refused_and_only_its_discarded_counter_shows_it() {
    let loki = FakeLoki::start().await;
    let now = now_ns();
    let hour = 3_600_000_000_000i64;
    loki.state().limits = LokiLimits { oldest_accepted_ns: Some(now - hour), ..Default::default() };
    let tmp = tempfile::tempdir().unwrap();
    let (admin, http) = (free_port(), free_port());
    let agent = AgentProcess::start(
        tmp.path(),
        &otlp_logs_agent(&tmp.path().join("data"), &loki, admin, http, json!({ "reject_old_samples": false })).yaml(),
        admin,
    )
    .await;
    let lines =
        |prefix: &str, ts: i64| -> Vec<(String, i64)> { (0..50).map(|i| (format!("{prefix} {i}"), ts + i)).collect() };
    // Streams go out in the order of their selectors: `a-old` before `b-fresh`.
    post_otlp_logs(
        http,
        vec![
            otlp_resource(&[("service.name", "b-fresh")], &lines("fresh", now)),
            otlp_resource(&[("service.name", "a-old")], &lines("old", now - 2 * hour)),
        ],
    )
    .await;
    eventually(Duration::from_secs(20), "the 50 fresh lines", || async { (loki.total_entries() >= 50).then_some(()) })
        .await;
    eventually(Duration::from_secs(10), "100 counted as sent", || async {
        (agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await >= 100.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let silent = {
        let (refusals, discarded) = {
            let st = loki.state();
            (st.refusals.clone(), st.discarded.get("greater_than_max_sample_age").copied().unwrap_or(0))
        };
        let sent = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
        (refusals, discarded, sent, agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await)
    };
    // The refused stream last: Loki's 400 names its entries.
    post_otlp_logs(
        http,
        vec![
            otlp_resource(&[("service.name", "c-fresh")], &lines("fresh-again", now)),
            otlp_resource(&[("service.name", "d-old")], &lines("old-again", now - 2 * hour)),
        ],
    )
    .await;
    eventually(Duration::from_secs(20), "the 50 refused counted", || async {
        (agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki", "greater_than_max_sample_age"]).await >= 50.0)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loud = {
        let (refusals, discarded) = {
            let st = loki.state();
            (st.refusals.clone(), st.discarded.get("greater_than_max_sample_age").copied().unwrap_or(0))
        };
        let sent = agent.metric_sum("lgtm_agent_exporter_sent_total", &["loki"]).await;
        (refusals, discarded, sent, agent.metric_sum("lgtm_agent_exporter_failed_total", &["loki"]).await)
    };
    eprintln!(
        "refused stream first: Loki answered {:?} (no 400), discarded {} (loki_discarded_samples_total), the agent counted {} sent, {} failed; \
         refused stream last: Loki answered {:?}, discarded {} in all, the agent counted {} sent, {} failed in all",
        silent.0, silent.1, silent.2, silent.3, loud.0, loud.1, loud.2, loud.3
    );
    assert!(silent.0.is_empty(), "204 for the request whose refused stream came first: {:?}", silent.0);
    assert_eq!((silent.1, silent.2, silent.3), (50, 100.0, 0.0), "only the fake's discarded counter shows the 50");
    assert_eq!(loud.0.get(&400).copied(), Some(1));
    assert_eq!((loud.1, loud.2, loud.3), (100, 150.0, 50.0));
    assert_eq!(loki.total_entries(), 100, "the fresh lines of both requests, once");
}

/// `bench node` (seventh session): after a trace export, the agent kept a third of a core busy
/// until the next request came. The Tempo exporter's senders are several consumers of one queue;
/// the ones that saw a record another sender took woke at once, over and over, on their passed
/// batching deadline. An agent that has exported its one request is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_trace_export_the_tempo_senders_wait_idle() {
    use lgtm_integration::otlp_receiver::OtlpReceiver;
    use lgtm_integration::procstat::Process;
    use opentelemetry_proto::tonic::trace::v1::Span;

    let tempo = OtlpReceiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (admin, http) = (free_port(), free_port());
    let cfg = AgentConfig::new("it-idle", &tmp.path().join("data"), admin)
        .set("exporters.tempo", json!({ "url": tempo.endpoint(), "shards": 4, "batch": { "max_wait": "100ms" } }))
        .set("otlp", json!({ "enabled": true, "grpc": "", "http": format!("127.0.0.1:{http}") }));
    let agent = AgentProcess::start(tmp.path(), &cfg.yaml(), admin).await;
    let span = Span { trace_id: vec![7; 16], span_id: vec![1; 8], name: "one".into(), ..Default::default() };
    post_otlp_spans(http, vec![span]).await;
    eventually(Duration::from_secs(20), "the span at Tempo", || async { (tempo.span_count() >= 1).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let process = Process::Pid(agent.pid());
    let before = process.usage().cpu_seconds;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = process.usage().cpu_seconds - before;
    assert!(spent < 0.3, "the idle agent spent {spent:.2} CPU-seconds in 2 s after one export");
}
