//! The collector's gRPC: `jaeger.api_v2.CollectorService/PostSpans`, served by hand (no generated
//! server) so that an unreadable message is answered INVALID_ARGUMENT and counted. gzip requests
//! are accepted; a full next stage answers RESOURCE_EXHAUSTED, shutting down UNAVAILABLE, both with
//! `RetryInfo` as the OTLP receiver does.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstEncoder;

use super::proto::{self, PostSpansRequest, PostSpansResponse};
use super::{deliver, metrics, translate};
use crate::receiver::body::{BudgetedBody, Held, SharedHeld};
use crate::receiver::grpc::status_of;
use crate::receiver::TraceConsumer;

const TRANSPORT: &str = "grpc";
const SERVICE: &str = "jaeger.api_v2.CollectorService";

#[derive(Clone)]
pub struct CollectorService {
    traces: Arc<dyn TraceConsumer>,
    max_request_size: usize,
}

impl CollectorService {
    pub fn new(traces: Arc<dyn TraceConsumer>, max_request_size: usize) -> CollectorService {
        CollectorService { traces, max_request_size }
    }
}

impl NamedService for CollectorService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for CollectorService
where
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
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/jaeger.api_v2.CollectorService/PostSpans" {
                return Ok(Status::unimplemented("only PostSpans is served").into_http());
            }
            // Counted in `otlp.limits.max_in_flight_bytes` until answered, as OTLP/gRPC.
            let held: SharedHeld = Arc::new(Mutex::new(Held::none()));
            let req = req.map(|body| BudgetedBody::new(body, held.clone(), busy));
            let mut grpc = tonic::server::Grpc::new(JaegerCodec(held.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max_request_size);
            let response = grpc.unary(PostSpans(this.traces), req).await;
            drop(held);
            Ok(response)
        })
    }
}

struct PostSpans(Arc<dyn TraceConsumer>);

impl UnaryService<PostSpansRequest> for PostSpans {
    type Response = PostSpansResponse;
    type Future = BoxFuture<tonic::Response<PostSpansResponse>, Status>;

    fn call(&mut self, request: tonic::Request<PostSpansRequest>) -> Self::Future {
        let traces = self.0.clone();
        Box::pin(async move {
            let batch = request.into_inner().batch.unwrap_or_default();
            let batch = proto::to_model(batch).map_err(|e| {
                metrics().rejected.with_label_values(&[TRANSPORT, "malformed"]).inc();
                Status::invalid_argument(e.to_string())
            })?;
            deliver(traces.as_ref(), TRANSPORT, translate::to_otlp(batch), 1).map_err(status_of)?;
            Ok(tonic::Response::new(PostSpansResponse {}))
        })
    }
}

/// Counts a request refused because the receivers hold `otlp.limits.max_in_flight_bytes`.
fn busy() {
    metrics().rejected.with_label_values(&[TRANSPORT, "busy"]).inc();
}

struct JaegerCodec(SharedHeld);

impl Codec for JaegerCodec {
    type Encode = PostSpansResponse;
    type Decode = PostSpansRequest;
    type Encoder = ProstEncoder<PostSpansResponse>;
    type Decoder = JaegerDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Default::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        JaegerDecoder(self.0.clone())
    }
}

struct JaegerDecoder(SharedHeld);

impl Decoder for JaegerDecoder {
    type Item = PostSpansRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PostSpansRequest>, Status> {
        // A decompressed message can be larger than the bytes that came: hold the difference.
        let held = self.0.lock().map(|mut held| held.at_least(bytes::Buf::remaining(src))).unwrap_or(Ok(()));
        if let Err(refusal) = held {
            busy();
            return Err(status_of(refusal));
        }
        match <PostSpansRequest as prost::Message>::decode(src) {
            Ok(req) => Ok(Some(req)),
            Err(e) => {
                metrics().rejected.with_label_values(&[TRANSPORT, "malformed"]).inc();
                Err(Status::invalid_argument(format!("invalid protobuf: {e}")))
            }
        }
    }
}
