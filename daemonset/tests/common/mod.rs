//! A recording sink and a harness that runs the real tailer on a temporary `/var/log/pods`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_config::{LogsConfig, StartAt};
use lgtm_daemonset::logs::{run_logs_with, LogBatchSink, LogsOptions, PathOnly, Tuning};
use lgtm_pipeline::ack::AckSender;
use lgtm_pipeline::proto::PushRequest;
use lgtm_pipeline::{Ack, Delivery, SendError};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One delivered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub labels: String,
    pub line: String,
    pub ts: i64,
    pub meta: Vec<(String, String)>,
    /// Which run of the tailer delivered it.
    pub run: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Resolve every batch as accepted at once.
    All,
    /// Never resolve (as if Loki never answered).
    Never,
    /// Resolve the first `n` batches of each run only.
    First(usize),
}

#[derive(Default)]
struct State {
    got: Vec<Got>,
    /// When each entry of `got` was handed to the sink.
    arrived: Vec<Instant>,
    held: Vec<AckSender>,
    batches_this_run: usize,
    run: usize,
}

#[derive(Clone)]
pub struct TestSink {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<AckMode>>,
}

impl TestSink {
    pub fn new() -> TestSink {
        TestSink { state: Arc::default(), mode: Arc::new(Mutex::new(AckMode::All)) }
    }

    pub fn set_mode(&self, m: AckMode) {
        *self.mode.lock().unwrap() = m;
    }

    fn new_run(&self) {
        let mut s = self.state.lock().unwrap();
        s.run += 1;
        s.batches_this_run = 0;
        // Acks still held from the previous run die with it (resolve to None).
        s.held.clear();
    }

    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.got().into_iter().map(|g| g.line).collect()
    }

    /// Each delivered line with when it was handed to the sink.
    pub fn lines_with_arrival(&self) -> Vec<(String, Instant)> {
        let s = self.state.lock().unwrap();
        s.got.iter().map(|g| g.line.clone()).zip(s.arrived.iter().copied()).collect()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().got.len()
    }

    /// Resolves every held ack as accepted.
    pub fn release_held(&self) {
        for a in self.state.lock().unwrap().held.drain(..) {
            a.resolve(Delivery::Accepted);
        }
    }
}

impl LogBatchSink for TestSink {
    async fn send_batch(&self, push_request: Bytes, entries: u32) -> Result<Ack, SendError> {
        let req = PushRequest::decode(push_request).expect("the tailer encodes valid protobuf");
        let mode = *self.mode.lock().unwrap();
        let mut s = self.state.lock().unwrap();
        let run = s.run;
        let now = Instant::now();
        let mut n = 0;
        for st in req.streams {
            for e in st.entries {
                n += 1;
                s.got.push(Got {
                    labels: st.labels.clone(),
                    line: e.line,
                    ts: e.timestamp.map(|t| t.unix_nanos()).unwrap_or(0),
                    meta: e.structured_metadata.into_iter().map(|m| (m.name, m.value)).collect(),
                    run,
                });
                s.arrived.push(now);
            }
        }
        assert_eq!(n, entries, "entry count matches the payload");
        assert!(n as usize <= BATCH_MAX_ITEMS, "a batch of {n} entries, over batch_max_items");
        s.batches_this_run += 1;
        let (tx, ack) = Ack::pair();
        match mode {
            AckMode::All => tx.resolve(Delivery::Accepted),
            AckMode::First(k) if s.batches_this_run <= k => tx.resolve(Delivery::Accepted),
            _ => s.held.push(tx),
        }
        Ok(ack)
    }
}

/// A temporary log root and data dir.
pub struct Env {
    pub root: tempfile::TempDir,
    pub data: tempfile::TempDir,
    pub sink: TestSink,
    pub cfg: LogsConfig,
    pub tuning: Tuning,
}

pub struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Entries per batch at most (`Tuning::batch_max_items`); the sink checks every batch against it.
pub const BATCH_MAX_ITEMS: usize = 100;

/// With `LGTM_TEST_EVENTS_ONLY=1`, neither the periodic pass over the open files nor the rescan
/// of the tree happens within a test (both an hour apart): what arrives is what inotify's events
/// alone bring (`LGTM_TEST_EVENTS_ONLY=1 cargo test -p lgtm-daemonset --test tailer --test model`;
/// tests that need the rescan, e.g. a root that appears late, fail in this mode by design).
pub fn events_only() -> bool {
    std::env::var("LGTM_TEST_EVENTS_ONLY").is_ok_and(|v| v == "1")
}

pub fn tuning() -> Tuning {
    let poll_interval = if events_only() { Duration::from_secs(3600) } else { Duration::from_millis(50) };
    Tuning {
        block_size: 64 * 1024,
        batch_max_bytes: 64 * 1024,
        // Small, so that every test also exercises batches cut in the middle of a read block.
        batch_max_items: BATCH_MAX_ITEMS,
        batch_max_wait: Duration::from_millis(10),
        poll_interval,
        rotate_wait: Duration::from_millis(300),
        checkpoint_interval: Duration::from_millis(50),
        shutdown_ack_wait: Duration::from_millis(200),
    }
}

impl Env {
    pub fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let cfg = LogsConfig {
            enabled: Some(true),
            path: root.path().to_path_buf(),
            exclude_containers: vec!["istio-proxy".into()],
            kubernetes: false,
            rescan_interval: lgtm_config::Duration::from_millis(if events_only() { 3_600_000 } else { 200 }),
            start_at: StartAt::Beginning,
            ..LogsConfig::default()
        };
        Env { root, data: tempfile::tempdir().unwrap(), sink: TestSink::new(), cfg, tuning: tuning() }
    }

    pub fn container_dir(&self, ns: &str, pod: &str, container: &str) -> PathBuf {
        let d = self.root.path().join(format!("{ns}_{pod}_uid-{pod}")).join(container);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn start(&self) -> Running {
        self.sink.new_run();
        let shutdown = CancellationToken::new();
        let mut opts = LogsOptions::new("test-cluster", "node-1", self.data.path());
        opts.tuning = self.tuning.clone();
        let task = tokio::spawn(run_logs_with(
            self.cfg.clone(),
            opts,
            self.sink.clone(),
            Arc::new(PathOnly),
            shutdown.clone(),
        ));
        Running { shutdown, task }
    }

    pub fn checkpoints(&self) -> serde_json::Value {
        let p = self.data.path().join("logs").join("checkpoints.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("tailer stops").unwrap();
    }
}

/// Waits until `f` holds, or panics after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A CRI line with a timestamp derived from `i`.
pub fn cri(i: u64, msg: &str) -> String {
    format!("2024-01-01T00:{:02}:{:02}.{:09}Z stdout F {msg}\n", (i / 60) % 60, i % 60, i % 1_000_000_000)
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

pub fn write_lines(path: &Path, prefix: &str, range: std::ops::Range<u64>) {
    let mut s = String::new();
    for i in range {
        s.push_str(&cri(i, &format!("{prefix}-{i}")));
    }
    append(path, &s);
}

/// Whether this process holds a descriptor on the file at `path` (by inode while the path exists,
/// else by the name the kernel shows for a deleted file).
pub fn fd_open_on(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let fds: Vec<PathBuf> = std::fs::read_dir("/proc/self/fd").unwrap().flatten().map(|e| e.path()).collect();
    match std::fs::metadata(path) {
        Ok(m) => {
            fds.iter().filter_map(|fd| std::fs::metadata(fd).ok()).any(|fm| fm.ino() == m.ino() && fm.dev() == m.dev())
        }
        Err(_) => {
            let want = path.to_string_lossy().to_string();
            fds.iter().filter_map(|fd| std::fs::read_link(fd).ok()).any(|l| {
                let l = l.to_string_lossy();
                l == want || l == format!("{want} (deleted)")
            })
        }
    }
}

/// Lines by count.
pub fn multiplicity(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.clone()).or_insert(0) += 1;
    }
    m
}

/// The mask of this process's inotify watch on `dir`, as the kernel reports it
/// (`/proc/self/fdinfo`), if there is one.
pub fn watch_mask(dir: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(dir).ok()?.ino();
    for fd in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if std::fs::read_link(fd.path()).ok()?.to_string_lossy() != "anon_inode:inotify" {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy())).ok()?;
        for line in info.lines().filter(|l| l.starts_with("inotify ")) {
            let field = |name: &str| {
                line.split_whitespace().find_map(|f| f.strip_prefix(name)).and_then(|v| u64::from_str_radix(v, 16).ok())
            };
            if field("ino:") == Some(ino) {
                return field("mask:").map(|m| m as u32);
            }
        }
    }
    None
}

/// `IN_MODIFY`: the write events a watch on a busy directory loses when muted.
pub const IN_MODIFY: u32 = 0x2;
/// The events of the files in a watched directory (`IN_ACCESS`, `IN_MODIFY`, `IN_ATTRIB`,
/// `IN_CLOSE_WRITE`, `IN_CLOSE_NOWRITE`, `IN_OPEN`), as opposed to those of its entries.
pub const IN_FILE_EVENTS: u32 = 0x3f;
