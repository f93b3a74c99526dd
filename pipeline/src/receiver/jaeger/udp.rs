//! The agent protocol: one `emitBatch` call per UDP datagram, compact (6831) or binary (6832).

use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{deliver, metrics, thrift, translate, JaegerError, MAX_DATAGRAM};
use crate::receiver::TraceConsumer;

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

/// Reads datagrams until `stop`; each is decoded, converted and handed over, or counted and dropped.
pub async fn serve(
    socket: UdpSocket,
    format: Format,
    traces: Arc<dyn TraceConsumer>,
    stop: CancellationToken,
) -> Result<(), JaegerError> {
    let transport = format.transport();
    // Larger than any UDP payload, so that an oversized datagram is seen whole and refused.
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(e) => {
                    // ICMP errors and the like surface here; the socket stays usable.
                    tracing::debug!(transport, error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        handle(&buf[..n], format, traces.as_ref());
    }
}

/// One datagram: decoded and handed over, or counted by reason.
pub fn handle(datagram: &[u8], format: Format, traces: &dyn TraceConsumer) {
    let transport = format.transport();
    if datagram.len() > MAX_DATAGRAM {
        metrics().rejected.with_label_values(&[transport, "too_large"]).inc();
        return;
    }
    let decoded = match format {
        Format::Compact => thrift::decode_compact_emit_batch(datagram),
        Format::Binary => thrift::decode_binary_emit_batch(datagram),
    };
    match decoded {
        Ok(batch) => {
            let _ = deliver(traces, transport, translate::to_otlp(batch));
        }
        Err(e) => {
            tracing::debug!(transport, error = %e, "malformed Jaeger datagram dropped");
            metrics().rejected.with_label_values(&[transport, "malformed"]).inc();
        }
    }
}
