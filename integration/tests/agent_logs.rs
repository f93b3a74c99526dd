//! The real `lgtm-agent` binary tailing a generated `/var/log/pods` tree into the fake Loki:
//! exact counts and labels, and nothing lost across kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::{eventually, free_port};

fn agent_config(data_dir: &Path, pods_dir: &Path, loki_url: &str, admin_port: u16) -> String {
    AgentConfig::new("it-logs", data_dir, admin_port)
        .set("node_name", "node-a")
        .loki(loki_url, Backoff("50ms", "500ms"))
        .logs_from(pods_dir)
        .yaml()
}

/// Appends `n` CRI lines to `<root>/<ns>_<pod>_<uid>/<container>/0.log`, numbered from `from`.
fn write_cri(root: &Path, ns: &str, pod: &str, container: &str, from: usize, n: usize) {
    let dir = root.join(format!("{ns}_{pod}_0000-{pod}")).join(container);
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let mut buf = String::new();
    for i in from..from + n {
        buf.push_str(&format!("2026-11-25T08:00:00.{i:09}Z stdout F {pod}/{container} line {i}\n"));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn selector(pod: &str, container: &str) -> String {
    format!(
        "{{cluster=\"it-logs\", container=\"{container}\", job=\"shop/{container}\", namespace=\"shop\", node=\"node-a\", pod=\"{pod}\", stream=\"stdout\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_two_containers_arrive_exactly_with_their_labels() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    for p in 0..50 {
        for c in ["app", "sidecar"] {
            write_cri(&pods, "shop", &format!("pod-{p}"), c, 0, 40);
        }
    }
    // Excluded by default.
    write_cri(&pods, "shop", "pod-0", "linkerd-proxy", 0, 10);
    let admin = free_port();
    let mut agent =
        AgentProcess::start(tmp.path(), &agent_config(&tmp.path().join("data"), &pods, &loki.push_url(), admin), admin)
            .await;
    // Lines written while running arrive too.
    for p in 0..50 {
        write_cri(&pods, "shop", &format!("pod-{p}"), "app", 40, 10);
    }
    let started = std::time::Instant::now();
    while loki.total_entries() < 4500 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if loki.total_entries() < 4500 {
        let by_stream = loki.lines_by_stream();
        let short: Vec<_> = by_stream.iter().filter(|(_, l)| l.len() < 40).map(|(s, l)| (s.clone(), l.len())).collect();
        panic!(
            "{} lines in {} streams; short streams: {short:?}\nagent log:\n{}",
            loki.total_entries(),
            by_stream.len(),
            agent.log()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_stream = loki.lines_by_stream();
    assert_eq!(loki.total_entries(), 4500, "50 pods x (50 + 40) lines, no duplicates");
    assert_eq!(by_stream.len(), 100, "one stream per container, linkerd-proxy excluded");
    for p in 0..50 {
        let pod = format!("pod-{p}");
        let app = &by_stream[&selector(&pod, "app")];
        assert_eq!(app, &(0..50).map(|i| format!("{pod}/app line {i}")).collect::<Vec<_>>());
        let side = &by_stream[&selector(&pod, "sidecar")];
        assert_eq!(side, &(0..40).map(|i| format!("{pod}/sidecar line {i}")).collect::<Vec<_>>());
    }
    assert!(loki.state().pushes.iter().all(|p| p.tenant.as_deref() == Some("remote04")));
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_in_a_loop_loses_no_line() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = tmp.path().join("data");
    let admin = free_port();
    let config = agent_config(&data, &pods, &loki.push_url(), admin);
    let mut written: BTreeMap<String, usize> = BTreeMap::new();
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;
    for round in 0..5 {
        for p in 0..5 {
            let pod = format!("pod-{p}");
            let from = *written.get(&pod).unwrap_or(&0);
            write_cri(&pods, "shop", &pod, "app", from, 200);
            written.insert(pod, from + 200);
        }
        // Kill at a different moment each round, while lines are being shipped.
        tokio::time::sleep(Duration::from_millis(150 + 170 * round)).await;
        agent.kill();
        agent = AgentProcess::start(tmp.path(), &config, admin).await;
    }
    let total: usize = written.values().sum();
    eventually(Duration::from_secs(60), "every line after the kills", || {
        let by_stream = loki.lines_by_stream();
        let written = written.clone();
        async move {
            written
                .iter()
                .all(|(pod, n)| {
                    let got = by_stream.get(&selector(pod, "app")).cloned().unwrap_or_default();
                    (0..*n).all(|i| got.contains(&format!("{pod}/app line {i}")))
                })
                .then_some(())
        }
    })
    .await;
    // At least once: lines may arrive twice after a kill, but only lines that were written.
    let by_stream = loki.lines_by_stream();
    let want_streams: BTreeSet<String> = written.keys().map(|pod| selector(pod, "app")).collect();
    assert_eq!(by_stream.keys().cloned().collect::<BTreeSet<_>>(), want_streams, "one stream per pod");
    for (pod, n) in &written {
        let got: BTreeSet<&String> = by_stream[&selector(pod, "app")].iter().collect();
        let want: Vec<String> = (0..*n).map(|i| format!("{pod}/app line {i}")).collect();
        assert_eq!(got, want.iter().collect(), "{pod}: every written line, nothing else");
    }
    let received = loki.total_entries();
    println!("kill -9 x5: written {total}, received {received} (duplicates: {})", received - total);
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
}
