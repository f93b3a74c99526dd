//! The OTLP receivers of both modes and what sits behind them for traces:
//! - cluster mode with tail sampling: the sampler, which exports kept traces to Tempo;
//! - daemonset mode with `otlp.forward_traces_to`: the router to the cluster-mode replicas;
//! - otherwise: straight into Tempo's queue.
//!
//! Shutdown order: the receivers stop taking requests first; then the sampler decides what it
//! buffered (or the router drains), so everything reaches the pipeline before it flushes.

use std::sync::Arc;

use anyhow::Context;
use lgtm_config::{Config, Mode};
use lgtm_pipeline::receiver::{self, TraceConsumer};
use lgtm_pipeline::route::{RouterOptions, TraceRouter};
use lgtm_pipeline::Pipeline;
use lgtm_statefulset::sampling::TailSampler;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs until `stop` is cancelled, then drains in order.
pub async fn run(cfg: Config, pipeline: Pipeline, stop: CancellationToken) {
    if let Err(e) = run_inner(cfg, pipeline, stop).await {
        tracing::error!(error = format!("{e:#}"), "OTLP receiver failed");
    }
}

async fn run_inner(cfg: Config, pipeline: Pipeline, stop: CancellationToken) -> anyhow::Result<()> {
    let behind_stop = CancellationToken::new();
    let (consumer, behind): (Arc<dyn TraceConsumer>, Option<JoinHandle<()>>) =
        if cfg.mode() == Mode::Cluster && cfg.tail_sampling.enabled() {
            let (sampler, task) = TailSampler::start(&cfg.tail_sampling, pipeline.traces.clone(), behind_stop.clone())
                .context("tail_sampling.policies")?;
            tracing::info!(policies = cfg.tail_sampling.policies.len(), "tail sampling in front of Tempo");
            (sampler, Some(task))
        } else if cfg.mode() == Mode::Daemonset && !cfg.otlp.forward_traces_to.is_empty() {
            let (router, task) =
                TraceRouter::start(RouterOptions::new(cfg.otlp.forward_traces_to.clone()), behind_stop.clone())
                    .context("otlp.forward_traces_to")?;
            tracing::info!(to = %cfg.otlp.forward_traces_to, "traces routed to the cluster-mode replicas by trace ID");
            (router, Some(task))
        } else {
            (Arc::new(pipeline.traces.clone()), None)
        };
    let served = receiver::serve(cfg.otlp.clone(), cfg.cluster.clone(), pipeline, consumer, stop).await;
    behind_stop.cancel();
    if let Some(task) = behind {
        let _ = task.await;
    }
    served.context("otlp receiver")?;
    Ok(())
}
