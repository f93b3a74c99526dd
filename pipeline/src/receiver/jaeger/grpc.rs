//! The collector's gRPC: `jaeger.api_v2.CollectorService/PostSpans`, served by hand (no generated
//! server) so that an unreadable message is answered INVALID_ARGUMENT and counted. gzip requests
//! are accepted; a full next stage answers RESOURCE_EXHAUSTED, shutting down UNAVAILABLE, both with
//! `RetryInfo` as the OTLP receiver does.
//!
//! The message is kept as bytes and taken in parts ([`in_parts`]): checked whole first (every
//! span decoded and converted, nothing kept), so a request broken midway is refused before any
//! part is handed on; then its spans are decoded, converted and handed on about 64 KiB of the
//! request at a time. Decoding a whole `PostSpansRequest` of tiny spans (30 bytes each) took 21
//! bytes of peak RSS per request byte. A part refused by the next stage (full) answers
//! RESOURCE_EXHAUSTED: the parts before it arrive twice when the client retries (at least once),
//! as on the other receivers.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstEncoder;

use bytes::{Buf, Bytes};
use prost::Message;

use super::model::Batch;
use super::proto::{self, PostSpansResponse, ProtoBatch, ProtoProcess, ProtoSpan};
use super::{deliver, metrics, translate};
use crate::receiver::body::{BudgetedBody, Held, SharedHeld};
use crate::receiver::grpc::status_of;
use crate::receiver::wire::{bytes_of, fields};
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

impl UnaryService<Bytes> for PostSpans {
    type Response = PostSpansResponse;
    type Future = BoxFuture<tonic::Response<PostSpansResponse>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let traces = self.0.clone();
        Box::pin(async move {
            let body = request.into_inner();
            let malformed = |e: String| {
                metrics().rejected.with_label_values(&[TRANSPORT, "malformed"]).inc();
                Status::invalid_argument(e)
            };
            in_parts(&body, 0, |_| true).map_err(malformed)?;
            let mut refused = None;
            in_parts(&body, PART_BYTES, |batch| {
                match deliver(traces.as_ref(), TRANSPORT, translate::to_otlp(batch), 1) {
                    Ok(()) => true,
                    Err(refusal) => {
                        refused = Some(refusal);
                        false
                    }
                }
            })
            .map_err(malformed)?;
            match refused {
                Some(refusal) => Err(status_of(refusal)),
                None => Ok(tonic::Response::new(PostSpansResponse {})),
            }
        })
    }
}

/// Encoded spans handed on per part.
const PART_BYTES: usize = 64 * 1024;

/// Walks `body` (a `PostSpansRequest`) and gives `each` its spans (with the batch's process) in
/// batches of about `part_bytes` of encoded spans, until `each` answers false; `part_bytes` 0
/// decodes and converts every span on its own and drops it (the check). An error says why the
/// body is refused: what prost refuses (except protobuf groups, refused too), or a span the
/// Jaeger model cannot take (ids of the wrong length).
///
/// As prost, several `batch` fields are merged: their spans one after the other, their
/// processes merged into one, which is every span's (a process may come after the spans).
pub(super) fn in_parts(body: &[u8], part_bytes: usize, mut each: impl FnMut(Batch) -> bool) -> Result<(), String> {
    let mut spans = Vec::new();
    let mut process: Option<ProtoProcess> = None;
    for f in fields(body) {
        let f = f?;
        if f.tag != 1 {
            continue;
        }
        let batch = bytes_of(&f, "batch")?;
        for g in fields(batch) {
            let g = g?;
            match g.tag {
                1 => spans.push(bytes_of(&g, "spans")?),
                2 => process
                    .get_or_insert_with(Default::default)
                    .merge(bytes_of(&g, "process")?)
                    .map_err(|e| e.to_string())?,
                _ => {}
            }
        }
    }
    let process = proto::to_model(ProtoBatch { spans: Vec::new(), process }).map_err(|e| e.to_string())?.process;
    let mut part = Vec::new();
    let mut in_part = 0;
    let total = spans.len();
    for (i, span) in spans.into_iter().enumerate() {
        part.push(ProtoSpan::decode(span).map_err(|e| e.to_string())?);
        in_part += span.len();
        if in_part >= part_bytes || i + 1 == total {
            let batch = proto::to_model(ProtoBatch { spans: std::mem::take(&mut part), process: None })
                .map_err(|e| e.to_string())?;
            in_part = 0;
            if !each(Batch { process: process.clone(), spans: batch.spans }) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Counts a request refused because the receivers hold `otlp.limits.max_in_flight_bytes`.
fn busy() {
    metrics().rejected.with_label_values(&[TRANSPORT, "busy"]).inc();
}

struct JaegerCodec(SharedHeld);

impl Codec for JaegerCodec {
    type Encode = PostSpansResponse;
    type Decode = Bytes;
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
    type Item = Bytes;
    type Error = Status;

    /// The message as bytes: [`in_parts`] checks and decodes it.
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // A decompressed message can be larger than the bytes that came: hold the difference.
        let held = self.0.lock().map(|mut held| held.at_least(bytes::Buf::remaining(src))).unwrap_or(Ok(()));
        if let Err(refusal) = held {
            busy();
            return Err(status_of(refusal));
        }
        Ok(Some(src.copy_to_bytes(bytes::Buf::remaining(src))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::jaeger::model::Span;
    use crate::receiver::jaeger::proto::{KeyValue, PostSpansRequest};

    fn span(i: u64) -> ProtoSpan {
        ProtoSpan {
            trace_id: [[0u8; 8], (i + 1).to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            operation_name: format!("op{i}"),
            ..Default::default()
        }
    }

    fn all(body: &[u8], part_bytes: usize) -> Result<(Vec<Batch>, usize), String> {
        let mut batches = Vec::new();
        in_parts(body, part_bytes, |b| {
            batches.push(b);
            true
        })?;
        let n = batches.len();
        Ok((batches, n))
    }

    #[test]
    fn parts_give_every_span_once_in_order_with_the_process_as_the_whole_request() {
        let process = |name: &str| ProtoProcess {
            service_name: name.into(),
            tags: vec![KeyValue { key: "k".into(), v_str: name.into(), ..Default::default() }],
        };
        let first = PostSpansRequest { batch: Some(ProtoBatch { spans: (0..30).map(span).collect(), process: None }) };
        // A second batch field: merged by prost (its spans after, its process the batch's).
        let second = PostSpansRequest {
            batch: Some(ProtoBatch { spans: (30..45).map(span).collect(), process: Some(process("svc")) }),
        };
        let body = [first.encode_to_vec(), second.encode_to_vec()].concat();
        let whole = proto::to_model(PostSpansRequest::decode(&body[..]).unwrap().batch.unwrap()).unwrap();
        assert_eq!(whole.spans.len(), 45);
        for part_bytes in [0, 100, 1000, usize::MAX] {
            let (batches, n) = all(&body, part_bytes).unwrap();
            let spans: Vec<Span> = batches.iter().flat_map(|b| b.spans.clone()).collect();
            assert_eq!(spans, whole.spans, "{part_bytes}");
            assert!(batches.iter().all(|b| b.process == whole.process), "{part_bytes}");
            match part_bytes {
                0 => assert_eq!(n, 45),
                usize::MAX => assert_eq!(n, 1),
                _ => assert!(n > 1 && n < 45, "{part_bytes}: {n}"),
            }
        }
        // `each` answering false stops the parts.
        let mut calls = 0;
        in_parts(&body, 0, |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn what_the_whole_request_refuses_is_refused_before_any_part() {
        let mut bad =
            PostSpansRequest { batch: Some(ProtoBatch { spans: (0..10).map(span).collect(), process: None }) };
        let body = bad.encode_to_vec();
        for cut in 1..body.len() {
            let whole = PostSpansRequest::decode(&body[..cut])
                .map_err(|e| e.to_string())
                .and_then(|r| proto::to_model(r.batch.unwrap_or_default()).map_err(|e| e.to_string()));
            assert_eq!(in_parts(&body[..cut], 0, |_| true).is_err(), whole.is_err(), "cut at {cut}");
        }
        // The last span's id of the wrong length: refused by the check, before any part.
        bad.batch.as_mut().unwrap().spans[9].span_id = vec![1, 2, 3];
        let body = bad.encode_to_vec();
        assert!(in_parts(&body, 0, |_| true).is_err());
    }
}
