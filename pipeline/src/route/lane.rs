//! One replica: its queue of requests and the task that exports them over OTLP/gRPC.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::Instrument;

use super::{metrics, TraceRouter};
use crate::backoff::Backoff;
use crate::receiver::span_count;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Lane {
    tx: mpsc::UnboundedSender<(ExportTraceServiceRequest, usize)>,
    retired: Arc<AtomicBool>,
}

impl Lane {
    pub fn spawn(addr: SocketAddr, router: Weak<TraceRouter>, timeout: Duration) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let retired = Arc::new(AtomicBool::new(false));
        let task = run(addr, rx, router, retired.clone(), timeout);
        tokio::spawn(task.instrument(tracing::info_span!("trace_route_lane", replica = %addr)));
        Lane { tx, retired }
    }

    /// Queues a request counted in the router's pending bytes.
    pub fn push(&self, req: ExportTraceServiceRequest, size: usize) {
        // The task only ends after `retire`, which happens after the lane left the member map.
        let _ = self.tx.send((req, size));
    }

    /// The replica left: the task hands back what it holds and ends.
    pub fn retire(self) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

fn client(addr: SocketAddr, timeout: Duration) -> Option<TraceServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?.timeout(timeout).connect_timeout(timeout);
    Some(
        TraceServiceClient::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(4 << 20),
    )
}

async fn run(
    addr: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<(ExportTraceServiceRequest, usize)>,
    router: Weak<TraceRouter>,
    retired: Arc<AtomicBool>,
    timeout: Duration,
) {
    let Some(mut grpc) = client(addr, timeout) else { return };
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            // Wake up now and then to notice retirement while idle.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if retired.load(Ordering::Relaxed) { rx.close(); }
                continue;
            }
        };
        let Some((req, size)) = next else { break };
        let Some(router) = router.upgrade() else { break };
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            if retired.load(Ordering::Relaxed) {
                router.reroute(req, size);
                break;
            }
            match grpc.export(req.clone()).await {
                Ok(_) => {
                    metrics::route().forwarded.inc_by(span_count(&req) as u64);
                    router.done(size);
                    break;
                }
                Err(status) if retryable(status.code()) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "replica refused; retrying");
                    metrics::route().retries.inc();
                    tokio::time::sleep(backoff.next_delay(None)).await;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "replica refused spans; dropped");
                    metrics::route()
                        .dropped
                        .with_label_values(&[&format!("{:?}", status.code())])
                        .inc_by(span_count(&req) as u64);
                    router.done(size);
                    break;
                }
            }
        }
    }
    // Retired (or the router is gone): whatever is still queued goes elsewhere.
    rx.close();
    if let Some(router) = router.upgrade() {
        while let Ok((req, size)) = rx.try_recv() {
            router.reroute(req, size);
        }
    }
}

/// Failures worth waiting out. UNKNOWN and INTERNAL cover transport errors (refused
/// connections, resets) as tonic reports them.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}
