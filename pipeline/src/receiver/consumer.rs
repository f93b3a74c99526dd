//! Where received spans go: a [`TraceConsumer`]. The receiver does not know whether that is the
//! Tempo queue, the tail sampler (cluster mode) or the router to the cluster replicas (daemonset
//! mode with `otlp.forward_traces_to`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::sink::{SendError, TracesSink};

/// Why a consumer did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Full for now; the client should retry later (gRPC RESOURCE_EXHAUSTED, HTTP 429).
    #[error("busy: {0}")]
    Busy(String),
    /// Will never be taken (e.g. the queue is closed because the agent stops): gRPC UNAVAILABLE,
    /// HTTP 503, which clients also retry, possibly against another replica.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Takes received spans without waiting: either the request is owned by the consumer from now on
/// (queued, buffered for a sampling decision, or routed) or it is refused with a reason the
/// receiver turns into a retryable answer. Implementations must not block: they are called on the
/// runtime threads, once per OTLP request.
pub trait TraceConsumer: Send + Sync + 'static {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError>;
}

/// Straight to Tempo's queue.
impl TraceConsumer for TracesSink {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        match self.try_send(request) {
            // The receiver answers once the batch is queued (durably, when the queue has a disk
            // part); the acknowledgement of the export itself is not awaited.
            Ok(_ack) => Ok(()),
            Err(SendError::Full(queue)) => Err(ConsumeError::Busy(format!("queue {queue} is full"))),
            Err(SendError::Queue(e)) => Err(ConsumeError::Unavailable(e.to_string())),
        }
    }
}

/// Number of spans in a request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}
