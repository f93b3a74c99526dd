//! Hostile and unlucky nodes (issue 16): the real `lgtm-agent` binary keeps shipping a normal
//! pod's lines while the log root holds FIFOs, links out of the tree or to `/dev/zero`; ignores a
//! damaged checkpoint (counted) instead of losing its reading thread; exits (code 1) rather than
//! stay healthy when the reading thread panics; refuses to share its `data_dir` with a second
//! agent; ships a lone partial (`P`) line after `logs.partial_flush_timeout`, at deletion and at
//! SIGTERM, once across a crash; keeps every line of 2,000 files under a 256-descriptor limit
//! (`logs.max_open_files`); ships directories whose names are not UTF-8; and reads the copy's
//! unread tail in a copytruncate rotation loop.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::{eventually, free_port};

fn config(data_dir: &Path, pods: &Path, loki_url: &str, admin_port: u16) -> AgentConfig {
    AgentConfig::new("it-hostile", data_dir, admin_port)
        .set("node_name", "node-a")
        .loki(loki_url, Backoff("50ms", "500ms"))
        .logs_from(pods)
}

/// Appends `n` CRI lines `<pod> line <i>` to `<root>/shop_<pod>_0000-<pod>/app/0.log`.
fn write_cri(root: &Path, pod: &str, from: usize, n: usize) {
    let dir = root.join(format!("shop_{pod}_0000-{pod}")).join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let mut buf = String::new();
    for i in from..from + n {
        buf.push_str(&format!("2026-11-25T08:00:00.{i:09}Z stdout F {pod} line {i}\n"));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn container_dir(root: &Path, pod: &str) -> std::path::PathBuf {
    let d = root.join(format!("shop_{pod}_0000-{pod}")).join("app");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

async fn wait_lines(loki: &FakeLoki, agent: &AgentProcess, n: usize) {
    let start = Instant::now();
    while loki.total_entries() < n {
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "{} of {n} lines arrived; streams {:?}\nagent log:\n{}",
                loki.total_entries(),
                loki.lines_by_stream().keys(),
                agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_links_out_of_the_root_and_dev_zero_are_refused_while_a_normal_pod_ships() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let secret = tmp.path().join("secret-token");
    std::fs::write(&secret, "2026-11-25T08:00:00Z stdout F SECRET-TOKEN\n").unwrap();
    // A FIFO named 0.log: opening it for reading blocked the only reading thread.
    let fifo = container_dir(&pods, "fifo").join("0.log");
    mkfifo(&fifo);
    std::os::unix::fs::symlink(&secret, container_dir(&pods, "leak").join("0.log")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", container_dir(&pods, "zero").join("0.log")).unwrap();
    // A symlinked pod directory leading out of the tree.
    let elsewhere = tmp.path().join("elsewhere");
    write_cri(&elsewhere, "linked", 0, 5);
    std::os::unix::fs::symlink(elsewhere.join("shop_linked_0000-linked"), pods.join("shop_linked_0000-linked"))
        .unwrap();
    write_cri(&pods, "good", 0, 100);

    let admin = free_port();
    let yaml = config(&tmp.path().join("data"), &pods, &loki.push_url(), admin).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    wait_lines(&loki, &agent, 100).await;
    // Lines keep arriving, and a FIFO / link created while running is refused too.
    let fifo2 = container_dir(&pods, "fifo2").join("0.log");
    mkfifo(&fifo2);
    std::os::unix::fs::symlink(&secret, container_dir(&pods, "leak2").join("0.log")).unwrap();
    for round in 1..4 {
        write_cri(&pods, "good", round * 100, 100);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_lines(&loki, &agent, 400).await;
    // Two rescans (1 s) see the hostile entries again: refused without counting them twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let by_stream = loki.lines_by_stream();
    assert_eq!(loki.total_entries(), 400, "every line of the normal pod once; nothing else: {:?}", by_stream.keys());
    assert_eq!(by_stream.len(), 1, "only the normal pod's stream: {:?}", by_stream.keys());
    assert!(by_stream.values().flatten().all(|l| !l.contains("SECRET")), "a file outside the root was shipped");
    let refused = |reason: &'static str| {
        let agent = &agent;
        async move { agent.metric_sum("lgtm_agent_logs_files_refused_total", &[&format!("reason=\"{reason}\"")]).await }
    };
    assert_eq!(refused("not_regular_file").await, 2.0, "two FIFOs\n{}", agent.log());
    assert_eq!(refused("symlink_outside_allowed").await, 3.0, "two links to the secret, one to /dev/zero");
    println!(
        "hostile entries: 2 FIFOs, 3 links out, 1 symlinked pod dir; normal pod 400 written / {} arrived; refused: {} not_regular_file, {} symlink_outside_allowed, {} symlinked_directory",
        loki.total_entries(),
        refused("not_regular_file").await,
        refused("symlink_outside_allowed").await,
        refused("symlinked_directory").await,
    );
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_counted_and_ignored_and_the_logs_still_ship() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = tmp.path().join("data");
    write_cri(&pods, "good", 0, 50);
    let log = pods.join("shop_good_0000-good/app/0.log");
    let meta = std::fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    // head_len above the 256-byte head: this panicked the logs-tailer thread, and the agent stayed
    // healthy and ready without shipping a line again.
    std::fs::create_dir_all(data.join("logs")).unwrap();
    std::fs::write(
        data.join("logs/checkpoints.json"),
        serde_json::json!({"version": 1, "files": [{
            "dev": meta.dev(), "inode": meta.ino(), "head_len": 1000, "head_hash": 1,
            "offset": 10, "path": log.display().to_string(),
        }]})
        .to_string(),
    )
    .unwrap();
    let admin = free_port();
    let yaml = config(&data, &pods, &loki.push_url(), admin).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    wait_lines(&loki, &agent, 50).await;
    write_cri(&pods, "good", 50, 50);
    wait_lines(&loki, &agent, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(loki.total_entries(), 100, "read from the start (the checkpoint is unusable), once");
    assert_eq!(agent.metric_sum("lgtm_agent_logs_checkpoints_unreadable_total", &[]).await, 1.0);
    assert!(agent.log().contains("ignoring unreadable checkpoints"), "{}", agent.log());
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tailer_thread_takes_the_process_down_instead_of_staying_healthy() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let admin = free_port();
    let yaml = config(&tmp.path().join("data"), &pods, &loki.push_url(), admin).yaml();
    let env = [("RUST_LOG", "info"), ("LGTM_AGENT_FAILPOINT", "logs-tailer-panic")];
    let mut agent = AgentProcess::start_with_env(tmp.path(), &yaml, admin, &env).await;
    // The thread panics right after it first reads something.
    write_cri(&pods, "good", 0, 10);
    let status = agent.wait_exit(Duration::from_secs(15)).await;
    let status = status.unwrap_or_else(|| panic!("the agent stayed up without its reading thread\n{}", agent.log()));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(agent.log().contains("the logs-tailer thread panicked"), "{}", agent.log());
}

fn spawn_agent(dir: &Path, yaml: &str) -> std::process::Child {
    let cfg = dir.join("agent.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Command::new(agent_binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await.is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_data_dir_waits_not_ready_then_exits_1_or_takes_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (a1, a2, a3) = (free_port(), free_port(), free_port());
    let first = AgentConfig::new("it-lock", &data, a1).yaml();
    let d1 = tempfile::tempdir().unwrap();
    let mut first = AgentProcess::start(d1.path(), &first, a1).await;

    // A second agent gives up after data_dir_lock_wait with code 1 and says why.
    let d2 = tempfile::tempdir().unwrap();
    let yaml = AgentConfig::new("it-lock", &data, a2).set("data_dir_lock_wait", "1s").yaml();
    let started = Instant::now();
    let out = spawn_agent(d2.path(), &yaml).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is still locked by another agent"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A third waits (not ready) while the first runs, and takes over once it exits.
    let d3 = tempfile::tempdir().unwrap();
    let yaml = AgentConfig::new("it-lock", &data, a3).set("data_dir_lock_wait", "60s").yaml();
    let mut third = spawn_agent(d3.path(), &yaml);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(third.try_wait().unwrap().is_none(), "still waiting");
    assert!(!ready(a3).await, "not ready while the lock is held");
    assert!(first.terminate(Duration::from_secs(20)).await.success());
    eventually(Duration::from_secs(15), "the waiting agent ready", || async move { ready(a3).await.then_some(()) })
        .await;
    let _ = Command::new("kill").args(["-TERM", &third.id().to_string()]).status();
    let out = third.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("data_dir is locked by another agent"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_is_refused_with_its_path_and_errno() {
    // Tests run as root, which a read-only mode does not stop, and mounting read-only needs
    // privileges: the write probe is made to fail by a directory in its way (EISDIR); a
    // read-only file system fails the same probe with EROFS.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join(".write-check")).unwrap();
    let port = free_port();
    let out = spawn_agent(tmp.path(), &AgentConfig::new("it-ro", &data, port).yaml()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("data_dir {} is not writable", data.display())), "{stderr}");
    assert!(stderr.contains("os error 21"), "errno quoted: {stderr}");
}

/// `<root>/shop_<pod>_0000-<pod>/app/0.log`.
fn log_of(root: &Path, pod: &str) -> std::path::PathBuf {
    container_dir(root, pod).join("0.log")
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// How often `line` arrived at Loki.
fn arrived(loki: &FakeLoki, line: &str) -> usize {
    loki.lines_by_stream().values().flatten().filter(|l| *l == line).count()
}

async fn wait_for_line(loki: &FakeLoki, agent: &AgentProcess, line: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while arrived(loki, line) == 0 {
        if start.elapsed() > within {
            panic!(
                "{line:?} did not arrive within {within:?}; got {:?}\nagent log:\n{}",
                loki.lines_by_stream(),
                agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Waits until the agent has read `n` physical lines in all (so a piece is in its hands).
async fn wait_read(agent: &AgentProcess, n: f64) {
    let start = Instant::now();
    while agent.metric_sum("lgtm_agent_logs_lines_read_total", &[]).await < n {
        assert!(start.elapsed() < Duration::from_secs(20), "the agent did not read {n} lines\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the checkpoint of `log` reaches its end (what was shipped is acknowledged and on disk).
async fn wait_checkpointed(data: &Path, log: &Path) {
    let len = std::fs::metadata(log).unwrap().len();
    let start = Instant::now();
    loop {
        let offset = std::fs::read(data.join("logs/checkpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["files"].as_array()?.iter().find(|f| f["path"] == log.display().to_string())?["offset"].as_u64()
            });
        if offset == Some(len) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "checkpoint of {} at {offset:?}, not {len}", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_alone_is_shipped_after_partial_flush_timeout_and_once_across_a_crash() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (pods, data) = (tmp.path().join("pods"), tmp.path().join("data"));
    let log = log_of(&pods, "quiet");
    // A container wrote a partial line and went quiet (it died, or idles): on main the piece
    // waited for its end forever.
    append(&log, "2026-11-25T08:00:00Z stdout F whole line\n2026-11-25T08:00:01Z stdout P piece-1\n");
    let admin = free_port();
    let yaml = config(&data, &pods, &loki.push_url(), admin).set("logs.partial_flush_timeout", "2s").yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    wait_for_line(&loki, &agent, "whole line", Duration::from_secs(20)).await;
    let waited = wait_for_line(&loki, &agent, "piece-1", Duration::from_secs(2 + 5)).await;
    assert_eq!(agent.metric_sum("lgtm_agent_logs_partial_lines_flushed_total", &["reason=\"timeout\""]).await, 1.0);
    wait_checkpointed(&data, &log).await;

    // A second piece, read but not yet due, when the agent is killed: the checkpoint stays before
    // it, so the restarted agent reads it again and ships it once after the timeout.
    append(&log, "2026-11-25T08:00:02Z stdout P piece-2\n");
    wait_read(&agent, 3.0).await;
    agent.kill();
    assert_eq!(arrived(&loki, "piece-2"), 0, "not due before the crash");
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let waited_after_restart = wait_for_line(&loki, &agent, "piece-2", Duration::from_secs(2 + 8)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all: Vec<String> = loki.lines_by_stream().into_values().flatten().collect();
    assert_eq!(all, vec!["whole line", "piece-1", "piece-2"], "each once, in order");
    println!(
        "partial_flush_timeout 2s: lone piece arrived {waited:.1?} after the whole line; after SIGKILL and restart the pending piece arrived {waited_after_restart:.1?} after ready; lines written 3, arrived 3, twice 0"
    );
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_partial_is_shipped_when_its_file_is_deleted_and_at_sigterm_and_never_twice() {
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (pods, data) = (tmp.path().join("pods"), tmp.path().join("data"));
    let (deleted, stopped) = (log_of(&pods, "deleted"), log_of(&pods, "stopped"));
    let admin = free_port();
    // A timeout far beyond the test: what arrives, arrives for another reason.
    let yaml = config(&data, &pods, &loki.push_url(), admin).set("logs.partial_flush_timeout", "10m").yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    append(&deleted, "2026-11-25T08:00:00Z stdout P last words\n");
    append(&stopped, "2026-11-25T08:00:00Z stderr P cut short\n");
    wait_read(&agent, 2.0).await;
    // The pod is deleted: its file is read to its end and the piece goes out with it.
    std::fs::remove_dir_all(deleted.parent().unwrap().parent().unwrap()).unwrap();
    let at_deletion = wait_for_line(&loki, &agent, "last words", Duration::from_secs(10)).await;
    assert_eq!(arrived(&loki, "cut short"), 0);
    // SIGTERM: the other pending piece is shipped before the agent exits.
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
    assert_eq!(arrived(&loki, "cut short"), 1, "shipped at shutdown\n{}", agent.log());
    // The restarted agent reads on after it: its end is a line of its own, the piece not again.
    append(&stopped, "2026-11-25T08:00:01Z stderr F the rest\n");
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    wait_for_line(&loki, &agent, "the rest", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut all: Vec<String> = loki.lines_by_stream().into_values().flatten().collect();
    all.sort();
    assert_eq!(all, vec!["cut short", "last words", "the rest"], "each once");
    println!("pending pieces: shipped {at_deletion:.1?} after the pod's deletion, and at SIGTERM; lines written 3, arrived 3, twice 0");
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}

/// A script that starts the agent with both open-files limits at `n` (as a container runtime
/// with a low hard limit would), so that raising the soft limit does not help.
fn agent_with_nofile(dir: &Path, n: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("agent-nofile.sh");
    std::fs::write(&script, format!("#!/bin/sh\nulimit -n {n} || exit 99\nexec {} \"$@\"\n", agent_binary().display()))
        .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_files_under_a_256_descriptor_limit_every_line_once_and_healthz_answering() {
    const PODS: usize = 200;
    const CONTAINERS: usize = 10;
    const FILES: usize = PODS * CONTAINERS;
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let logs: Vec<std::path::PathBuf> = (0..FILES)
        .map(|i| {
            let d = pods
                .join(format!("shop_p{}_0000-{}", i / CONTAINERS, i / CONTAINERS))
                .join(format!("c{}", i % CONTAINERS));
            std::fs::create_dir_all(&d).unwrap();
            d.join("0.log")
        })
        .collect();
    let round = |from: usize, n: usize| {
        for (i, log) in logs.iter().enumerate() {
            let text: String =
                (from..from + n).map(|k| format!("2026-11-25T08:00:00.{k:09}Z stdout F f{i} l{k}\n")).collect();
            append(log, &text);
        }
    };
    round(0, 3);
    let admin = free_port();
    let yaml = config(&tmp.path().join("data"), &pods, &loki.push_url(), admin).yaml();
    let limit: u32 = std::env::var("NOFILE").map(|v| v.parse().unwrap()).unwrap_or(256);
    let bin = agent_with_nofile(tmp.path(), limit);
    let agent = AgentProcess::launch(&bin, tmp.path(), &yaml, admin, &[("RUST_LOG", "info")])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert!(nofile.split_whitespace().filter(|w| *w == limit.to_string()).count() == 2, "{nofile}");

    // /healthz polled every 100 ms all along; descriptors sampled.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let pid = agent.pid();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut polls, mut failures, mut peak_fds) = (0u32, 0u32, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = client
                    .get(format!("http://127.0.0.1:{admin}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                polls += 1;
                failures += u32::from(!ok);
                peak_fds = peak_fds.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (polls, failures, peak_fds)
        })
    };
    let started = Instant::now();
    wait_lines_within(&loki, &agent, FILES * 3, Duration::from_secs(120)).await;
    let first = started.elapsed();
    // Every file grows again: the closed ones are reopened by path and identity.
    round(3, 2);
    wait_lines_within(&loki, &agent, FILES * 5, Duration::from_secs(120)).await;
    let all = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (polls, failures, peak_fds) = poller.await.unwrap();

    let lines: Vec<String> = loki.lines_by_stream().into_values().flatten().collect();
    let unique: std::collections::HashSet<&String> = lines.iter().collect();
    let open_max = agent.metric_sum("lgtm_agent_logs_files_open", &[]).await;
    let tracked = agent.metric_sum("lgtm_agent_logs_files_tracked", &[]).await;
    let reopened = agent.metric_sum("lgtm_agent_logs_files_reopened_total", &[]).await;
    let open_failed = agent.metric_sum("lgtm_agent_logs_files_refused_total", &["reason=\"open_failed\""]).await;
    println!(
        "{FILES} files, RLIMIT_NOFILE {limit}/{limit}, max_open_files auto ({open_max} held at the end): {} lines written, {} arrived, {} twice; first {} in {first:.1?}, all in {all:.1?}; /healthz {polls} polls, {failures} failed; peak process fds {peak_fds}; files reopened {reopened}",
        FILES * 5,
        lines.len(),
        lines.len() - unique.len(),
        FILES * 3,
    );
    assert_eq!((lines.len(), unique.len()), (FILES * 5, FILES * 5), "every line once");
    assert_eq!(failures, 0, "/healthz failed {failures} of {polls} polls");
    assert_eq!(tracked, FILES as f64);
    assert!(open_max <= 128.0, "files held open {open_max} (256 - reserve 128)");
    assert!(reopened >= FILES as f64, "closed files reopened when they grew: {reopened}");
    assert_eq!(open_failed, 0.0, "no open ran out of descriptors");
    assert!(agent.log().contains("max_open_files=128"), "the cap is logged\n{}", agent.log());
    let mut agent = agent;
    assert!(agent.terminate(Duration::from_secs(30)).await.success());
}

async fn wait_lines_within(loki: &FakeLoki, agent: &AgentProcess, n: usize, within: Duration) {
    let start = Instant::now();
    while loki.total_entries() < n {
        if start.elapsed() > within {
            panic!("{} of {n} lines arrived\nagent log:\n{}", loki.total_entries(), agent.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_with_names_that_are_not_utf8_are_shipped_with_lossy_labels_counted_and_warned_once() {
    use std::os::unix::ffi::OsStrExt;
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    // Latin-1 bytes in a pod name and in a container name.
    let dirs = [
        pods.join(std::ffi::OsStr::from_bytes(b"shop_caf\xe9_0000-a")).join("app"),
        pods.join("shop_plain_0000-b").join(std::ffi::OsStr::from_bytes(b"na\xefve")),
    ];
    for (k, d) in dirs.iter().enumerate() {
        std::fs::create_dir_all(d).unwrap();
        let text: String = (0..10).map(|i| format!("2026-11-25T08:00:00.{i:09}Z stdout F dir{k} line {i}\n")).collect();
        append(&d.join("0.log"), &text);
    }
    let admin = free_port();
    let yaml = config(&tmp.path().join("data"), &pods, &loki.push_url(), admin).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    wait_lines(&loki, &agent, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by_stream = loki.lines_by_stream();
    assert_eq!(loki.total_entries(), 20, "every line once: {by_stream:?}");
    let cafe = by_stream.iter().find(|(k, _)| k.contains("pod=\"caf\u{fffd}\"")).map(|(_, v)| v.len());
    let naive = by_stream.iter().find(|(k, _)| k.contains("container=\"na\u{fffd}ve\"")).map(|(_, v)| v.len());
    assert_eq!((cafe, naive), (Some(10), Some(10)), "labels converted lossily: {:?}", by_stream.keys());
    assert_eq!(agent.metric_sum("lgtm_agent_logs_non_utf8_paths_total", &[]).await, 2.0);
    assert_eq!(agent.log().matches("are not UTF-8").count(), 1, "warned once\n{}", agent.log());
    println!("non-UTF-8 directories: 2 files, 20 lines written, 20 arrived, labels pod=\"caf\u{fffd}\" and container=\"na\u{fffd}ve\", counter 2, one warning");
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copytruncate_rotation_loop_loses_no_line_the_copy_holds() {
    const CYCLES: usize = 20;
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let log = log_of(&pods, "rotated");
    let copy = log.with_file_name("0.log.1");
    let admin = free_port();
    let yaml = config(&tmp.path().join("data"), &pods, &loki.push_url(), admin).yaml();
    append(&log, "");
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let mut next = 0usize;
    let mut write = |n: usize| {
        let text: String =
            (next..next + n).map(|k| format!("2026-11-25T08:00:00.{k:09}Z stdout F line {k}\n")).collect();
        append(&log, &text);
        next += n;
        next
    };
    let started = Instant::now();
    for cycle in 0..CYCLES {
        // Some lines the agent reads, then a burst right before logrotate's copy and truncate:
        // what it has not read of the burst is only in the copy.
        let written = write(50);
        wait_lines_within(&loki, &agent, written, Duration::from_secs(20)).await;
        write(500);
        std::fs::copy(&log, &copy).unwrap();
        std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
        // The next cycle writes once the agent saw this truncation (a rewrite past the old
        // offset before it looks could not be told from growth).
        let start = Instant::now();
        while agent.metric_sum("lgtm_agent_logs_truncations_total", &[]).await < (cycle + 1) as f64 {
            assert!(start.elapsed() < Duration::from_secs(20), "truncation {cycle} not seen\n{}", agent.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let total = write(0);
    wait_lines_within(&loki, &agent, total, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let lines: Vec<String> = loki.lines_by_stream().into_values().flatten().collect();
    let want: Vec<String> = (0..total).map(|k| format!("line {k}")).collect();
    assert_eq!(lines.len(), total, "nothing twice");
    assert_eq!(lines, want, "every line once, in order");
    let found = agent.metric_sum("lgtm_agent_logs_truncations_total", &["copy=\"found\""]).await;
    let from_copy = agent.metric_sum("lgtm_agent_logs_copytruncate_bytes_read_total", &[]).await;
    let lost = agent.metric_sum("lgtm_agent_logs_bytes_lost_total", &[]).await;
    assert_eq!(found, CYCLES as f64);
    assert!(from_copy > 0.0, "some of the bursts were read from the copies");
    assert_eq!(lost, 0.0);
    println!(
        "copytruncate x{CYCLES} in {:.1?}: {total} lines written, {} arrived, 0 twice; copies found {found}, bytes read from copies {from_copy} (~{} lines), lost 0",
        started.elapsed(),
        lines.len(),
        (from_copy / 48.0).round(),
    );
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}
