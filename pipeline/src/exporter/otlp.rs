//! Placeholder until the exporter lands: completes nothing, so records stay queued.

use lgtm_config::ExporterConfig;
use tokio_util::sync::CancellationToken;

use crate::queue::DurableQueue;

pub async fn run(_cfg: ExporterConfig, _tenant: String, _queue: DurableQueue, stop: CancellationToken) {
    stop.cancelled().await;
}
