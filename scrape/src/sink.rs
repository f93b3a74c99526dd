//! Where scraped series go: the pipeline's [`MetricsSink`], or anything else that takes
//! batches (tests decode and collect them).

use std::future::Future;

use bytes::Bytes;
use lgtm_pipeline::exporter::remote_write::routed;
use lgtm_pipeline::proto::{Label, TimeSeries, WriteRequest};
use lgtm_pipeline::{MetricsSink, SendError};
use prost::Message;

/// One scrape's series (samples, staleness markers, synthetic series) as an encoded
/// remote-write `WriteRequest`, labels sorted, external labels included; for a sink that asks
/// for it ([`SeriesSink::route_shards`]), grouped by shard behind a header
/// ([`lgtm_pipeline::exporter::remote_write::routed`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    bytes: Bytes,
    samples: u32,
}

impl Batch {
    pub(crate) fn new(bytes: Bytes, samples: u32) -> Batch {
        Batch { bytes, samples }
    }

    /// The encoded `WriteRequest`.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Number of samples (one per series).
    pub fn samples(&self) -> u32 {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The series, decoded (tests and debugging; the pipeline ships the bytes as they are), of
    /// a batch grouped by shard ([`SeriesSink::route_shards`]) in shard order.
    pub fn decode(&self) -> Result<Vec<TimeSeries>, prost::DecodeError> {
        match routed::write_request(&self.bytes) {
            Ok(plain) => WriteRequest::decode(plain.as_ref()).map(|w| w.timeseries),
            // Not a valid protobuf message either (0xff): the decoder says why not.
            Err(_) => WriteRequest::decode(self.bytes.clone()).map(|w| w.timeseries),
        }
    }
}

/// Takes one scrape's batch. `send` may wait (backpressure: the queue is full) but must not
/// wait for the batch to be delivered.
pub trait SeriesSink: Clone + Send + Sync + 'static {
    /// Labels to put on every series that lacks them (the `cluster` label), merged into the
    /// cached label sets once rather than into every batch.
    fn external_labels(&self) -> Vec<Label> {
        Vec::new()
    }

    /// How many remote-write shards batches should be grouped for
    /// ([`lgtm_pipeline::exporter::remote_write::routed`]); 0: plain `WriteRequest`s.
    fn route_shards(&self) -> usize {
        0
    }

    fn send(&self, batch: Batch) -> impl Future<Output = Result<(), SendError>> + Send;
}

impl SeriesSink for MetricsSink {
    fn external_labels(&self) -> Vec<Label> {
        MetricsSink::external_labels(self).to_vec()
    }

    fn route_shards(&self) -> usize {
        MetricsSink::route_shards(self)
    }

    async fn send(&self, batch: Batch) -> Result<(), SendError> {
        // The acknowledgement is dropped: a scrape is not retried, and the pipeline counts
        // what it could not deliver.
        self.send_encoded(batch.bytes, batch.samples).await.map(drop)
    }
}
