//! Exporters: each one drains its queue, sends batches to its backend, and reports every record's
//! outcome back to the queue.
//!
//! - [`remote_write`]: Prometheus remote write 1.0 to Mimir, parallel shards keyed by series hash.
//! - [`loki`]: Loki push (protobuf + snappy).
//! - [`otlp`]: OTLP/gRPC `TraceService/Export` to Tempo.
//! - [`console`]: prints what would be shipped (the local demo).

pub mod console;
pub mod credentials;
mod grpc_call;
pub mod http;
pub mod loki;
mod loki_limits;
mod loki_wire;
pub mod otlp;
pub mod outcome;
pub mod remote_write;
pub mod retry;
#[cfg(test)]
mod testing;
mod trace_split;

use lgtm_config::{Config, ExporterConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::DurableQueue;

/// Which backend a lane feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    /// The `exporter` label value.
    pub fn exporter_name(self) -> &'static str {
        match self {
            Signal::Metrics => "mimir",
            Signal::Logs => "loki",
            Signal::Traces => "tempo",
        }
    }
}

/// Starts the exporter task of `signal`. It runs until the queue is closed and drained, or until
/// `stop` is cancelled (then records in flight are released back to the queue). `cluster`: the
/// agent's, which the Tempo exporter adds to spans as `k8s.cluster.name`.
pub fn spawn(
    signal: Signal,
    cfg: &ExporterConfig,
    tenant: String,
    cluster: String,
    queue: DurableQueue,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let cfg = cfg.clone();
    let name = signal.exporter_name();
    let span = tracing::info_span!("exporter", exporter = name);
    let fut = async move {
        if cfg.console {
            console::run(signal, cfg, queue, stop).await
        } else {
            match signal {
                Signal::Metrics => remote_write::run(cfg, tenant, queue, stop).await,
                Signal::Logs => loki::run(cfg, tenant, queue, stop).await,
                Signal::Traces => otlp::run(cfg, tenant, cluster, queue, stop).await,
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(fut, span))
}

/// Sets up each enabled exporter of `config` once, as its task does when it starts (URL, headers,
/// TLS files and client), and says which one cannot start and why: `exporters.<name>: cannot
/// start: <error>`. The agent exits 1 on it rather than run a pipeline that sends nothing (a
/// missing Secret then shows as a restarting pod, not as a quiet one). An exporter enabled
/// without a URL is not an error here: its task logs it and sends nothing.
pub async fn check_setup(config: &Config) -> Result<(), String> {
    let ex = &config.exporters;
    for (signal, cfg) in [(Signal::Metrics, &ex.mimir), (Signal::Logs, &ex.loki), (Signal::Traces, &ex.tempo)] {
        if !cfg.enabled || cfg.console {
            continue;
        }
        let name = signal.exporter_name();
        let tenant = config.tenant_of(cfg);
        let error = match signal {
            Signal::Metrics | Signal::Logs => match http::HttpSender::new(name, cfg, tenant, &[]).await {
                Ok(_) | Err(http::SetupError::NoUrl) => None,
                Err(e) => Some(e.to_string()),
            },
            Signal::Traces => match otlp::check_setup(cfg, tenant).await {
                Ok(_) | Err(otlp::SetupError::NoEndpoint) => None,
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(e) = error {
            return Err(format!("exporters.{name}: cannot start: {e}"));
        }
    }
    Ok(())
}
