//! How every TCP receiver serves its clients within `otlp.limits`, whoever they are:
//!
//! - at most `max_connections` open connections per listener: one more is closed as soon as it
//!   is accepted and counted in `lgtm_agent_receiver_connections_refused_total{receiver}`;
//! - HTTP/1: the request head within `header_timeout` (hyper's read timer), else the connection
//!   is closed; the whole request, body included, within `request_timeout`, else 408 and the
//!   connection closed (`lgtm_agent_receiver_timeouts_total{receiver}`);
//! - HTTP/2 and gRPC: `max_concurrent_streams` per connection, keepalive pings every
//!   `keepalive_interval`, the connection closed when one is not answered in `keepalive_timeout`;
//!   gRPC requests within `request_timeout` (tonic answers CANCELLED);
//! - request bodies held by all receivers together within `max_in_flight_bytes` (in
//!   [`super::body`]).
//!
//! axum's `serve` sets none of these (no timer, so no header timeout; no cap), hence this loop
//! over hyper-util's connection builder, which axum's `serve` also uses.

use std::convert::Infallible;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lgtm_config::ReceiverLimits;
use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::{counter_vec, int_gauge_vec};

/// How long a stopping receiver waits for the requests in flight before it closes them.
const DRAIN: Duration = Duration::from_secs(5);

struct ServeMetrics {
    refused: IntCounterVec,
    open: IntGaugeVec,
    timeouts: IntCounterVec,
}

fn metrics() -> &'static ServeMetrics {
    static M: LazyLock<ServeMetrics> = LazyLock::new(|| ServeMetrics {
        refused: counter_vec(
            "lgtm_agent_receiver_connections_refused_total",
            "Connections closed at once because the receiver had otlp.limits.max_connections open.",
            &["receiver"],
        ),
        open: int_gauge_vec("lgtm_agent_receiver_connections", "Open connections, by receiver.", &["receiver"]),
        timeouts: counter_vec(
            "lgtm_agent_receiver_timeouts_total",
            "HTTP requests answered 408 because they did not arrive whole within otlp.limits.request_timeout.",
            &["receiver"],
        ),
    });
    &M
}

/// Accepts connections up to the cap; the excess is closed and counted.
struct CappedAccept {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    receiver: &'static str,
}

impl CappedAccept {
    fn new(listener: TcpListener, limits: &ReceiverLimits, receiver: &'static str) -> CappedAccept {
        CappedAccept { listener, slots: Arc::new(Semaphore::new(limits.max_connections)), receiver }
    }

    async fn accept(&self) -> Capped {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(receiver = self.receiver, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    metrics().open.with_label_values(&[self.receiver]).inc();
                    return Capped { stream, _slot: slot, receiver: self.receiver };
                }
                Err(_) => {
                    metrics().refused.with_label_values(&[self.receiver]).inc();
                    drop(stream);
                }
            }
        }
    }
}

/// An accepted connection holding one of its listener's slots until it is dropped.
pub struct Capped {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    receiver: &'static str,
}

impl Drop for Capped {
    fn drop(&mut self) {
        metrics().open.with_label_values(&[self.receiver]).dec();
    }
}

impl AsyncRead for Capped {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`; then stops accepting, lets the
/// requests in flight finish (at most [`DRAIN`]) and returns.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: ReceiverLimits,
    receiver: &'static str,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let accept = CappedAccept::new(listener, &limits, receiver);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout.get());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval.get())
        .keep_alive_timeout(limits.keepalive_timeout.get());
    let builder = Arc::new(builder);
    let request_timeout = limits.request_timeout.get();
    let header_timeout = limits.header_timeout.get();
    // Each connection's task holds a clone; shutdown waits for the last one.
    let connections = Arc::new(());
    loop {
        let io = tokio::select! {
            io = accept.accept() => io,
            _ = shutdown.cancelled() => break,
        };
        let router = router.clone();
        // hyper's header timer starts with the first byte of a request head: a connection that
        // sends nothing at all is closed here after the same time.
        let spoke = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first_request = spoke.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let router = router.clone();
            first_request.store(true, std::sync::atomic::Ordering::Relaxed);
            async move {
                let req = req.map(axum::body::Body::new);
                match tokio::time::timeout(request_timeout, router.oneshot(req)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        metrics().timeouts.with_label_values(&[receiver]).inc();
                        let message = format!("the request did not arrive whole within {request_timeout:?}");
                        Ok::<_, Infallible>((StatusCode::REQUEST_TIMEOUT, message).into_response())
                    }
                }
            }
        });
        let (builder, stop, alive) = (builder.clone(), shutdown.clone(), connections.clone());
        tokio::spawn(async move {
            let _alive = alive;
            let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
            let silent = async {
                tokio::time::sleep(header_timeout).await;
                if spoke.load(std::sync::atomic::Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = silent => return,
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(DRAIN, conn).await;
        });
    }
    let until = tokio::time::Instant::now() + DRAIN + Duration::from_secs(1);
    while Arc::strong_count(&connections) > 1 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The gRPC server builder with `limits` applied (timeouts, streams, keepalive).
pub fn grpc_server(limits: &ReceiverLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(limits.request_timeout.get())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval.get()))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout.get()))
        .tcp_nodelay(true)
}

/// The connections of `listener`, capped: what [`grpc_server`]'s `serve_with_incoming_shutdown`
/// takes.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: &ReceiverLimits,
    receiver: &'static str,
) -> impl futures::Stream<Item = Result<Capped, io::Error>> + Send + 'static {
    let accept = Arc::new(CappedAccept::new(listener, limits, receiver));
    futures::stream::unfold(accept, |accept| async move {
        let io = accept.accept().await;
        Some((Ok(io), accept))
    })
}
