//! OTLP/gRPC: the `Export` methods of `TraceService`, `MetricsService` and `LogsService`.
//!
//! Served by hand rather than through the generated `*ServiceServer`s so that a body that is not
//! a valid protobuf is answered INVALID_ARGUMENT and counted (the generated code answers
//! INTERNAL). gzip requests are accepted; a message over `max_request_size` (checked by tonic on
//! the framed length and again while decompressing) is refused with RESOURCE_EXHAUSTED (no
//! RetryInfo: not to be retried) and counted. A full next stage answers
//! RESOURCE_EXHAUSTED carrying `google.rpc.RetryInfo`, which OTLP clients take as "retry after the
//! delay"; shutting down answers UNAVAILABLE. Request bytes count in `otlp.limits.max_in_flight_bytes`
//! with the HTTP receivers' bodies, from the first byte received until the answer; a request that
//! would go over is answered RESOURCE_EXHAUSTED with RetryInfo and counted (`reason="busy"`).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstEncoder;

use super::body::{BudgetedBody, Held, SharedHeld};
use super::intake::{Intake, Refusal, RETRY_AFTER};
use super::{metrics, status};

const TRANSPORT: &str = "grpc";

/// One OTLP signal as a gRPC service.
pub trait GrpcSignal: Send + Sync + 'static {
    const SERVICE: &'static str;
    const SIGNAL: &'static str;
    type Request: Send + 'static;
    type Response: prost::Message + Send + 'static;
    /// The request from the message's bytes (after gzip); an error is answered INVALID_ARGUMENT
    /// and counted as `malformed`.
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self::Request, prost::DecodeError>;
    fn handle(intake: Arc<Intake>, req: Self::Request) -> impl Future<Output = Result<Self::Response, Refusal>> + Send;
}

pub struct Traces;
pub struct Metrics;
pub struct Logs;

impl GrpcSignal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: &'static str = "traces";
    /// Kept as bytes: [`Intake::traces_encoded`] checks them (and counts what it refuses).
    type Request = Bytes;
    type Response = ExportTraceServiceResponse;
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Bytes, prost::DecodeError> {
        Ok(src.copy_to_bytes(src.remaining()))
    }
    async fn handle(intake: Arc<Intake>, req: Self::Request) -> Result<Self::Response, Refusal> {
        intake.traces_encoded(req, TRANSPORT)
    }
}

impl GrpcSignal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: &'static str = "metrics";
    /// Kept as bytes: [`Intake::metrics_encoded`] checks them and decodes them in parts.
    type Request = Bytes;
    type Response = ExportMetricsServiceResponse;
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Bytes, prost::DecodeError> {
        Ok(src.copy_to_bytes(src.remaining()))
    }
    async fn handle(intake: Arc<Intake>, req: Self::Request) -> Result<Self::Response, Refusal> {
        intake.metrics_encoded(req, TRANSPORT)
    }
}

impl GrpcSignal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: &'static str = "logs";
    /// Kept as bytes: [`Intake::logs_encoded`] checks them and decodes them in parts.
    type Request = Bytes;
    type Response = ExportLogsServiceResponse;
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Bytes, prost::DecodeError> {
        Ok(src.copy_to_bytes(src.remaining()))
    }
    async fn handle(intake: Arc<Intake>, req: Self::Request) -> Result<Self::Response, Refusal> {
        intake.logs_encoded(req, TRANSPORT).await
    }
}

/// The tower service of one signal.
pub struct ExportService<S> {
    intake: Arc<Intake>,
    _signal: PhantomData<fn() -> S>,
}

impl<S> ExportService<S> {
    pub fn new(intake: Arc<Intake>) -> Self {
        ExportService { intake, _signal: PhantomData }
    }
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService { intake: self.intake.clone(), _signal: PhantomData }
    }
}

impl<S: GrpcSignal> NamedService for ExportService<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S, B> Service<http::Request<B>> for ExportService<S>
where
    S: GrpcSignal,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let intake = self.intake.clone();
        Box::pin(async move {
            if req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(S::SERVICE)) != Some("/Export") {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let max = intake.max_request_size;
            // Held from the first byte until the answer: see `BudgetedBody`.
            let held: SharedHeld = Arc::new(Mutex::new(Held::none()));
            let req = req.map(|body| BudgetedBody::new(body, held.clone(), busy::<S>));
            let mut grpc = tonic::server::Grpc::new(OtlpCodec::<S>(PhantomData, held.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            let response = grpc.unary(Export::<S>(intake, PhantomData), req).await;
            drop(held);
            Ok(too_large_is_resource_exhausted::<S>(response))
        })
    }
}

/// Counts a request refused because the receivers hold `otlp.limits.max_in_flight_bytes`.
fn busy<S: GrpcSignal>() {
    metrics::otlp().rejected.with_label_values(&[S::SIGNAL, "busy"]).inc();
}

/// tonic refuses a message over `max_decoding_message_size` from its length prefix, before the
/// decoder runs (so nothing is buffered), with OUT_OF_RANGE and without counting it. gRPC's code
/// for "request larger than the configured maximum" is RESOURCE_EXHAUSTED (without RetryInfo, so
/// OTLP clients do not retry it); nothing else in this service answers OUT_OF_RANGE.
fn too_large_is_resource_exhausted<S: GrpcSignal>(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    match Status::from_header_map(response.headers()) {
        Some(status) if status.code() == tonic::Code::OutOfRange => {
            metrics::otlp().rejected.with_label_values(&[S::SIGNAL, "too_large"]).inc();
            Status::resource_exhausted(status.message().to_string()).into_http()
        }
        _ => response,
    }
}

struct Export<S>(Arc<Intake>, PhantomData<fn() -> S>);

impl<S: GrpcSignal> UnaryService<S::Request> for Export<S> {
    type Response = S::Response;
    type Future = BoxFuture<tonic::Response<S::Response>, Status>;

    fn call(&mut self, request: tonic::Request<S::Request>) -> Self::Future {
        let intake = self.0.clone();
        Box::pin(async move {
            match S::handle(intake, request.into_inner()).await {
                Ok(resp) => Ok(tonic::Response::new(resp)),
                Err(refusal) => {
                    tracing::debug!(
                        signal = S::SIGNAL,
                        reason = refusal.reason(),
                        message = refusal.message(),
                        "OTLP/gRPC request refused"
                    );
                    Err(status_of(refusal))
                }
            }
        })
    }
}

/// The gRPC answer to `refusal` on any of the gRPC receivers: Busy and Unavailable carry
/// `RetryInfo`, so clients back off rather than drop.
pub(super) fn status_of(refusal: Refusal) -> Status {
    match refusal {
        Refusal::Invalid { message, .. } => Status::invalid_argument(message),
        Refusal::TooLarge(m) => Status::resource_exhausted(m),
        Refusal::Busy(m) => status::retryable(tonic::Code::ResourceExhausted, m, RETRY_AFTER),
        Refusal::Unavailable(m) => status::retryable(tonic::Code::Unavailable, m, RETRY_AFTER),
    }
}

/// prost encoding of the answer; [`GrpcSignal::decode`] of the request, answering INVALID_ARGUMENT.
struct OtlpCodec<S>(PhantomData<fn() -> S>, SharedHeld);

impl<S: GrpcSignal> Codec for OtlpCodec<S> {
    type Encode = S::Response;
    type Decode = S::Request;
    type Encoder = ProstEncoder<S::Response>;
    type Decoder = OtlpDecoder<S>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Default::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder(PhantomData, self.1.clone())
    }
}

struct OtlpDecoder<S>(PhantomData<fn() -> S>, SharedHeld);

impl<S: GrpcSignal> Decoder for OtlpDecoder<S> {
    type Item = S::Request;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<S::Request>, Status> {
        // A decompressed message can be larger than the bytes that came: hold the difference.
        let held = self.1.lock().map(|mut held| held.at_least(src.remaining())).unwrap_or(Ok(()));
        if let Err(refusal) = held {
            busy::<S>();
            return Err(status_of(refusal));
        }
        match S::decode(src) {
            Ok(req) => Ok(Some(req)),
            Err(e) => {
                metrics::otlp().rejected.with_label_values(&[S::SIGNAL, "malformed"]).inc();
                Err(Status::invalid_argument(format!("invalid protobuf: {e}")))
            }
        }
    }
}
