//! What the two transports share once a request is decoded: count it, convert it, hand it to its
//! sink, and say how to answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use super::consumer::{span_count, ConsumeError, TraceConsumer};
use super::{loki, metrics, prometheus};
use crate::sink::{Pipeline, SendError};
use crate::trace_wire::ValidTraces;

/// How long a logs request may wait for room in the Loki queue before the client is told to come
/// back later (the logs sink has no non-blocking send; a push is atomic, so giving up is safe).
const LOGS_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// What a client is told to wait before retrying a refused request.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a request was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// The request cannot be read; `reason` labels `lgtm_agent_otlp_rejected_total`.
    Invalid { reason: &'static str, message: String },
    /// Larger than `max_request_size` (before or after decompression).
    TooLarge(String),
    /// The next stage is full: retry later.
    Busy(String),
    /// The next stage is gone (shutting down).
    Unavailable(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Invalid { reason, .. } => reason,
            Refusal::TooLarge(_) => "too_large",
            Refusal::Busy(_) => "busy",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid { message, .. } => message,
            Refusal::TooLarge(m) | Refusal::Busy(m) | Refusal::Unavailable(m) => m,
        }
    }
}

impl From<ConsumeError> for Refusal {
    fn from(e: ConsumeError) -> Refusal {
        match e {
            ConsumeError::Busy(m) => Refusal::Busy(m),
            ConsumeError::Unavailable(m) => Refusal::Unavailable(m),
        }
    }
}

fn refusal_of(e: SendError) -> Refusal {
    match e {
        SendError::Full(q) => Refusal::Busy(format!("queue {q} is full")),
        SendError::Queue(e) => Refusal::Unavailable(e.to_string()),
    }
}

/// The receiver's state, shared by every connection.
pub struct Intake {
    pub cluster: String,
    pub pipeline: Pipeline,
    pub traces: Arc<dyn TraceConsumer>,
    pub max_request_size: usize,
}

/// `grpc` or `http`, for `lgtm_agent_otlp_received_total{transport}`.
pub type Transport = &'static str;

impl Intake {
    pub fn traces(
        &self,
        req: ExportTraceServiceRequest,
        transport: Transport,
    ) -> Result<ExportTraceServiceResponse, Refusal> {
        let spans = span_count(&req);
        if spans > 0 {
            let result = self.traces.consume(req).map_err(Refusal::from);
            counted("traces", transport, spans, result)?;
        }
        Ok(ExportTraceServiceResponse { partial_success: None })
    }

    /// An `ExportTraceServiceRequest` as protobuf bytes (gRPC, HTTP `application/x-protobuf`):
    /// checked in the wire format and handed over encoded when the consumer
    /// [takes it so](TraceConsumer::takes_encoded), decoded otherwise. A body that is not a valid
    /// request is refused and counted as `malformed`.
    pub fn traces_encoded(&self, body: Bytes, transport: Transport) -> Result<ExportTraceServiceResponse, Refusal> {
        if !self.traces.takes_encoded() {
            let req =
                ExportTraceServiceRequest::decode(body).map_err(|e| malformed(format!("invalid protobuf: {e}")))?;
            return self.traces(req, transport);
        }
        let req = ValidTraces::parse(body).map_err(|e| malformed(format!("invalid protobuf: {e}")))?;
        let spans = req.spans();
        if spans > 0 {
            let result = self.traces.consume_encoded(req).map_err(Refusal::from);
            counted("traces", transport, spans, result)?;
        }
        Ok(ExportTraceServiceResponse { partial_success: None })
    }

    pub fn metrics(
        &self,
        req: ExportMetricsServiceRequest,
        transport: Transport,
    ) -> Result<ExportMetricsServiceResponse, Refusal> {
        let mut dropped = Vec::new();
        self.metrics_converted(prometheus::convert(&req), transport, &mut dropped)?;
        Ok(metrics_response(&dropped))
    }

    /// An `ExportMetricsServiceRequest` as protobuf bytes (gRPC, HTTP, or JSON read into
    /// protobuf): checked whole, then decoded, converted and handed on in parts of about 64 KiB
    /// of data points ([`super::metrics_parts`]), so a request never holds all its points decoded
    /// and converted. A body that is not a valid request is refused and counted as `malformed`,
    /// before any part is handed on. A part refused by a full queue refuses the request (429 /
    /// RESOURCE_EXHAUSTED): the parts before it arrive again when the client retries (at least
    /// once), as for logs.
    pub fn metrics_encoded(&self, body: Bytes, transport: Transport) -> Result<ExportMetricsServiceResponse, Refusal> {
        let parts = super::metrics_parts::plan(&body, METRICS_PART_BYTES).map_err(|e| {
            let refusal = Refusal::Invalid { reason: "malformed", message: format!("invalid protobuf: {e}") };
            metrics::otlp().rejected.with_label_values(&["metrics", refusal.reason()]).inc();
            refusal
        })?;
        let mut in_parts = prometheus::InParts::default();
        let mut dropped = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let decoded = part.decode(&body);
            let next = parts.get(i + 1).and_then(super::metrics_parts::Part::first_resource);
            let converted = in_parts.convert(&decoded.request, &decoded.resources, next);
            drop(decoded);
            self.metrics_converted(converted, transport, &mut dropped)?;
        }
        Ok(metrics_response(&dropped))
    }

    /// Counts what `converted` dropped (adding it to `dropped`) and queues its series.
    fn metrics_converted(
        &self,
        mut converted: prometheus::Converted,
        transport: Transport,
        dropped: &mut Vec<(&'static str, usize)>,
    ) -> Result<(), Refusal> {
        for (reason, points) in &converted.dropped {
            metrics::otlp().dropped.with_label_values(&["metrics", reason]).inc_by(*points as u64);
            match dropped.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += points,
                None => dropped.push((reason, *points)),
            }
        }
        if !converted.series.is_empty() {
            let result = self
                .pipeline
                .metrics
                .try_send_compressed(std::mem::take(&mut converted.series))
                .map(|_ack| ())
                .map_err(refusal_of);
            counted("metrics", transport, converted.points, result)?;
        }
        Ok(())
    }

    pub async fn logs(
        &self,
        req: ExportLogsServiceRequest,
        transport: Transport,
    ) -> Result<ExportLogsServiceResponse, Refusal> {
        let converted = loki::convert(&req, &self.cluster);
        if converted.entries > 0 {
            let result = match tokio::time::timeout(
                LOGS_QUEUE_WAIT,
                self.pipeline.logs.send_compressed(converted.streams),
            )
            .await
            {
                Ok(sent) => sent.map(|_ack| ()).map_err(refusal_of),
                Err(_) => Err(Refusal::Busy("queue loki is full".into())),
            };
            counted("logs", transport, converted.entries, result)?;
        }
        Ok(ExportLogsServiceResponse { partial_success: None })
    }
}

/// The answer to a metrics request, with the points not converted as its partial success.
fn metrics_response(dropped: &[(&'static str, usize)]) -> ExportMetricsServiceResponse {
    let converted = prometheus::Converted { dropped: dropped.to_vec(), ..Default::default() };
    let rejected: usize = dropped.iter().map(|(_, n)| n).sum();
    let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: rejected as i64,
        error_message: converted.dropped_message(),
    });
    ExportMetricsServiceResponse { partial_success }
}

/// Encoded data points converted and handed on per part: a part's decoded points and their
/// series take about 30 times its encoded size when points are tiny (22 bytes).
const METRICS_PART_BYTES: usize = 64 * 1024;

/// Encoded log records handed on per part: a part's decoded records and Loki streams take about
/// 50 times its encoded size when records are tiny (7 bytes), a few times for typical ones.
const LOGS_PART_BYTES: usize = 16 * 1024;

impl Intake {
    /// An `ExportLogsServiceRequest` as protobuf bytes (gRPC, HTTP, or JSON read into protobuf):
    /// checked whole, then decoded, converted and handed on in parts of about 64 KiB of records
    /// ([`super::logs_parts`]), so a request never holds all its records decoded. A body that is
    /// not a valid request is refused and counted as `malformed`, before any part is handed on.
    /// A part refused by a full queue refuses the request (429 / RESOURCE_EXHAUSTED): the parts
    /// before it arrive again when the client retries (at least once), as on the Zipkin receiver.
    pub async fn logs_encoded(&self, body: Bytes, transport: Transport) -> Result<ExportLogsServiceResponse, Refusal> {
        let parts = super::logs_parts::plan(&body, LOGS_PART_BYTES).map_err(|e| {
            let refusal = Refusal::Invalid { reason: "malformed", message: format!("invalid protobuf: {e}") };
            metrics::otlp().rejected.with_label_values(&["logs", refusal.reason()]).inc();
            refusal
        })?;
        for part in parts {
            self.logs(part.decode(&body), transport).await?;
        }
        Ok(ExportLogsServiceResponse { partial_success: None })
    }
}

/// A trace request that cannot be read, counted.
fn malformed(message: String) -> Refusal {
    let refusal = Refusal::Invalid { reason: "malformed", message };
    metrics::otlp().rejected.with_label_values(&["traces", refusal.reason()]).inc();
    refusal
}

/// Counts `items` as received, or the request as refused.
fn counted(
    signal: &'static str,
    transport: Transport,
    items: usize,
    result: Result<(), Refusal>,
) -> Result<(), Refusal> {
    match &result {
        Ok(()) => metrics::otlp().received.with_label_values(&[signal, transport]).inc_by(items as u64),
        Err(r) => metrics::otlp().rejected.with_label_values(&[signal, r.reason()]).inc(),
    }
    result
}
