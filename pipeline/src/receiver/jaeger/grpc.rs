//! The collector's gRPC: `jaeger.api_v2.CollectorService/PostSpans`, served by hand (no generated
//! server) so that an unreadable message is answered INVALID_ARGUMENT and counted. gzip requests
//! are accepted; a full next stage answers RESOURCE_EXHAUSTED, shutting down UNAVAILABLE, both with
//! `RetryInfo` as the OTLP receiver does.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstEncoder;

use super::proto::{self, PostSpansRequest, PostSpansResponse};
use super::{deliver, metrics, translate};
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
            let mut grpc = tonic::server::Grpc::new(JaegerCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max_request_size);
            Ok(grpc.unary(PostSpans(this.traces), req).await)
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
            deliver(traces.as_ref(), TRANSPORT, translate::to_otlp(batch)).map_err(status_of)?;
            Ok(tonic::Response::new(PostSpansResponse {}))
        })
    }
}

struct JaegerCodec;

impl Codec for JaegerCodec {
    type Encode = PostSpansResponse;
    type Decode = PostSpansRequest;
    type Encoder = ProstEncoder<PostSpansResponse>;
    type Decoder = JaegerDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Default::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        JaegerDecoder
    }
}

struct JaegerDecoder;

impl Decoder for JaegerDecoder {
    type Item = PostSpansRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PostSpansRequest>, Status> {
        match <PostSpansRequest as prost::Message>::decode(src) {
            Ok(req) => Ok(Some(req)),
            Err(e) => {
                metrics().rejected.with_label_values(&[TRANSPORT, "malformed"]).inc();
                Err(Status::invalid_argument(format!("invalid protobuf: {e}")))
            }
        }
    }
}
