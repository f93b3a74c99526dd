//! Hostile and unlucky nodes (issue 16): the real `lgtm-agent` binary keeps shipping a normal
//! pod's lines while the log root holds FIFOs, links out of the tree or to `/dev/zero`; ignores a
//! damaged checkpoint (counted) instead of losing its reading thread; exits (code 1) rather than
//! stay healthy when the reading thread panics; and refuses to share its `data_dir` with a second
//! agent.

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
