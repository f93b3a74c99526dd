//! Both ends of the bench's OTLP/gRPC traffic, cheap enough not to steal the CPU being measured:
//! a sender of pre-encoded requests and a `TraceService` receiver that only walks the protobuf to
//! count spans by the kind tagged in their trace ID (gzip accepted, as both agents export it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::Status;

use super::load::Kind;

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Spans received, by kind (see [`Kind::index`]); spans without a known tag count in none.
#[derive(Default)]
pub struct Counts {
    by_kind: [AtomicU64; 3],
    spans: AtomicU64,
    requests: AtomicU64,
    /// Request body bytes as they came (compressed, gRPC framing included).
    wire_bytes: AtomicU64,
}

impl Counts {
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Relaxed)
    }

    pub fn of(&self, kind: Kind) -> u64 {
        self.by_kind[kind.index()].load(Ordering::Relaxed)
    }
}

/// The counting receiver; stops when dropped.
pub struct CountingReceiver {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl CountingReceiver {
    pub async fn start() -> anyhow::Result<CountingReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = CountingService(counts.clone());
        tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(CountingReceiver { addr, counts, _stop: stop })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Clone)]
struct CountingService(Arc<Counts>);

impl NamedService for CountingService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for CountingService
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
        let counts = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let wire = counts.clone();
            let req = req.map(|body| {
                body.map_frame(move |frame| {
                    if let Some(data) = frame.data_ref() {
                        wire.wire_bytes.fetch_add(data.remaining() as u64, Ordering::Relaxed);
                    }
                    frame
                })
            });
            let mut grpc = tonic::server::Grpc::new(TallyCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(256 << 20);
            Ok(grpc.unary(Count(counts), req).await)
        })
    }
}

struct Count(Arc<Counts>);

impl UnaryService<Tally> for Count {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: tonic::Request<Tally>) -> Self::Future {
        let tally = request.into_inner();
        for (kind, n) in tally.by_kind.iter().enumerate() {
            self.0.by_kind[kind].fetch_add(*n, Ordering::Relaxed);
        }
        self.0.spans.fetch_add(tally.spans, Ordering::Relaxed);
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None })) })
    }
}

/// What one request held.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub spans: u64,
    pub by_kind: [u64; 3],
}

struct TallyCodec;

impl Codec for TallyCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Tally;
    type Encoder = ResponseEncoder;
    type Decoder = TallyDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> TallyDecoder {
        TallyDecoder
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportTraceServiceResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

struct TallyDecoder;

impl Decoder for TallyDecoder {
    type Item = Tally;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Tally>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        tally(&bytes).map(Some).ok_or_else(|| Status::invalid_argument("not an ExportTraceServiceRequest"))
    }
}

/// Counts the spans of an encoded `ExportTraceServiceRequest` by the first byte of their trace
/// ID, reading only the fields on the way (resource_spans 1 -> scope_spans 2 -> spans 2 ->
/// trace_id 1).
pub fn tally(request: &[u8]) -> Option<Tally> {
    let mut t = Tally::default();
    for_each_len_field(request, 1, |resource_spans| {
        for_each_len_field(resource_spans, 2, |scope_spans| {
            for_each_len_field(scope_spans, 2, |span| {
                t.spans += 1;
                let mut tag = None;
                for_each_len_field(span, 1, |trace_id| {
                    tag = trace_id.first().copied();
                    Some(())
                })?;
                if let Some(kind) = tag.and_then(Kind::of_tag) {
                    t.by_kind[kind.index()] += 1;
                }
                Some(())
            })
        })
    })?;
    Some(t)
}

/// Calls `f` with the payload of every length-delimited field `number` of `msg`, skipping the
/// rest; `None` on a malformed message.
fn for_each_len_field(mut msg: &[u8], number: u64, mut f: impl FnMut(&[u8]) -> Option<()>) -> Option<()> {
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match key & 7 {
            0 => {
                varint(&mut msg)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).ok()?;
                let payload = msg.get(..len)?;
                msg = &msg[len..];
                if key >> 3 == number {
                    f(payload)?;
                }
            }
            _ => return None,
        }
    }
    Some(())
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A client that sends pre-encoded requests to `TraceService/Export`.
#[derive(Clone)]
pub struct Sender {
    grpc: tonic::client::Grpc<Channel>,
}

/// What sending a load took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub requests: u64,
    /// Answers RESOURCE_EXHAUSTED / UNAVAILABLE, each retried after a pause.
    pub retries: u64,
}

impl Sender {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .timeout(Duration::from_secs(30))
            .connect()
            .await?;
        Ok(Sender { grpc: tonic::client::Grpc::new(channel) })
    }

    async fn export(&mut self, request: Bytes) -> Result<(), Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static(EXPORT);
        self.grpc.unary(tonic::Request::new(request), path, RawCodec).await.map(|_| ())
    }

    /// Sends every request with `concurrency` in flight; retries refusals that say "later".
    /// Fails on any other error.
    pub async fn send_all(&self, requests: &[Bytes], concurrency: usize) -> anyhow::Result<Sent> {
        let next = Arc::new(AtomicU64::new(0));
        let requests: Arc<[Bytes]> = requests.into();
        let workers = (0..concurrency.max(1)).map(|_| {
            let (mut me, next, requests) = (self.clone(), next.clone(), requests.clone());
            tokio::spawn(async move {
                let mut sent = Sent::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(req) = requests.get(i) else { return Ok::<_, anyhow::Error>(sent) };
                    loop {
                        match me.export(req.clone()).await {
                            Ok(()) => break,
                            Err(s) if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable) => {
                                sent.retries += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(s) => anyhow::bail!("export refused: {s}"),
                        }
                    }
                    sent.requests += 1;
                }
            })
        });
        let mut total = Sent::default();
        for w in futures::future::join_all(workers).await {
            let s = w??;
            total.requests += s.requests;
            total.retries += s.retries;
        }
        Ok(total)
    }
}

/// Sends `Bytes` as they are; reads the answer as an `ExportTraceServiceResponse`.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        prost::Message::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// Waits until `done` holds, polling every 50 ms, at most `timeout`; whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_traces::load;

    #[test]
    fn tally_counts_what_a_full_decode_counts() {
        let l = load::generate(300, 5, 200, 3);
        let mut t = Tally::default();
        for r in &l.requests {
            let one = tally(r).expect("a valid request");
            t.spans += one.spans;
            for k in 0..3 {
                t.by_kind[k] += one.by_kind[k];
            }
        }
        assert_eq!(t, Tally { spans: l.spans(), by_kind: l.spans_by_kind });
        assert_eq!(tally(&[0x0a, 0x05, 0x01]), None, "a length past the end is malformed");
    }

    #[tokio::test]
    async fn the_receiver_counts_what_the_sender_sent() {
        let rx = CountingReceiver::start().await.unwrap();
        let l = load::generate(500, 4, 100, 9);
        let sent = Sender::connect(rx.addr).await.unwrap().send_all(&l.requests, 3).await.unwrap();
        assert_eq!(sent.requests, l.requests.len() as u64);
        assert_eq!(rx.counts.spans(), l.spans());
        assert_eq!(rx.counts.of(Kind::Error), l.spans_by_kind[Kind::Error.index()]);
    }
}
