//! Where scraped series go: the pipeline's [`MetricsSink`], or anything else that takes batches
//! (tests collect them in memory).

use std::future::Future;

use lgtm_pipeline::proto::TimeSeries;
use lgtm_pipeline::{MetricsSink, SendError};

/// Takes one scrape's worth of series. `send` may wait (backpressure: the queue is full) but
/// must not wait for the batch to be delivered.
pub trait SeriesSink: Clone + Send + Sync + 'static {
    fn send(&self, series: Vec<TimeSeries>) -> impl Future<Output = Result<(), SendError>> + Send;
}

impl SeriesSink for MetricsSink {
    async fn send(&self, series: Vec<TimeSeries>) -> Result<(), SendError> {
        // The acknowledgement is dropped: a scrape is not retried, and the pipeline counts
        // what it could not deliver.
        MetricsSink::send(self, series).await.map(drop)
    }
}
