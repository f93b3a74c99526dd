//! Where received spans go: a [`TraceConsumer`]. The receiver does not know whether that is the
//! Tempo queue, the tail sampler (cluster mode) or the router to the cluster replicas (daemonset
//! mode with `otlp.forward_traces_to`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use prost::Message;

use crate::sink::{SendError, TracesSink};
use crate::trace_wire::ValidTraces;

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

    /// Whether the consumer takes requests still encoded ([`TraceConsumer::consume_encoded`]):
    /// the protobuf receivers then check the wire format instead of decoding. Consumers that
    /// look at every span by decoding it (the router) leave it `false`: checking, then decoding,
    /// would read every request twice. The tail sampler takes them encoded.
    fn takes_encoded(&self) -> bool {
        false
    }

    /// A request checked by [`ValidTraces::parse`]. By default decoded and handed to `consume`.
    fn consume_encoded(&self, request: ValidTraces) -> Result<(), ConsumeError> {
        match ExportTraceServiceRequest::decode(request.as_bytes().clone()) {
            Ok(decoded) => self.consume(decoded),
            // `parse` accepts what prost accepts: not expected.
            Err(e) => Err(ConsumeError::Unavailable(format!("a checked request does not decode: {e}"))),
        }
    }
}

/// Straight to Tempo's queue.
impl TraceConsumer for TracesSink {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        match self.try_send(request) {
            // The receiver answers once the batch is queued (durably, when the queue has a disk
            // part); the acknowledgement of the export itself is not awaited.
            Ok(_ack) => Ok(()),
            Err(e) => Err(consume_error(e)),
        }
    }

    /// Only the resources are rewritten; spans go to the queue as the client encoded them.
    fn takes_encoded(&self) -> bool {
        true
    }

    fn consume_encoded(&self, request: ValidTraces) -> Result<(), ConsumeError> {
        self.try_send_encoded(&request).map(drop).map_err(consume_error)
    }
}

fn consume_error(e: SendError) -> ConsumeError {
    match e {
        SendError::Full(queue) => ConsumeError::Busy(format!("queue {queue} is full")),
        SendError::Queue(e) => ConsumeError::Unavailable(e.to_string()),
    }
}

/// Number of spans in a request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}
