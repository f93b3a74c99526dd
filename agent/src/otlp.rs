//! The trace, metric and log receivers of both modes (OTLP, Jaeger, Zipkin) and what sits behind
//! them for traces:
//! - cluster mode with tail sampling: the sampler, which exports kept traces to Tempo;
//! - daemonset mode with `otlp.forward_traces_to`: the router to the cluster-mode replicas;
//! - otherwise: straight into Tempo's queue.
//!
//! Every listener is bound by [`bind`] before the agent reports ready; one that cannot be bound
//! is an error naming its field (`otlp.http: cannot listen on ...`), and the agent exits 1. Each
//! group of listeners is a component of `lgtm_pipeline::health` (`receiver/otlp`,
//! `receiver/jaeger`, `receiver/zipkin`); one that stops while the agent runs fails `/healthz`.
//!
//! Shutdown order: the receivers stop taking requests first; then the sampler decides what it
//! buffered (or the router drains), so everything reaches the pipeline before it flushes.

use std::sync::Arc;

use anyhow::Context;
use lgtm_config::{Config, Mode};
use lgtm_pipeline::receiver::jaeger::JaegerReceiver;
use lgtm_pipeline::receiver::zipkin::ZipkinReceiver;
use lgtm_pipeline::receiver::{OtlpReceiver, TraceConsumer};
use lgtm_pipeline::route::{RouterOptions, TraceRouter};
use lgtm_pipeline::Pipeline;
use lgtm_statefulset::sampling::TailSampler;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The bound receivers, ready to serve.
pub struct Receivers {
    otlp: Option<OtlpReceiver>,
    jaeger: Option<JaegerReceiver>,
    zipkin: Option<ZipkinReceiver>,
    behind: Option<JoinHandle<()>>,
    behind_stop: CancellationToken,
}

/// Starts the sampler or router (if any) and binds every configured receiver; `None` when `otlp`
/// is off.
pub async fn bind(cfg: &Config, pipeline: &Pipeline) -> anyhow::Result<Option<Receivers>> {
    if !cfg.otlp.enabled() {
        return Ok(None);
    }
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
    let bound = async {
        let otlp = OtlpReceiver::bind(&cfg.otlp, cfg.cluster.clone(), pipeline.clone(), consumer.clone()).await?;
        let jaeger = JaegerReceiver::bind(&cfg.otlp, consumer.clone()).await?;
        let zipkin = ZipkinReceiver::bind(&cfg.otlp, consumer).await?;
        Ok::<_, anyhow::Error>((otlp, jaeger, zipkin))
    }
    .await;
    let (otlp, jaeger, zipkin) = match bound {
        Ok(b) => b,
        Err(e) => {
            behind_stop.cancel();
            return Err(e);
        }
    };
    let otlp_on = otlp.grpc_addr().is_some() || otlp.http_addr().is_some();
    let jaeger_on =
        [jaeger.thrift_compact_addr(), jaeger.thrift_binary_addr(), jaeger.thrift_http_addr(), jaeger.grpc_addr()]
            .iter()
            .any(Option::is_some);
    let zipkin_on = zipkin.addr().is_some();
    Ok(Some(Receivers {
        otlp: otlp_on.then_some(otlp),
        jaeger: jaeger_on.then_some(jaeger),
        zipkin: zipkin_on.then_some(zipkin),
        behind,
        behind_stop,
    }))
}

impl Receivers {
    /// Serves until `stop`, then lets the sampler or router drain.
    pub async fn run(self, stop: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(r) = self.otlp {
            let s = stop.child_token();
            crate::run::supervise(&mut tasks, "receiver/otlp", &stop, async move {
                if let Err(e) = r.run(s).await {
                    tracing::error!(error = %e, "OTLP receiver failed");
                }
            });
        }
        if let Some(r) = self.jaeger {
            let s = stop.child_token();
            crate::run::supervise(&mut tasks, "receiver/jaeger", &stop, async move {
                if let Err(e) = r.run(s).await {
                    tracing::error!(error = %e, "Jaeger receiver failed");
                }
            });
        }
        if let Some(r) = self.zipkin {
            let s = stop.child_token();
            crate::run::supervise(&mut tasks, "receiver/zipkin", &stop, async move {
                if let Err(e) = r.run(s).await {
                    tracing::error!(error = %e, "Zipkin receiver failed");
                }
            });
        }
        // What the receivers took is in the consumer before the sampler or router drains.
        while tasks.join_next().await.is_some() {}
        self.behind_stop.cancel();
        if let Some(task) = self.behind {
            let _ = task.await;
        }
    }
}
