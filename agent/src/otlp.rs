//! The OTLP receivers of both modes and what sits behind them for traces:
//! - cluster mode with tail sampling: the sampler, which exports kept traces to Tempo;
//! - daemonset mode with `otlp.forward_traces_to`: the router to the cluster-mode replicas;
//! - otherwise: straight into Tempo's queue.
//!
//! The Jaeger (`otlp.jaeger.*`) and Zipkin (`otlp.zipkin`) receivers feed the same consumer. One
//! of them failing to bind is logged and leaves the others running (as the OTLP receivers do).
//!
//! Shutdown order: the receivers stop taking requests first; then the sampler decides what it
//! buffered (or the router drains), so everything reaches the pipeline before it flushes.

use std::sync::Arc;

use anyhow::Context;
use lgtm_config::{Config, Mode};
use lgtm_pipeline::receiver::jaeger::JaegerReceiver;
use lgtm_pipeline::receiver::zipkin::ZipkinReceiver;
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
    let others = start_jaeger_and_zipkin(&cfg, consumer.clone(), stop.clone()).await;
    let served = receiver::serve(cfg.otlp.clone(), cfg.cluster.clone(), pipeline, consumer, stop).await;
    if let Err(e) = &served {
        // Said now: the Jaeger and Zipkin receivers may run on until shutdown.
        tracing::error!(error = %e, "OTLP receiver failed");
    }
    // The Jaeger and Zipkin receivers stop with the same token; what they took is in the consumer
    // before the sampler or router drains.
    for task in others {
        let _ = task.await;
    }
    behind_stop.cancel();
    if let Some(task) = behind {
        let _ = task.await;
    }
    Ok(())
}

/// Binds and starts the Jaeger and Zipkin receivers (when `otlp` is enabled); returns their tasks.
async fn start_jaeger_and_zipkin(
    cfg: &Config,
    consumer: Arc<dyn TraceConsumer>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if !cfg.otlp.enabled() {
        return tasks;
    }
    match JaegerReceiver::bind(&cfg.otlp, consumer.clone()).await {
        Ok(jaeger) => {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = jaeger.run(stop).await {
                    tracing::error!(error = %e, "Jaeger receiver failed");
                }
            }));
        }
        Err(e) => tracing::error!(error = %e, "Jaeger receivers not started"),
    }
    match ZipkinReceiver::bind(&cfg.otlp, consumer).await {
        Ok(zipkin) => tasks.push(tokio::spawn(async move {
            if let Err(e) = zipkin.run(stop).await {
                tracing::error!(error = %e, "Zipkin receiver failed");
            }
        })),
        Err(e) => tracing::error!(error = %e, "Zipkin receiver not started"),
    }
    tasks
}
