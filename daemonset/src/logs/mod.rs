//! The pod log tailer: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log` to Loki.
//!
//! Data comes in from the files (read on a dedicated thread, [`tailer`]), goes out as encoded
//! `PushRequest`s through a [`LogBatchSink`] (the pipeline's [`LogsSink`] in the agent), and the
//! acknowledgements come back to advance the on-disk checkpoints ([`checkpoint`]): a file's
//! position moves only when Loki accepted (or definitively refused) every line before it, so a
//! restart or an outage loses nothing; at worst the unacknowledged tail is sent again.
//!
//! Backpressure: the reading thread hands batches over a channel of two; when the pipeline's
//! queue is full, `send` waits, the channel fills and the thread stops reading. Independently of
//! the pipeline's queue, the thread stops reading while the batches handed over and not yet
//! acknowledged add up to [`LogsOptions::max_inflight_bytes`], and resumes as acknowledgements
//! arrive. The files are the buffer: nothing needs to be held in memory (or copied to disk)
//! beyond what is on its way to Loki.
//!
//! Kubernetes enrichment is a seam: [`PodMetadata`] (the reflector of this node's pods implements
//! it later); with `kubernetes: false` labels come from the path alone ([`PathOnly`]).

pub mod batch;
pub mod checkpoint;
pub mod compressed;
pub mod cri;
pub mod discovery;
pub mod docker;
pub mod format;
pub mod identity;
pub mod labels;
pub mod metrics;
pub mod path;
pub mod reader;
pub mod safe_open;
mod tailer;
pub mod timefmt;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use lgtm_config::LogsConfig;
use lgtm_pipeline::{Ack, Delivery, LogsSink, SendError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use labels::{PathOnly, PodInfo, PodMetadata};

use checkpoint::{CheckpointStore, FileKey, Registry};
use discovery::Wake;
use labels::{Filters, NodeLabels};
use tailer::{lock, Batch, Settings, Tailer};

/// Where the tailer's batches go. The agent uses [`LogsSink`]; tests use a recording sink that
/// decides when to acknowledge.
pub trait LogBatchSink: Send + Sync + 'static {
    /// Queues one encoded `logproto.PushRequest` of `entries` entries. May wait (backpressure).
    fn send_batch(&self, push_request: Bytes, entries: u32) -> impl Future<Output = Result<Ack, SendError>> + Send;
}

impl LogBatchSink for LogsSink {
    fn send_batch(&self, push_request: Bytes, entries: u32) -> impl Future<Output = Result<Ack, SendError>> + Send {
        self.send_encoded(push_request, entries)
    }
}

/// What the tailer takes from outside the `logs` config section.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    /// The `cluster` label.
    pub cluster: String,
    /// The `node` label (the agent passes `$NODE_NAME`); empty leaves the label out.
    pub node_name: String,
    /// Checkpoints go to `data_dir/logs/checkpoints.json`.
    pub data_dir: PathBuf,
    /// The reading thread stops while the encoded batches handed to the sink and not yet
    /// acknowledged add up to this many bytes ([`DEFAULT_MAX_INFLIGHT_BYTES`]), and resumes as acknowledgements
    /// arrive. Bounds the memory logs take downstream during a catch-up (3 MiB, about five
    /// requests of 2,000 entries: enough for the Loki exporter's four shards and the next ones).
    pub max_inflight_bytes: usize,
    pub tuning: Tuning,
    /// What a panic of the reading thread does.
    pub on_tailer_death: TailerDeath,
}

/// Default of [`LogsOptions::max_inflight_bytes`].
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 3 * 1024 * 1024;

impl LogsOptions {
    /// The agent's options: `cluster`, `node_name` and `data_dir` from the config, and an in-flight
    /// cap of at most `exporters.loki.queue.max_memory`, so that logs alone never push the Loki
    /// queue past its memory bound (and with a disk, never make it write them to disk).
    pub fn from_config(cfg: &lgtm_config::Config) -> LogsOptions {
        let mut opts = LogsOptions::new(&cfg.cluster, &cfg.node_name, &cfg.data_dir);
        let queue = cfg.exporters.loki.queue.max_memory().bytes();
        opts.max_inflight_bytes = opts.max_inflight_bytes.min(usize::try_from(queue).unwrap_or(usize::MAX));
        // Batches within one Loki request (`exporters.loki.batch`), so that the exporter sends
        // them whole: at most `max_items` entries, and a margin below `max_bytes` for the line
        // that crosses the byte bound (the exporter cuts a record that still exceeds them).
        let batch = &cfg.exporters.loki.batch;
        opts.tuning.batch_max_items = batch.max_items;
        let max_bytes = usize::try_from(batch.max_bytes.bytes()).unwrap_or(usize::MAX);
        opts.tuning.batch_max_bytes = opts.tuning.batch_max_bytes.min(max_bytes.saturating_sub(max_bytes / 8).max(1));
        opts
    }

    pub fn new(cluster: impl Into<String>, node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> LogsOptions {
        LogsOptions {
            cluster: cluster.into(),
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            tuning: Tuning::default(),
            on_tailer_death: TailerDeath::Exit,
        }
    }
}

/// Knobs that are not part of the user's config; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Bytes per read.
    pub block_size: usize,
    /// A batch goes out at this many encoded bytes, or this many entries...
    pub batch_max_bytes: usize,
    pub batch_max_items: usize,
    /// ...or this long after its first entry.
    pub batch_max_wait: Duration,
    /// Open files are re-read at least this often even without inotify events.
    pub poll_interval: Duration,
    /// A rotated file at its end is closed after this long even if its replacement stays empty.
    pub rotate_wait: Duration,
    pub checkpoint_interval: Duration,
    /// On shutdown, how long to wait for acknowledgements of batches already handed over.
    pub shutdown_ack_wait: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            block_size: 256 * 1024,
            batch_max_bytes: 1024 * 1024,
            batch_max_items: 2000,
            batch_max_wait: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            rotate_wait: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(1),
            shutdown_ack_wait: Duration::from_secs(2),
        }
    }
}

/// Bytes of batches handed to the sender and not yet acknowledged, shared by the reading thread
/// (which adds and checks) and the acknowledgement task (which subtracts and wakes the thread).
pub(crate) struct InFlight {
    bytes: AtomicUsize,
    cap: usize,
    wake: std_mpsc::Sender<Wake>,
}

impl InFlight {
    pub(crate) fn new(cap: usize, wake: std_mpsc::Sender<Wake>) -> InFlight {
        InFlight { bytes: AtomicUsize::new(0), cap: cap.max(1), wake }
    }

    /// A batch of `n` bytes was handed over.
    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// Whether reading must wait for acknowledgements.
    pub(crate) fn full(&self) -> bool {
        self.bytes.load(Ordering::Acquire) >= self.cap
    }

    /// A batch of `n` bytes was acknowledged (or will never be); wakes the reading thread when
    /// this makes room.
    pub(crate) fn done(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, Ordering::AcqRel);
        if before >= self.cap && before - n < self.cap {
            let _ = self.wake.send(Wake::Resume);
        }
    }

    /// Wakes the reading thread (at shutdown: it may be waiting for up to `poll_interval`).
    pub(crate) fn wake_reader(&self) {
        let _ = self.wake.send(Wake::Resume);
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// Tails pod logs into the pipeline until `shutdown`; returns after writing the checkpoints.
/// Labels come from the paths ([`PathOnly`]).
pub async fn run_logs(cfg: LogsConfig, opts: LogsOptions, sink: LogsSink, shutdown: CancellationToken) {
    run_logs_with(cfg, opts, sink, Arc::new(PathOnly), shutdown).await
}

/// [`run_logs`] with any sink and pod metadata source.
pub async fn run_logs_with<S: LogBatchSink>(
    cfg: LogsConfig,
    opts: LogsOptions,
    sink: S,
    metadata: Arc<dyn PodMetadata>,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let store = CheckpointStore::new(&opts.data_dir);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(2);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Handed>();
    let (wake_tx, wake_rx) = std_mpsc::channel::<Wake>();
    let inflight = Arc::new(InFlight::new(opts.max_inflight_bytes, wake_tx.clone()));

    let settings = Settings {
        root: cfg.path.clone(),
        max_line: cfg.max_line_size.bytes().clamp(1, usize::MAX as u64) as usize,
        start_at: cfg.start_at,
        rescan_interval: cfg.rescan_interval.get().max(Duration::from_millis(10)),
        follow_symlinks_into: cfg.follow_symlinks_into.clone(),
        tuning: opts.tuning.clone(),
        stream_label: cfg.stream == lgtm_config::StreamPlacement::Label,
        partial_flush_timeout: cfg.partial_flush_timeout.get(),
        max_open_files: max_open_files(cfg.max_open_files),
    };
    let node = NodeLabels { cluster: opts.cluster.clone(), node: opts.node_name.clone() };
    let filters = Filters::new(&cfg);
    let reader_stop = shutdown.clone();
    let opts_on_death = opts.on_tailer_death;
    let (reg, st, infl) = (registry.clone(), store.clone(), inflight.clone());
    let reader = std::thread::Builder::new().name("logs-tailer".into()).spawn(move || {
        let _span = tracing::info_span!("logs-tailer").entered();
        let stop = reader_stop.clone();
        let run = std::panic::AssertUnwindSafe(move || {
            Tailer::new(settings, node, filters, metadata, st, reg, batch_tx, (wake_tx, wake_rx), infl).run(stop)
        });
        if let Err(panic) = std::panic::catch_unwind(run) {
            tailer_died(&*panic, opts_on_death);
        }
    });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the log tailer thread");
            return;
        }
    };
    let drain = opts.tuning.shutdown_ack_wait;
    let sender = tokio::spawn(
        send_loop(sink, batch_rx, ack_tx, shutdown.clone(), drain).instrument(tracing::info_span!("logs-sender")),
    );
    let nudge = inflight.clone();
    let acker = tokio::spawn(
        ack_loop(ack_rx, registry.clone(), inflight, shutdown.clone(), opts.tuning.shutdown_ack_wait)
            .instrument(tracing::info_span!("logs-acks")),
    );

    shutdown.cancelled().await;
    nudge.wake_reader();
    // The sender hands over the reading thread's last batch (partial lines flushed at shutdown)
    // for at most `shutdown_ack_wait`, then drops its receiver, which unblocks a reader waiting
    // on backpressure.
    let _ = sender.await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let _ = acker.await;
    let snapshot = lock(&registry).snapshot();
    let saved = tokio::task::spawn_blocking(move || store.save(snapshot)).await;
    match saved {
        Ok(Ok(())) => tracing::info!("log checkpoints written"),
        Ok(Err(e)) => tracing::error!(error = %e, "writing the final log checkpoints failed"),
        Err(e) => tracing::error!(error = %e, "writing the final log checkpoints panicked"),
    }
}

/// What happens when the reading thread panics: no component dies alone. The agent's default
/// ([`TailerDeath::Exit`]) exits the process with code 1 after a clear log line, so the kubelet
/// restarts the pod (checkpoints hold only acknowledged offsets: nothing is lost, the
/// unacknowledged tail is read again). Tests of the library may keep the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailerDeath {
    Exit,
    /// Log the panic only (unit tests).
    Log,
}

fn tailer_died(panic: &(dyn std::any::Any + Send), then: TailerDeath) {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    metrics::logs().tailer_panics.inc();
    tracing::error!(panic = %what, "the logs-tailer thread panicked: no pod log is read any more; exiting with code 1 so the pod is restarted (nothing acknowledged is lost)");
    if then == TailerDeath::Exit {
        std::process::exit(1);
    }
}

/// A batch handed to the sink: its sequence number, files, size in bytes and acknowledgement.
type Handed = (u64, Vec<FileKey>, usize, Ack);

/// Hands batches to the sink in order; retries errors (the data is still in the files) until
/// shutdown. After shutdown, hands over what the reading thread sends last (one attempt each)
/// for at most `drain`.
async fn send_loop<S: LogBatchSink>(
    sink: S,
    mut rx: mpsc::Receiver<Batch>,
    acks: mpsc::UnboundedSender<Handed>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    'running: loop {
        let batch = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break 'running,
            b = rx.recv() => match b { Some(b) => b, None => return },
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let res = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'running,
                r = sink.send_batch(batch.payload.clone(), batch.entries) => r,
            };
            match res {
                Ok(ack) => {
                    let _ = acks.send((batch.seq, batch.files, batch.payload.len(), ack));
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "handing logs to the pipeline failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    let last = async {
        while let Some(batch) = rx.recv().await {
            match sink.send_batch(batch.payload.clone(), batch.entries).await {
                Ok(ack) => {
                    let _ = acks.send((batch.seq, batch.files, batch.payload.len(), ack));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "handing the last logs to the pipeline at shutdown failed; they are read again at the next start");
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(drain, last).await;
}

/// `logs.max_open_files` in force: the configured value, or (`0`) from the soft `RLIMIT_NOFILE`
/// the process has (the agent raised it to the hard limit at start).
pub fn max_open_files(configured: u32) -> usize {
    if configured > 0 {
        return configured as usize;
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid pointer to an rlimit.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
    let cap = open_files_from_limit(soft as u64);
    tracing::info!(
        open_files_limit = soft,
        max_open_files = cap,
        "log files held open at most (logs.max_open_files: 0)"
    );
    cap
}

/// The open-files limit minus a reserve for sockets (Loki, kubelet, API server, admin and OTLP
/// clients), queue segments, checkpoints and inotify: a quarter of the limit, at least 128 (but
/// at most half of a small limit). 256 -> 128, 1,024 -> 768, 65,536 -> 49,152.
pub fn open_files_from_limit(soft: u64) -> usize {
    let soft = soft.min(1 << 24);
    let reserve = (soft / 4).max(128.min(soft / 2));
    (soft - reserve).max(u64::from(lgtm_config::MIN_OPEN_FILES)) as usize
}

/// Awaits acknowledgements in any order and advances the files' checkpoints. After `shutdown`
/// it keeps going for at most `grace`, for batches already handed over.
async fn ack_loop(
    mut rx: mpsc::UnboundedReceiver<Handed>,
    registry: Arc<Mutex<Registry>>,
    inflight: Arc<InFlight>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut pending = FuturesUnordered::new();
    let mut rx_open = true;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    loop {
        if !rx_open && pending.is_empty() {
            return;
        }
        tokio::select! {
            m = rx.recv(), if rx_open => match m {
                Some((seq, files, len, ack)) => pending.push(async move { (seq, files, len, ack.outcome().await) }),
                None => rx_open = false,
            },
            Some((seq, files, len, outcome)) = pending.next(), if !pending.is_empty() => {
                inflight.done(len);
                // `None`: the agent stopped before the outcome was known; do not advance.
                if let Some(d) = outcome {
                    if d != Delivery::Accepted {
                        tracing::debug!(outcome = ?d, "log batch refused for good; moving past it");
                    }
                    let mut reg = lock(&registry);
                    for k in files {
                        reg.resolve(k, seq);
                    }
                }
            }
            _ = &mut deadline => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use lgtm_config::StartAt;
    use lgtm_pipeline::ack::AckSender;

    use super::*;

    /// Records what it is handed and withholds the acknowledgements until told.
    #[derive(Clone, Default)]
    struct HoldingSink {
        state: Arc<Mutex<Held>>,
    }

    #[derive(Default)]
    struct Held {
        bytes: usize,
        entries: usize,
        acks: Vec<AckSender>,
    }

    impl HoldingSink {
        fn handed(&self) -> (usize, usize) {
            let s = self.state.lock().unwrap();
            (s.bytes, s.entries)
        }

        fn release(&self) {
            for a in self.state.lock().unwrap().acks.drain(..) {
                a.resolve(Delivery::Accepted);
            }
        }
    }

    impl LogBatchSink for HoldingSink {
        async fn send_batch(&self, push_request: Bytes, entries: u32) -> Result<Ack, SendError> {
            let (tx, ack) = Ack::pair();
            let mut s = self.state.lock().unwrap();
            s.bytes += push_request.len();
            s.entries += entries as usize;
            s.acks.push(tx);
            Ok(ack)
        }
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reading_stops_at_the_inflight_cap_and_resumes_on_acks() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let dir = root.path().join("ns_p_uid-p").join("c");
        std::fs::create_dir_all(&dir).unwrap();
        const LINES: usize = 20_000;
        let mut text = String::new();
        for i in 0..LINES {
            text.push_str(&format!("2024-01-01T00:00:00.{i:09}Z stdout F line-{i}\n"));
        }
        std::fs::File::create(dir.join("0.log")).unwrap().write_all(text.as_bytes()).unwrap();

        let cfg = LogsConfig {
            enabled: Some(true),
            path: root.path().to_path_buf(),
            kubernetes: false,
            start_at: StartAt::Beginning,
            ..LogsConfig::default()
        };
        const CAP: usize = 64 * 1024;
        const BATCH: usize = 8 * 1024;
        let mut opts = LogsOptions::new("c", "n", data.path());
        opts.max_inflight_bytes = CAP;
        opts.tuning = Tuning {
            block_size: 4096,
            batch_max_bytes: BATCH,
            batch_max_items: 2000,
            batch_max_wait: Duration::from_millis(10),
            poll_interval: Duration::from_millis(50),
            rotate_wait: Duration::from_millis(300),
            checkpoint_interval: Duration::from_millis(50),
            shutdown_ack_wait: Duration::from_millis(200),
        };
        let sink = HoldingSink::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_logs_with(cfg, opts, sink.clone(), Arc::new(PathOnly), shutdown.clone()));

        wait_for("the cap to be reached", || sink.handed().0 >= CAP).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (bytes, entries) = sink.handed();
        assert!(bytes < CAP + 2 * BATCH, "{bytes} bytes handed over without acknowledgement (cap {CAP})");
        assert!(entries < LINES / 4, "reading stopped: {entries} of {LINES} lines");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.handed(), (bytes, entries), "nothing more without acknowledgements");

        wait_for("every line, acknowledging as they come", || {
            sink.release();
            sink.handed().1 >= LINES
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        sink.release();
        assert_eq!(sink.handed().1, LINES, "no loss, no duplicate");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("tailer stops").unwrap();
    }

    #[test]
    fn max_open_files_leaves_a_reserve_below_the_open_files_limit() {
        let rows = [(64, 32), (256, 128), (1024, 768), (65_536, 49_152), (u64::MAX, 12_582_912)];
        for (limit, cap) in rows {
            assert_eq!(open_files_from_limit(limit), cap, "limit {limit}");
        }
        assert_eq!(open_files_from_limit(20), 16, "never below the smallest valid setting");
        assert_eq!(max_open_files(300), 300, "a configured value is taken as it is");
    }

    #[test]
    fn inflight_wakes_the_reader_when_acks_make_room() {
        let (tx, rx) = std_mpsc::channel();
        let f = InFlight::new(100, tx);
        f.add(60);
        assert!(!f.full());
        f.add(60);
        assert!(f.full());
        f.done(10);
        assert!(f.full() && rx.try_recv().is_err(), "still at the cap: no wake");
        f.done(60);
        assert!(!f.full() && matches!(rx.try_recv(), Ok(Wake::Resume)));
        assert_eq!(f.bytes(), 50);
    }
}
