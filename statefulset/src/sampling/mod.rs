//! Tail sampling (cluster mode): spans are held per trace for `decision_wait` after the trace's
//! first span, then the trace is kept or dropped as a whole by the policies of
//! `tail_sampling.policies` ([`policy`]); kept traces go to Tempo through the
//! [`lgtm_pipeline::TracesSink`].
//!
//! Data in: the OTLP receiver hands requests to [`TailSampler`] as its
//! [`TraceConsumer`], still encoded (checked by `lgtm_pipeline::trace_wire`). Data out: a task
//! forwards kept traces, encoded, to a [`TraceOutput`] (the `TracesSink`). Memory is bounded
//! ([`buffer`] explains how): buffered spans stay encoded,
//! bounds decide traces early instead of dropping them, and when the output falls behind the
//! sampler refuses new spans (the receiver answers RESOURCE_EXHAUSTED / 429) rather than
//! growing. At shutdown every buffered trace is decided and forwarded.
//!
//! With several replicas, the daemonset routes every span of a trace to the same replica
//! (`lgtm_pipeline::route`), and `probabilistic` hashes the trace ID, so replicas agree.
//!
//! ```no_run
//! # async fn wire(config: lgtm_config::Config, pipeline: lgtm_pipeline::Pipeline) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lgtm_pipeline::receiver::{self, TraceConsumer};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let (sampler, task) = lgtm_statefulset::sampling::TailSampler::start(
//!     &config.tail_sampling, pipeline.traces.clone(), shutdown.child_token())?;
//! let traces: Arc<dyn TraceConsumer> = sampler;
//! receiver::serve(config.otlp.clone(), config.cluster.clone(), pipeline, traces, shutdown.clone()).await?;
//! task.await?; // returns once the buffered traces were decided and handed over
//! # Ok(()) }
//! ```

pub mod buffer;
mod decisions;
mod metrics;
pub mod policy;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lgtm_config::TailSamplingConfig;
use lgtm_pipeline::receiver::{ConsumeError, TraceConsumer};
use lgtm_pipeline::trace_wire::ValidTraces;
use lgtm_pipeline::TracesSink;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use buffer::{Buffer, Limits};
pub use policy::{Policies, PolicyError};

/// A trace ID as the sampler keys it.
pub type TraceId = [u8; 16];

/// Where kept traces go.
pub trait TraceOutput: Send + Sync + 'static {
    /// Hands over kept spans (an encoded `ExportTraceServiceRequest`), waiting while the next
    /// stage is full.
    fn send(&self, request: ValidTraces) -> impl Future<Output = ()> + Send;
}

impl TraceOutput for TracesSink {
    async fn send(&self, request: ValidTraces) {
        if let Err(e) = TracesSink::send_encoded(self, &request).await {
            // Only a closed queue (the agent is stopping) refuses a waiting send.
            tracing::warn!(error = %e, "kept spans could not be queued for Tempo");
        }
    }
}

/// From the sampler to its output task.
enum Handover {
    Spans(ValidTraces, usize),
    Done,
}

/// How often due decisions are looked for at most (decisions are also made as bounds are hit).
const TICK: Duration = Duration::from_millis(100);

/// The sampler: a [`TraceConsumer`] for the receiver.
pub struct TailSampler {
    buffer: Mutex<Buffer>,
    out: mpsc::UnboundedSender<Handover>,
    /// Set (under the buffer's lock) once the final decisions are made; later spans are refused.
    stopping: AtomicBool,
    /// Bytes handed to the output task and not yet taken by the output.
    out_bytes: Arc<AtomicUsize>,
    max_out_bytes: usize,
}

impl TailSampler {
    /// Compiles the policies and starts the sampler's task: it decides traces as they become due
    /// and forwards kept ones to `output`. On `shutdown` it decides everything buffered, forwards
    /// it, and ends.
    pub fn start<O: TraceOutput>(
        cfg: &TailSamplingConfig,
        output: O,
        shutdown: CancellationToken,
    ) -> Result<(Arc<TailSampler>, JoinHandle<()>), PolicyError> {
        let policies = Policies::compile(&cfg.policies)?;
        Ok(Self::with_limits(policies, Limits::from_config(cfg), output, shutdown))
    }

    /// As [`TailSampler::start`] with explicit limits (tests, benches).
    pub fn with_limits<O: TraceOutput>(
        policies: Policies,
        limits: Limits,
        output: O,
        shutdown: CancellationToken,
    ) -> (Arc<TailSampler>, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let max_out_bytes = (limits.max_buffer_bytes / 4).max(1 << 20);
        let sampler = Arc::new(TailSampler {
            buffer: Mutex::new(Buffer::new(policies, limits)),
            out: tx,
            stopping: AtomicBool::new(false),
            out_bytes: Arc::new(AtomicUsize::new(0)),
            max_out_bytes,
        });
        let forward = tokio::spawn(
            forward(rx, output, sampler.out_bytes.clone()).instrument(tracing::info_span!("sampling_output")),
        );
        let decide = tokio::spawn(
            decide_loop(sampler.clone(), shutdown, forward).instrument(tracing::info_span!("tail_sampling")),
        );
        (sampler, decide)
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding the lock leaves consistent-enough state (counters may be off);
        // keep sampling rather than poisoning the receiver.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, out: buffer::Outcome) {
        metrics::record(&out);
        if let Some(req) = out.export {
            let size = req.as_bytes().len();
            self.out_bytes.fetch_add(size, Ordering::Relaxed);
            if self.out.send(Handover::Spans(req, size)).is_err() {
                self.out_bytes.fetch_sub(size, Ordering::Relaxed);
                tracing::warn!("sampler output stopped; kept spans discarded");
            }
        }
    }

    fn gauges(&self, buffer: &Buffer) {
        let m = metrics::sampling();
        m.buffered.set(buffer.buffered_traces() as i64);
        m.buffer_bytes.set(buffer.buffered_bytes() as i64);
        m.buffered_spans.set(buffer.buffered_spans() as i64);
    }

    /// Traces and bytes buffered now.
    pub fn buffered(&self) -> (usize, usize) {
        let b = self.lock();
        (b.buffered_traces(), b.buffered_bytes())
    }
}

impl TraceConsumer for TailSampler {
    /// A decoded request (OTLP/JSON, Jaeger): encoded, then as [`TailSampler::consume_encoded`].
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        match ValidTraces::parse(request.encode_to_vec().into()) {
            Ok(request) => self.consume_encoded(request),
            // prost's own encoding is what `parse` takes: not expected.
            Err(e) => Err(ConsumeError::Unavailable(format!("an encoded request does not check: {e}"))),
        }
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    fn consume_encoded(&self, request: ValidTraces) -> Result<(), ConsumeError> {
        if request.as_bytes().len() > buffer::MAX_REQUEST_BYTES {
            return Err(ConsumeError::Unavailable("a request of 4 GiB or more is not sampled".into()));
        }
        if self.out_bytes.load(Ordering::Relaxed) > self.max_out_bytes {
            return Err(ConsumeError::Busy("kept traces wait for the Tempo queue".into()));
        }
        let out = {
            let mut b = self.lock();
            if self.stopping.load(Ordering::Relaxed) {
                return Err(ConsumeError::Unavailable("the tail sampler has stopped".into()));
            }
            let out = b.ingest(request, Instant::now());
            self.gauges(&b);
            out
        };
        self.emit(out);
        Ok(())
    }
}

async fn decide_loop(sampler: Arc<TailSampler>, shutdown: CancellationToken, forward: JoinHandle<()>) {
    loop {
        let next = sampler.lock().next_due();
        let wait = next
            .map_or(TICK, |due| due.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(5), TICK));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
        let out = {
            let mut b = sampler.lock();
            let out = b.decide_due(Instant::now());
            sampler.gauges(&b);
            out
        };
        sampler.emit(out);
    }
    let out = {
        let mut b = sampler.lock();
        sampler.stopping.store(true, Ordering::Relaxed);
        let out = b.decide_all(Instant::now());
        sampler.gauges(&b);
        out
    };
    let decided = out.decided.len();
    sampler.emit(out);
    tracing::info!(traces = decided, "tail sampler stopped; buffered traces decided");
    // The output task ends once it handed over everything before this.
    let _ = sampler.out.send(Handover::Done);
    let _ = forward.await;
}

async fn forward<O: TraceOutput>(mut rx: mpsc::UnboundedReceiver<Handover>, output: O, out_bytes: Arc<AtomicUsize>) {
    while let Some(Handover::Spans(req, size)) = rx.recv().await {
        output.send(req).await;
        out_bytes.fetch_sub(size, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod buffer_reference;
#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod tests;
