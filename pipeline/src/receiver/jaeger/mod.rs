//! Jaeger receivers: what Jaeger clients (and OpenTelemetry's Jaeger exporters) send, converted to
//! OTLP ([`translate`] documents the mapping) and handed to the same [`TraceConsumer`] as OTLP
//! spans.
//!
//! | key (`otlp.jaeger.*`) | default | protocol |
//! |---|---|---|
//! | `thrift_compact` | `0.0.0.0:6831` | UDP, agent `emitBatch`, Thrift compact |
//! | `thrift_binary` | `0.0.0.0:6832` | UDP, agent `emitBatch`, Thrift binary |
//! | `thrift_http` | `0.0.0.0:14268` | `POST /api/traces`, a Thrift binary `Batch` |
//! | `grpc` | `0.0.0.0:14250` | `jaeger.api_v2.CollectorService/PostSpans` |
//!
//! UDP has no way to say "later": a datagram that cannot be read (over 65,000 bytes, not an
//! `emitBatch`, malformed) or that the next stage refuses is dropped and counted in
//! `lgtm_agent_jaeger_rejected_total{transport,reason}`; what the kernel drops when a socket's
//! buffer overflows is counted there too (`reason="kernel_dropped"`, as the next datagram is read:
//! see [`udp`]) and shows at once in `/proc/net/udp` (`drops`), hence a large `udp_receive_buffer`. The
//! HTTP and gRPC collectors answer like the OTLP receivers (400/INVALID_ARGUMENT, 429/
//! RESOURCE_EXHAUSTED, 503/UNAVAILABLE). Spans taken: `lgtm_agent_jaeger_received_total{transport}`.
//!
//! Thrift is decoded by a small reader written here ([`protocol`], [`thrift`]) rather than by the
//! `thrift` crate: no IDL compiler at build time, and a reader that checks every length against
//! the datagram before allocating. The UDP receivers read each datagram straight into the
//! protobuf bytes of the OTLP request ([`direct`]), the same bytes prost would encode from
//! [`translate`]'s structs, without building either.

pub mod direct;
pub mod encode;
mod grpc;
mod http;
pub mod model;
pub mod proto;
pub mod protocol;
pub mod thrift;
pub mod translate;
mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use lgtm_config::{OtlpConfig, ReceiverLimits};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus::IntCounterVec;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::consumer::{span_count, TraceConsumer};
use super::intake::Refusal;
use crate::metrics::counter_vec;

/// The largest datagram taken (the Jaeger clients' default maximum packet size).
pub const MAX_DATAGRAM: usize = 65_000;

#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    #[error("otlp.jaeger.{transport}: cannot listen on {addr}: {error}")]
    Bind { transport: &'static str, addr: String, error: std::io::Error },
    #[error("Jaeger/{transport} server failed: {message}")]
    Serve { transport: &'static str, message: String },
}

pub(crate) struct JaegerMetrics {
    pub received: IntCounterVec,
    pub rejected: IntCounterVec,
}

pub(crate) fn metrics() -> &'static JaegerMetrics {
    static M: LazyLock<JaegerMetrics> = LazyLock::new(|| JaegerMetrics {
        received: counter_vec(
            "lgtm_agent_jaeger_received_total",
            "Jaeger spans taken, by transport (thrift_compact, thrift_binary, thrift_http, grpc).",
            &["transport"],
        ),
        rejected: counter_vec(
            "lgtm_agent_jaeger_rejected_total",
            "Jaeger datagrams and requests refused or dropped, by transport and reason.",
            &["transport", "reason"],
        ),
    });
    &M
}

/// Counts and hands a converted batch to the consumer. A refusal is counted once for each of the
/// `units` (requests or datagrams) the batch was made of.
fn deliver(
    traces: &dyn TraceConsumer,
    transport: &'static str,
    req: ExportTraceServiceRequest,
    units: u64,
) -> Result<(), Refusal> {
    let spans = span_count(&req);
    if spans == 0 {
        return Ok(());
    }
    match traces.consume(req) {
        Ok(()) => {
            metrics().received.with_label_values(&[transport]).inc_by(spans as u64);
            Ok(())
        }
        Err(e) => {
            let refusal = Refusal::from(e);
            metrics().rejected.with_label_values(&[transport, refusal.reason()]).inc_by(units);
            Err(refusal)
        }
    }
}

/// As [`deliver`] for a request already encoded ([`direct`]): handed on as bytes to a consumer
/// that takes them so, else decoded.
fn deliver_encoded(
    traces: &dyn TraceConsumer,
    transport: &'static str,
    request: Vec<u8>,
    spans: usize,
    units: u64,
) -> Result<(), Refusal> {
    if spans == 0 {
        return Ok(());
    }
    let consumed = if traces.takes_encoded() {
        traces.consume_encoded(crate::trace_wire::ValidTraces::assembled(request.into(), spans))
    } else {
        match <ExportTraceServiceRequest as prost::Message>::decode(&request[..]) {
            Ok(decoded) => traces.consume(decoded),
            // Written by `direct`, which writes what prost encodes: not expected.
            Err(e) => Err(super::ConsumeError::Unavailable(format!("a converted request does not decode: {e}"))),
        }
    };
    match consumed {
        Ok(()) => {
            metrics().received.with_label_values(&[transport]).inc_by(spans as u64);
            Ok(())
        }
        Err(e) => {
            let refusal = Refusal::from(e);
            metrics().rejected.with_label_values(&[transport, refusal.reason()]).inc_by(units);
            Err(refusal)
        }
    }
}

/// The four Jaeger listeners, bound ([`JaegerReceiver::bind`]) then served ([`JaegerReceiver::run`]).
pub struct JaegerReceiver {
    /// The sockets sharing each UDP port (none: off).
    compact: Vec<UdpSocket>,
    binary: Vec<UdpSocket>,
    http: Option<TcpListener>,
    grpc: Option<TcpListener>,
    traces: Arc<dyn TraceConsumer>,
    max_request_size: usize,
    limits: ReceiverLimits,
}

impl JaegerReceiver {
    /// Binds what `cfg.jaeger` asks for (nothing when `cfg.enabled` is false).
    pub async fn bind(cfg: &OtlpConfig, traces: Arc<dyn TraceConsumer>) -> Result<JaegerReceiver, JaegerError> {
        let on = cfg.enabled != Some(false);
        let j = &cfg.jaeger;
        let buffer = usize::try_from(j.udp_receive_buffer.bytes()).unwrap_or(usize::MAX);
        super::body::set_in_flight_budget(cfg.limits.max_in_flight_bytes.bytes());
        let addr = |a: &String| if on { a.trim().to_string() } else { String::new() };
        Ok(JaegerReceiver {
            compact: udp::bind("thrift_compact", &addr(&j.thrift_compact), buffer).await?,
            binary: udp::bind("thrift_binary", &addr(&j.thrift_binary), buffer).await?,
            http: listen("thrift_http", &addr(&j.thrift_http)).await?,
            grpc: listen("grpc", &addr(&j.grpc)).await?,
            traces,
            max_request_size: usize::try_from(cfg.max_request_size.bytes()).unwrap_or(usize::MAX),
            limits: cfg.limits.clone(),
        })
    }

    pub fn thrift_compact_addr(&self) -> Option<SocketAddr> {
        self.compact.first().and_then(|s| s.local_addr().ok())
    }

    pub fn thrift_binary_addr(&self) -> Option<SocketAddr> {
        self.binary.first().and_then(|s| s.local_addr().ok())
    }

    pub fn thrift_http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown`; one listener failing stops the others.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JaegerError> {
        let mut tasks = Vec::new();
        if !self.compact.is_empty() {
            let (traces, stop) = (self.traces.clone(), shutdown.clone());
            tasks.push(tokio::spawn(udp::serve(self.compact, udp::Format::Compact, traces, stop)));
        }
        if !self.binary.is_empty() {
            let (traces, stop) = (self.traces.clone(), shutdown.clone());
            tasks.push(tokio::spawn(udp::serve(self.binary, udp::Format::Binary, traces, stop)));
        }
        if let Some(listener) = self.http {
            let router = http::router(self.traces.clone(), self.max_request_size);
            let (stop, limits) = (shutdown.clone(), self.limits.clone());
            tasks.push(tokio::spawn(async move {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(addr, "Jaeger Thrift/HTTP receiver listening");
                super::serve::serve_http(listener, router, limits, "jaeger_thrift_http", stop)
                    .await
                    .map_err(|e| JaegerError::Serve { transport: "thrift_http", message: e.to_string() })
            }));
        }
        if let Some(listener) = self.grpc {
            let service = grpc::CollectorService::new(self.traces.clone(), self.max_request_size);
            let (stop, limits) = (shutdown.clone(), self.limits.clone());
            tasks.push(tokio::spawn(async move {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(addr, "Jaeger gRPC receiver listening");
                super::serve::grpc_server(&limits)
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        super::serve::grpc_incoming(listener, &limits, "jaeger_grpc"),
                        stop.cancelled_owned(),
                    )
                    .await
                    .map_err(|e| JaegerError::Serve { transport: "grpc", message: e.to_string() })
            }));
        }
        let mut result = Ok(());
        for task in tasks {
            let outcome =
                task.await.unwrap_or_else(|e| Err(JaegerError::Serve { transport: "task", message: e.to_string() }));
            if let Err(e) = outcome {
                shutdown.cancel();
                result = result.and(Err(e));
            }
        }
        result
    }
}

async fn listen(transport: &'static str, addr: &str) -> Result<Option<TcpListener>, JaegerError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let bind_error = |error| JaegerError::Bind { transport, addr: addr.to_string(), error };
    TcpListener::bind(addr).await.map(Some).map_err(bind_error)
}

#[cfg(test)]
mod tests;
