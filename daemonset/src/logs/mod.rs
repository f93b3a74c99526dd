//! The pod log tailer: `/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log` to Loki.
//!
//! Data comes in from the files (read on a dedicated thread, [`tailer`]), goes out as encoded
//! `PushRequest`s through a [`LogBatchSink`] (the pipeline's [`LogsSink`] in the agent), and the
//! acknowledgements come back to advance the on-disk checkpoints ([`checkpoint`]): a file's
//! position moves only when Loki accepted (or definitively refused) every line before it, so a
//! restart or an outage loses nothing; at worst the unacknowledged tail is sent again.
//!
//! Backpressure: the reading thread hands batches over a channel of two; when the pipeline's
//! queue is full, `send` waits, the channel fills and the thread stops reading. The files are the
//! buffer.
//!
//! Kubernetes enrichment is a seam: [`PodMetadata`] (the reflector of this node's pods implements
//! it later); with `kubernetes: false` labels come from the path alone ([`PathOnly`]).

pub mod batch;
pub mod checkpoint;
pub mod cri;
pub mod discovery;
pub mod docker;
pub mod format;
pub mod identity;
pub mod labels;
pub mod metrics;
pub mod path;
pub mod reader;
mod tailer;
pub mod timefmt;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    pub tuning: Tuning,
}

impl LogsOptions {
    pub fn new(cluster: impl Into<String>, node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> LogsOptions {
        LogsOptions {
            cluster: cluster.into(),
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            tuning: Tuning::default(),
        }
    }
}

/// Knobs that are not part of the user's config; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Bytes per read.
    pub block_size: usize,
    /// A batch goes out at this many encoded bytes...
    pub batch_max_bytes: usize,
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
            batch_max_wait: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            rotate_wait: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(1),
            shutdown_ack_wait: Duration::from_secs(2),
        }
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
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<(u64, Vec<FileKey>, Ack)>();

    let settings = Settings {
        root: cfg.path.clone(),
        max_line: cfg.max_line_size.bytes().clamp(1, usize::MAX as u64) as usize,
        start_at: cfg.start_at,
        rescan_interval: cfg.rescan_interval.get().max(Duration::from_millis(10)),
        tuning: opts.tuning.clone(),
    };
    let node = NodeLabels { cluster: opts.cluster.clone(), node: opts.node_name.clone() };
    let filters = Filters::new(&cfg);
    let reader_stop = shutdown.clone();
    let (reg, st) = (registry.clone(), store.clone());
    let reader = std::thread::Builder::new().name("logs-tailer".into()).spawn(move || {
        let _span = tracing::info_span!("logs-tailer").entered();
        Tailer::new(settings, node, filters, metadata, st, reg, batch_tx).run(reader_stop)
    });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the log tailer thread");
            return;
        }
    };
    let sender = tokio::spawn(
        send_loop(sink, batch_rx, ack_tx, shutdown.clone()).instrument(tracing::info_span!("logs-sender")),
    );
    let acker = tokio::spawn(
        ack_loop(ack_rx, registry.clone(), shutdown.clone(), opts.tuning.shutdown_ack_wait)
            .instrument(tracing::info_span!("logs-acks")),
    );

    shutdown.cancelled().await;
    // The sender stops and drops its receiver, which unblocks a reader waiting on backpressure.
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

/// Hands batches to the sink in order; retries errors (the data is still in the files) until
/// shutdown.
async fn send_loop<S: LogBatchSink>(
    sink: S,
    mut rx: mpsc::Receiver<Batch>,
    acks: mpsc::UnboundedSender<(u64, Vec<FileKey>, Ack)>,
    shutdown: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            b = rx.recv() => match b { Some(b) => b, None => return },
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let res = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = sink.send_batch(batch.payload.clone(), batch.entries) => r,
            };
            match res {
                Ok(ack) => {
                    let _ = acks.send((batch.seq, batch.files, ack));
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
}

/// Awaits acknowledgements in any order and advances the files' checkpoints. After `shutdown`
/// it keeps going for at most `grace`, for batches already handed over.
async fn ack_loop(
    mut rx: mpsc::UnboundedReceiver<(u64, Vec<FileKey>, Ack)>,
    registry: Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut inflight = FuturesUnordered::new();
    let mut rx_open = true;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    loop {
        if !rx_open && inflight.is_empty() {
            return;
        }
        tokio::select! {
            m = rx.recv(), if rx_open => match m {
                Some((seq, files, ack)) => inflight.push(async move { (seq, files, ack.outcome().await) }),
                None => rx_open = false,
            },
            Some((seq, files, outcome)) = inflight.next(), if !inflight.is_empty() => {
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
