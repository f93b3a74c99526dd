//! The agent protocol: one `emitBatch` call per UDP datagram, compact (6831) or binary (6832).
//!
//! A socket is read by several tasks at once (one per core, up to four), and each hands the
//! spans of every datagram already waiting in the socket (up to [`DRAIN_DATAGRAMS`] or [`DRAIN_BYTES`]) to the
//! consumer as one request: one datagram per request cost a queue record, a disk frame and an
//! export per datagram, and the socket's buffer overflowed at about 20,000 datagrams per second.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{deliver, metrics, thrift, translate, JaegerError, MAX_DATAGRAM};
use crate::receiver::intake::Refusal;
use crate::receiver::TraceConsumer;

/// Datagrams taken from the socket without waiting, handed on as one request, and their bytes
/// (so a request stays well under the exporters' `batch.max_bytes`).
const DRAIN_DATAGRAMS: usize = 64;
const DRAIN_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub enum Format {
    Compact,
    Binary,
}

impl Format {
    fn transport(self) -> &'static str {
        match self {
            Format::Compact => "thrift_compact",
            Format::Binary => "thrift_binary",
        }
    }
}

/// Binds `addr` (empty: off) with `SO_RCVBUF` asked to be `buffer` bytes.
pub async fn bind(transport: &'static str, addr: &str, buffer: usize) -> Result<Option<UdpSocket>, JaegerError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let bind_error = |error| JaegerError::Bind { transport, addr: addr.to_string(), error };
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_error)?
        .next()
        .ok_or_else(|| bind_error(std::io::Error::other("no address")))?;
    let socket = Socket::new(Domain::for_address(resolved), Type::DGRAM, Some(Protocol::UDP)).map_err(bind_error)?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(transport, buffer, error = %e, "cannot size the UDP receive buffer");
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&resolved.into()).map_err(bind_error)?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    let socket = UdpSocket::from_std(socket.into()).map_err(bind_error)?;
    tracing::info!(transport, addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), receive_buffer = granted, "Jaeger UDP receiver listening");
    Ok(Some(socket))
}

/// Reads datagrams until `stop`, with one reader task per core (up to four).
pub async fn serve(
    socket: UdpSocket,
    format: Format,
    traces: Arc<dyn TraceConsumer>,
    stop: CancellationToken,
) -> Result<(), JaegerError> {
    let socket = Arc::new(socket);
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        tasks.spawn(read(socket.clone(), format, traces.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One reader: waits for a datagram, takes the ones already waiting behind it, and hands their
/// spans on as one request; each datagram is decoded or counted and dropped on its own.
async fn read(socket: Arc<UdpSocket>, format: Format, traces: Arc<dyn TraceConsumer>, stop: CancellationToken) {
    let transport = format.transport();
    // Larger than any UDP payload, so that an oversized datagram is seen whole and refused.
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(e) => {
                    // ICMP errors and the like surface here; the socket stays usable.
                    tracing::debug!(transport, error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let mut request = ExportTraceServiceRequest::default();
        let mut datagrams = usize::from(take(&buf[..n], format, &mut request));
        let mut bytes = n;
        for _ in 1..DRAIN_DATAGRAMS {
            if bytes >= DRAIN_BYTES {
                break;
            }
            match socket.try_recv_from(&mut buf) {
                Ok((n, _)) => {
                    datagrams += usize::from(take(&buf[..n], format, &mut request));
                    bytes += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => tracing::debug!(transport, error = %e, "UDP receive error"),
            }
        }
        if datagrams > 0 {
            // Every datagram of a refused request is dropped: counted one by one, as they came.
            if let Err(refusal) = deliver(traces.as_ref(), transport, request, datagrams as u64) {
                warn_once(transport, &refusal);
            }
        }
    }
}

/// No client hears of a refused datagram: the first refusal of each transport and reason is
/// logged (the rest are only counted).
fn warn_once(transport: &'static str, refusal: &Refusal) {
    static WARNED: Mutex<Vec<(&str, &str)>> = Mutex::new(Vec::new());
    let key = (transport, refusal.reason());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.contains(&key) {
        warned.push(key);
        tracing::warn!(
            transport,
            reason = key.1,
            error = refusal.message(),
            "Jaeger datagrams dropped (counted in lgtm_agent_jaeger_rejected_total; logged once per reason)"
        );
    }
}

/// One datagram, decoded and converted into `request`; `false` when it is counted and dropped.
fn take(datagram: &[u8], format: Format, request: &mut ExportTraceServiceRequest) -> bool {
    let transport = format.transport();
    if datagram.len() > MAX_DATAGRAM {
        metrics().rejected.with_label_values(&[transport, "too_large"]).inc();
        return false;
    }
    let decoded = match format {
        Format::Compact => thrift::decode_compact_emit_batch(datagram),
        Format::Binary => thrift::decode_binary_emit_batch(datagram),
    };
    match decoded {
        Ok(batch) => {
            request.resource_spans.extend(translate::to_otlp(batch).resource_spans);
            true
        }
        Err(e) => {
            tracing::debug!(transport, error = %e, "malformed Jaeger datagram dropped");
            metrics().rejected.with_label_values(&[transport, "malformed"]).inc();
            false
        }
    }
}
