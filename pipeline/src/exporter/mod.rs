//! Exporters: each one drains its queue, sends batches to its backend, and reports every record's
//! outcome back to the queue.
//!
//! - [`remote_write`]: Prometheus remote write 1.0 to Mimir, parallel shards keyed by series hash.
//! - [`loki`]: Loki push (protobuf + snappy).
//! - [`otlp`]: OTLP/gRPC `TraceService/Export` to Tempo.
//! - [`console`]: prints what would be shipped (the local demo).

pub mod console;
pub mod credentials;
pub mod http;
pub mod loki;
mod loki_wire;
pub mod otlp;
pub mod outcome;
pub mod remote_write;
pub mod retry;
#[cfg(test)]
mod testing;
mod trace_split;

use lgtm_config::ExporterConfig;
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
/// `stop` is cancelled (then records in flight are released back to the queue).
pub fn spawn(
    signal: Signal,
    cfg: &ExporterConfig,
    tenant: String,
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
                Signal::Traces => otlp::run(cfg, tenant, queue, stop).await,
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(fut, span))
}
