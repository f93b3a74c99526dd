//! A test OTLP/gRPC trace receiver (the real `TraceService` from the OTLP protos) that records
//! each request with its `x-scope-orgid` and `grpc-encoding` metadata, and can answer UNAVAILABLE,
//! or refuse requests over a receive limit with grpc-go's RESOURCE_EXHAUSTED text.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct ReceivedExport {
    pub tenant: Option<String>,
    pub encoding: Option<String>,
    pub request: ExportTraceServiceRequest,
}

#[derive(Default)]
pub struct ReceiverState {
    pub exports: Vec<ReceivedExport>,
    pub fail_next: VecDeque<tonic::Code>,
    /// The server's receive limit (Tempo's distributor: grpc-go's 4 MiB): a larger request is
    /// refused as grpc-go refuses it.
    pub max_message: Option<usize>,
    /// Requests refused for their size.
    pub too_large: usize,
}

#[derive(Clone)]
struct Svc(Arc<Mutex<ReceiverState>>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut st = self.0.lock().expect("receiver state");
        if let Some(code) = st.fail_next.pop_front() {
            return Err(Status::new(code, "injected failure"));
        }
        if let Some(max) = st.max_message {
            let len = prost::Message::encoded_len(req.get_ref());
            if len > max {
                st.too_large += 1;
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message after decompression larger than max ({len} vs. {max})"
                )));
            }
        }
        let md = req.metadata();
        let tenant = md.get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_string);
        let encoding = md.get("grpc-encoding").and_then(|v| v.to_str().ok()).map(str::to_string);
        st.exports.push(ReceivedExport { tenant, encoding, request: req.into_inner() });
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind otlp receiver");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let svc = TraceServiceServer::new(Svc(state.clone()))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.await;
                })
                .await;
        });
        OtlpReceiver { addr, state, _stop: tx }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().expect("receiver state")
    }

    pub fn span_count(&self) -> usize {
        self.state()
            .exports
            .iter()
            .flat_map(|e| &e.request.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}
