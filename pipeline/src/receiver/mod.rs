//! OTLP receivers: gRPC on `otlp.grpc` (default `0.0.0.0:4317`) and HTTP on `otlp.http` (default
//! `0.0.0.0:4318`), for traces, metrics and logs.
//!
//! Where the data goes:
//! - spans to a [`TraceConsumer`]: the [`crate::TracesSink`] (Tempo) by default, the tail sampler
//!   in cluster mode, the trace-ID router ([`crate::route`]) in daemonset mode;
//! - metrics to the [`crate::MetricsSink`] as remote-write series ([`prometheus`] documents the
//!   OTel-to-Prometheus mapping: names, `job`/`instance`, `target_info`, what is dropped);
//! - logs to the [`crate::LogsSink`] as Loki streams ([`loki`] documents labels and structured
//!   metadata).
//!
//! What clients are told ([`grpc`], [`http`] for details): a request that cannot be read is
//! refused (INVALID_ARGUMENT / 400) and counted in `lgtm_agent_otlp_rejected_total{signal,reason}`
//! — never a crash; a request over `otlp.max_request_size`, compressed or not, is refused; when the
//! next stage is full the answer is RESOURCE_EXHAUSTED with RetryInfo / 429 with `Retry-After`,
//! so the backpressure reaches the instrumented application. Items taken are counted in
//! `lgtm_agent_otlp_received_total{signal,transport}`.
//!
//! ```no_run
//! # async fn wire(config: lgtm_config::Config, pipeline: lgtm_pipeline::Pipeline) -> Result<(), lgtm_pipeline::receiver::ReceiverError> {
//! use std::sync::Arc;
//! use lgtm_pipeline::receiver::{self, TraceConsumer};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let traces: Arc<dyn TraceConsumer> = Arc::new(pipeline.traces.clone());
//! receiver::serve(config.otlp.clone(), config.cluster.clone(), pipeline, traces, shutdown).await
//! # }
//! ```

mod body;
mod consumer;
pub mod grpc;
pub mod http;
mod intake;
pub mod jaeger;
pub mod logs_parts;
pub mod loki;
mod metrics;
pub mod metrics_parts;
pub mod otlp_json;
pub mod prometheus;
pub mod serve;
mod skim;
mod status;
mod wire;
pub mod zipkin;

use std::net::SocketAddr;
use std::sync::Arc;

use lgtm_config::{OtlpConfig, ReceiverLimits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use consumer::{span_count, ConsumeError, TraceConsumer};
pub use intake::RETRY_AFTER;

use crate::sink::Pipeline;
use intake::Intake;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("otlp.{transport}: cannot listen on {addr}: {error}")]
    Bind { transport: &'static str, addr: String, error: std::io::Error },
    #[error("OTLP/gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("OTLP/HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Binds the listeners of `cfg` and serves both transports until `shutdown` is cancelled; then
/// stops taking connections, lets requests in flight finish, and returns `Ok(())`.
///
/// - `cluster`: the agent's `cluster`, put on every log stream (metrics and spans get it from
///   their sinks).
/// - `pipeline`: metrics and logs go to `pipeline.metrics` / `pipeline.logs`.
/// - `traces`: where spans go (usually `Arc::new(pipeline.traces.clone())`, or the sampler or
///   router).
///
/// An empty `grpc` or `http` address turns that transport off; with both empty, or with
/// `enabled: Some(false)`, it returns `Ok(())` at once. Errors: an address that cannot be bound
/// (at start), or a server failing.
pub async fn serve(
    cfg: OtlpConfig,
    cluster: String,
    pipeline: Pipeline,
    traces: Arc<dyn TraceConsumer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    if cfg.enabled == Some(false) {
        return Ok(());
    }
    OtlpReceiver::bind(&cfg, cluster, pipeline, traces).await?.run(shutdown).await
}

/// The receiver in two steps: [`OtlpReceiver::bind`] (so the bound addresses are known, e.g. with
/// port 0 in tests) then [`OtlpReceiver::run`].
pub struct OtlpReceiver {
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    intake: Arc<Intake>,
    limits: ReceiverLimits,
}

impl OtlpReceiver {
    pub async fn bind(
        cfg: &OtlpConfig,
        cluster: String,
        pipeline: Pipeline,
        traces: Arc<dyn TraceConsumer>,
    ) -> Result<OtlpReceiver, ReceiverError> {
        let grpc = listen("grpc", &cfg.grpc).await?;
        let http = listen("http", &cfg.http).await?;
        let max_request_size = usize::try_from(cfg.max_request_size.bytes()).unwrap_or(usize::MAX);
        body::set_in_flight_budget(cfg.limits.max_in_flight_bytes.bytes());
        let intake = Arc::new(Intake { cluster, pipeline, traces, max_request_size });
        Ok(OtlpReceiver { grpc, http, intake, limits: cfg.limits.clone() })
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ReceiverError> {
        let grpc = self.grpc.map(|listener| {
            let intake = self.intake.clone();
            let stop = shutdown.clone();
            let limits = self.limits.clone();
            tokio::spawn(async move {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(addr, "OTLP/gRPC receiver listening");
                serve::grpc_server(&limits)
                    .add_service(grpc::ExportService::<grpc::Traces>::new(intake.clone()))
                    .add_service(grpc::ExportService::<grpc::Metrics>::new(intake.clone()))
                    .add_service(grpc::ExportService::<grpc::Logs>::new(intake))
                    .serve_with_incoming_shutdown(
                        serve::grpc_incoming(listener, &limits, "otlp_grpc"),
                        stop.cancelled_owned(),
                    )
                    .await
                    .map_err(ReceiverError::Grpc)
            })
        });
        let http = self.http.map(|listener| {
            let router = http::router(self.intake.clone());
            let stop = shutdown.clone();
            let limits = self.limits.clone();
            tokio::spawn(async move {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(addr, "OTLP/HTTP receiver listening");
                serve::serve_http(listener, router, limits, "otlp_http", stop).await.map_err(ReceiverError::Http)
            })
        });
        let mut result = Ok(());
        for task in [grpc, http].into_iter().flatten() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // One transport failing stops the other: the agent decides what to do.
                    shutdown.cancel();
                    result = result.and(Err(e));
                }
                Err(join) => {
                    shutdown.cancel();
                    result = result.and(Err(ReceiverError::Http(std::io::Error::other(join.to_string()))));
                }
            }
        }
        result
    }
}

async fn listen(transport: &'static str, addr: &str) -> Result<Option<TcpListener>, ReceiverError> {
    if addr.trim().is_empty() {
        return Ok(None);
    }
    let bind_error = |error| ReceiverError::Bind { transport, addr: addr.to_string(), error };
    TcpListener::bind(addr).await.map(Some).map_err(bind_error)
}

#[cfg(test)]
mod tests;
