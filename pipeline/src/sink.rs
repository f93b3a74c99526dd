//! The sources' side of the pipeline: typed sinks that encode a batch into a queue record.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lgtm_config::{Config, ExporterConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ack::{Ack, Delivery};
use crate::exporter::{self, Signal};
use crate::metrics;
use crate::proto::{Label, PushRequest, StreamAdapter, TimeSeries, WriteRequest};
use crate::queue::{DurableQueue, PushError, QueueError, QueueOptions};
use crate::trace_wire::ValidTraces;

/// Why a batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `try_send` only: the queue is full; the source should back off (OTLP answers 429).
    #[error("queue {0} is full")]
    Full(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One exporter's entry point: its queue, or nothing when the exporter is disabled.
#[derive(Clone)]
struct Lane {
    name: &'static str,
    queue: Option<DurableQueue>,
}

impl Lane {
    /// Counted as received once the queue (or the disabled-exporter discard) took it, as in
    /// `try_push`: a push that fails is the caller's to retry, not an item received twice.
    async fn push(&self, payload: Bytes, items: u32) -> Result<Ack, SendError> {
        let (tx, ack) = Ack::pair();
        match &self.queue {
            Some(q) => q.push(payload, items, Some(tx)).await?,
            None => {
                metrics::pipeline().dropped.with_label_values(&[self.name, "disabled"]).inc_by(items as u64);
                tx.resolve(Delivery::Discarded);
            }
        }
        metrics::pipeline().received.with_label_values(&[self.name]).inc_by(items as u64);
        Ok(ack)
    }

    fn try_push(&self, payload: Bytes, items: u32) -> Result<Ack, SendError> {
        let (tx, ack) = Ack::pair();
        match &self.queue {
            Some(q) => match q.try_push(payload, items, Some(tx)) {
                Ok(()) => {}
                Err(PushError::Full(_)) => return Err(SendError::Full(self.name.into())),
                Err(PushError::Other(e)) => return Err(e.into()),
            },
            None => {
                metrics::pipeline().dropped.with_label_values(&[self.name, "disabled"]).inc_by(items as u64);
                tx.resolve(Delivery::Discarded);
            }
        }
        metrics::pipeline().received.with_label_values(&[self.name]).inc_by(items as u64);
        Ok(ack)
    }
}

/// Metrics to Mimir. Adds the `cluster` label to every series that lacks one (as Prometheus's
/// `external_labels`) and sorts labels, as remote write requires.
#[derive(Clone)]
pub struct MetricsSink {
    lane: Lane,
    /// Shared by every clone: a sink is held by every scrape loop's task for its whole life.
    shared: Arc<MetricsShared>,
}

struct MetricsShared {
    external: Vec<Label>,
    /// The remote-write exporter's shards when sources may group their records by shard
    /// ([`crate::exporter::remote_write::routed`]); 0: plain records.
    route_shards: usize,
}

impl MetricsSink {
    pub async fn send(&self, series: Vec<TimeSeries>) -> Result<Ack, SendError> {
        let (payload, items) = self.encode(series);
        self.lane.push(payload, items).await
    }

    pub fn try_send(&self, series: Vec<TimeSeries>) -> Result<Ack, SendError> {
        let (payload, items) = self.encode(series);
        self.lane.try_push(payload, items)
    }

    /// As `try_send`, the record queued compressed ([`crate::queue::compressed`]): for series
    /// converted from a much smaller form (the OTLP receivers: a tiny data point's series repeats
    /// its labels).
    pub fn try_send_compressed(&self, series: Vec<TimeSeries>) -> Result<Ack, SendError> {
        let (payload, items) = self.encode(series);
        let payload = crate::queue::compressed(&payload).unwrap_or(payload);
        self.lane.try_push(payload, items)
    }

    /// Queues an already encoded `WriteRequest` whose series carry their final labels.
    pub async fn send_encoded(&self, write_request: Bytes, samples: u32) -> Result<Ack, SendError> {
        self.lane.push(write_request, samples).await
    }

    /// The shard count a source may group the series of an encoded `WriteRequest` for
    /// ([`crate::exporter::remote_write::routed`]) before [`MetricsSink::send_encoded`]; 0 when
    /// it should not (one shard, no remote-write exporter). An exporter with another count
    /// (replaced on a config reload) routes such records series by series, as plain ones.
    pub fn route_shards(&self) -> usize {
        self.shared.route_shards
    }

    /// The labels added to every series.
    pub fn external_labels(&self) -> &[Label] {
        &self.shared.external
    }

    fn encode(&self, mut series: Vec<TimeSeries>) -> (Bytes, u32) {
        let mut items = 0u32;
        for s in series.iter_mut() {
            for ext in self.shared.external.iter() {
                if !s.labels.iter().any(|l| l.name == ext.name) {
                    s.labels.push(ext.clone());
                }
            }
            s.labels.sort_by(|a, b| a.name.cmp(&b.name));
            items += s.samples.len() as u32;
        }
        let req = WriteRequest { timeseries: series };
        (Bytes::from(req.encode_to_vec()), items)
    }
}

/// Log streams to Loki. Streams' `labels` are the final selector text; the source puts `cluster`
/// there (see [`crate::proto::loki_labels_string`]).
#[derive(Clone)]
pub struct LogsSink {
    lane: Lane,
}

impl LogsSink {
    pub async fn send(&self, streams: Vec<StreamAdapter>) -> Result<Ack, SendError> {
        let items = streams.iter().map(|s| s.entries.len() as u32).sum();
        let payload = Bytes::from(PushRequest { streams }.encode_to_vec());
        self.lane.push(payload, items).await
    }

    /// As `send`, the record queued compressed ([`crate::queue::compressed`]): for entries
    /// converted from a much smaller form (the OTLP receivers: a tiny record's entry repeats its
    /// timestamp).
    pub async fn send_compressed(&self, streams: Vec<StreamAdapter>) -> Result<Ack, SendError> {
        let items = streams.iter().map(|s| s.entries.len() as u32).sum();
        let payload = PushRequest { streams }.encode_to_vec();
        let payload = crate::queue::compressed(&payload).unwrap_or_else(|| Bytes::from(payload));
        self.lane.push(payload, items).await
    }

    /// Queues an already encoded `PushRequest` (the tailer builds its protobuf directly).
    pub async fn send_encoded(&self, push_request: Bytes, entries: u32) -> Result<Ack, SendError> {
        self.lane.push(push_request, entries).await
    }
}

/// Spans to Tempo, queued as they came: the Tempo exporter adds `k8s.cluster.name` to every
/// resource that lacks it when it sends them (a value the client set wins over the agent's
/// `cluster`; [`crate::trace_wire::resource_attribute_parts`]), so a request is not copied here.
/// Spans still queued (on disk) when `cluster` changes go out with the new value; records queued
/// by earlier versions carry the attribute already and get no second one.
#[derive(Clone)]
pub struct TracesSink {
    lane: Lane,
}

impl TracesSink {
    pub async fn send(&self, req: ExportTraceServiceRequest) -> Result<Ack, SendError> {
        let (payload, items) = encode(&req);
        self.lane.push(payload, items).await
    }

    /// As `send`, but answers [`SendError::Full`] instead of waiting (receivers answer
    /// RESOURCE_EXHAUSTED / 429).
    pub fn try_send(&self, req: ExportTraceServiceRequest) -> Result<Ack, SendError> {
        let (payload, items) = encode(&req);
        self.lane.try_push(payload, items)
    }

    /// As `try_send` for a request still encoded: queued as it is, not copied.
    pub fn try_send_encoded(&self, req: &ValidTraces) -> Result<Ack, SendError> {
        self.lane.try_push(req.as_bytes().clone(), u32::try_from(req.spans()).unwrap_or(u32::MAX))
    }

    /// As `send` for a request still encoded (the tail sampler's kept spans): waits while the
    /// queue is full.
    pub async fn send_encoded(&self, req: &ValidTraces) -> Result<Ack, SendError> {
        self.lane.push(req.as_bytes().clone(), u32::try_from(req.spans()).unwrap_or(u32::MAX)).await
    }
}

fn encode(req: &ExportTraceServiceRequest) -> (Bytes, u32) {
    let items = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u32).sum();
    (Bytes::from(req.encode_to_vec()), items)
}

/// The three sinks, cheap to clone into every source.
#[derive(Clone)]
pub struct Pipeline {
    pub metrics: MetricsSink,
    pub logs: LogsSink,
    pub traces: TracesSink,
}

/// Owns the exporter tasks; [`PipelineHandle::shutdown`] drains them.
pub struct PipelineHandle {
    exporters: Vec<RunningExporter>,
    stop: CancellationToken,
    /// Cancelled when shutdown begins: exporters ending after that are expected to.
    closing: CancellationToken,
}

/// One exporter task on its queue.
struct RunningExporter {
    signal: Signal,
    queue: DurableQueue,
    /// A child of the pipeline's `stop`: ends this exporter alone (records in flight go back).
    stop: CancellationToken,
    /// Cancelled when this exporter is being replaced: its ending is expected.
    retiring: CancellationToken,
    task: JoinHandle<()>,
}

impl Pipeline {
    /// Opens the queues under `config.data_dir` (replaying what a previous run left) and starts the
    /// exporters.
    pub fn start(config: &Config) -> Result<(Pipeline, PipelineHandle), QueueError> {
        let stop = CancellationToken::new();
        let mut handle =
            PipelineHandle { exporters: Vec::new(), stop: stop.clone(), closing: CancellationToken::new() };
        let ex = &config.exporters;
        let metrics = open_lane(config, Signal::Metrics, &ex.mimir, &mut handle)?;
        let logs = open_lane(config, Signal::Logs, &ex.loki, &mut handle)?;
        let traces = open_lane(config, Signal::Traces, &ex.tempo, &mut handle)?;
        let pipeline = Pipeline {
            metrics: MetricsSink {
                lane: metrics,
                shared: Arc::new(MetricsShared {
                    external: vec![Label::new("cluster", &config.cluster)],
                    route_shards: route_shards(&ex.mimir),
                }),
            },
            logs: LogsSink { lane: logs },
            traces: TracesSink { lane: traces },
        };
        Ok((pipeline, handle))
    }
}

/// See [`MetricsSink::route_shards`].
fn route_shards(ex: &ExporterConfig) -> usize {
    let routed = ex.enabled && !ex.console && (2..=exporter::remote_write::routed::MAX_SHARDS).contains(&ex.shards);
    if routed {
        ex.shards
    } else {
        0
    }
}

fn open_lane(
    config: &Config,
    signal: Signal,
    ex: &ExporterConfig,
    handle: &mut PipelineHandle,
) -> Result<Lane, QueueError> {
    let name = signal.exporter_name();
    if !ex.enabled {
        return Ok(Lane { name, queue: None });
    }
    let max_disk = if ex.console { 0 } else { ex.queue.max_disk().bytes() };
    let queue = DurableQueue::open(QueueOptions {
        name: name.into(),
        dir: (max_disk > 0).then(|| queue_dir(&config.data_dir, name)),
        max_memory: ex.queue.max_memory().bytes(),
        max_disk,
        when_full: ex.queue.when_full,
    })?;
    let running = handle.spawn_exporter(signal, ex, config.tenant_of(ex), &config.cluster, queue.clone());
    handle.exporters.push(running);
    Ok(Lane { name, queue: Some(queue) })
}

/// `data_dir/queue/<exporter>`.
pub fn queue_dir(data_dir: &Path, exporter: &str) -> std::path::PathBuf {
    data_dir.join("queue").join(exporter)
}

impl PipelineHandle {
    /// Starts the exporter of `signal` on `queue`, watched: ending (or panicking) before
    /// shutdown or its replacement fails `/healthz`.
    fn spawn_exporter(
        &self,
        signal: Signal,
        ex: &ExporterConfig,
        tenant: &str,
        cluster: &str,
        queue: DurableQueue,
    ) -> RunningExporter {
        let name = signal.exporter_name();
        let health = crate::health::component(&format!("exporter/{name}"));
        if ex.console {
            // Nothing to set up: it writes to stdout. (Registering the component again after
            // this would put it back to starting: `/readyz` stayed 503 with a console exporter.)
            health.running();
        }
        let stop = self.stop.child_token();
        let retiring = CancellationToken::new();
        let task = exporter::spawn(signal, ex, tenant.to_string(), cluster.to_string(), queue.clone(), stop.clone());
        // An exporter ends when its queue is closed (shutdown). Ending before that, or panicking,
        // leaves its signal undelivered for good: `/healthz` fails so that the pod is restarted.
        let (closing, replaced) = (self.closing.clone(), retiring.clone());
        let task = tokio::spawn(async move {
            let outcome = task.await;
            if closing.is_cancelled() || replaced.is_cancelled() {
                return;
            }
            let why = match outcome {
                Ok(()) => "the exporter task ended".to_string(),
                Err(e) => format!("the exporter task failed: {e}"),
            };
            tracing::error!(exporter = name, "{why}; nothing more is sent");
            health.died(why);
        });
        RunningExporter { signal, queue, stop, retiring, task }
    }

    /// Replaces the exporter of `signal` with one set up from `config` (a config reload), on the
    /// same queue: the old one stops taking batches ([`DurableQueue::pause_readers`]) and
    /// finishes the requests it has in flight for up to `grace` (then it is stopped and hands
    /// them back); the new one goes on from the first record not completed. What is queued
    /// stays queued, in memory and on disk; what the old one sent is not sent again. The
    /// sources keep pushing meanwhile. `false` when that exporter does not run (disabled): the
    /// caller must restart the pipeline.
    pub async fn restart_exporter(&mut self, signal: Signal, config: &Config, grace: Duration) -> bool {
        let ex = match signal {
            Signal::Metrics => &config.exporters.mimir,
            Signal::Logs => &config.exporters.loki,
            Signal::Traces => &config.exporters.tempo,
        };
        let Some(at) = self.exporters.iter().position(|e| e.signal == signal) else { return false };
        if !ex.enabled {
            return false;
        }
        let mut old = self.exporters.remove(at);
        old.retiring.cancel();
        old.queue.pause_readers();
        if tokio::time::timeout(grace, &mut old.task).await.is_err() {
            tracing::warn!(exporter = signal.exporter_name(), grace = %format!("{}s", grace.as_secs_f64()), "the replaced exporter did not finish within the grace period; its requests in flight go back to the queue");
            old.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut old.task).await;
        }
        old.queue.resume_readers();
        let running = self.spawn_exporter(signal, ex, config.tenant_of(ex), &config.cluster, old.queue.clone());
        self.exporters.insert(at, running);
        true
    }

    /// Stops taking new batches, lets the exporters deliver what is queued for up to `grace`, then
    /// stops them and persists what is left for the next start.
    pub async fn shutdown(self, grace: Duration) {
        self.closing.cancel();
        let queues: Vec<DurableQueue> = self.exporters.iter().map(|e| e.queue.clone()).collect();
        for q in &queues {
            q.close();
        }
        let mut tasks: Vec<JoinHandle<()>> = self.exporters.into_iter().map(|e| e.task).collect();
        let drained = tokio::time::timeout(grace, futures::future::join_all(tasks.iter_mut())).await;
        if drained.is_err() {
            tracing::warn!(grace = %format!("{}s", grace.as_secs_f64()), "exporters did not drain within the grace period; the rest stays queued");
            self.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(tasks.iter_mut())).await;
        }
        for q in &queues {
            if let Err(e) = q.persist() {
                tracing::error!(error = %e, "persisting the queue failed");
            }
        }
    }

    /// The exporters' queues (for gauges and status pages).
    pub fn queues(&self) -> Vec<DurableQueue> {
        self.exporters.iter().map(|e| e.queue.clone()).collect()
    }

    /// Updates the queue gauges; the agent calls it before rendering `/metrics`.
    pub fn update_gauges(&self) {
        for e in &self.exporters {
            export_queue_gauges(&e.queue);
        }
    }
}

/// Sets `lgtm_agent_queue_*` for one queue.
pub fn export_queue_gauges(q: &DurableQueue) {
    let s = q.stats();
    let m = metrics::pipeline();
    m.queue_bytes.with_label_values(&[q.name(), "memory"]).set(s.memory_bytes as i64);
    m.queue_bytes.with_label_values(&[q.name(), "disk"]).set(s.disk_bytes as i64);
    m.queue_records.with_label_values(&[q.name()]).set(s.records as i64);
    m.queue_oldest_age.with_label_values(&[q.name()]).set(s.oldest_age.as_secs_f64());
}
