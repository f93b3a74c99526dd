//! The agent protocol: one `emitBatch` call per UDP datagram, compact (6831) or binary (6832).
//!
//! Each listener is several sockets bound to the same address with `SO_REUSEPORT` (one per core,
//! up to four), so the kernel spreads datagrams over them by their source (one client's datagrams
//! all go to one socket, in order) and each socket has its own receive buffer; one reader task
//! per socket. A reader takes the datagrams already waiting with `recvmmsg` ([`SLOTS`] per system
//! call, Linux), reads each straight into the OTLP encoding ([`super::direct`]) and hands the
//! spans of up to [`DRAIN_DATAGRAMS`] datagrams or [`DRAIN_BYTES`] on to the consumer as one
//! request, datagrams of one process merged into one resource: one datagram per request cost a
//! queue record, a disk frame and an export per datagram, and one socket read by one task
//! overflowed at about 20,000 datagrams per second. A reader that emptied its socket waits
//! [`PAUSE`] before looking again, so that it wakes per batch of datagrams, not per datagram.
//!
//! What the kernel drops when a socket's buffer is full is counted in
//! `lgtm_agent_jaeger_rejected_total{reason="kernel_dropped"}` (Linux): each socket asks for its
//! drop counter (`SO_RXQ_OVFL`), which comes with the datagrams read after the drops, so drops
//! are counted when the next datagram is read (`/proc/net/udp` shows them at once).
//!
//! With `SO_REUSEPORT`, a second process of the same user that binds the same port with it too
//! shares the datagrams instead of failing with "address in use" (another user's, or a socket
//! without the option, still fails).

use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::direct::{RequestBuilder, Thrift};
use super::{deliver_encoded, metrics, JaegerError, MAX_DATAGRAM};
use crate::receiver::intake::Refusal;
use crate::receiver::TraceConsumer;

/// Datagrams handed on as one request at most, and their bytes (so a request stays well under
/// the exporters' `batch.max_bytes`).
const DRAIN_DATAGRAMS: usize = 64;
const DRAIN_BYTES: usize = 1 << 20;
/// Datagrams read per `recvmmsg` call, each into its own slot that holds any UDP payload (an
/// oversized datagram is seen whole and refused). The slots are one allocation of 1 MiB per
/// reader, of which only the pages datagrams were written to become resident.
const SLOTS: usize = 16;
const SLOT: usize = 65_536;
/// How long a reader that emptied its socket waits before looking again. Woken for every few
/// datagrams, the readers (and the queue's consumers after them) spent about a fifth of the
/// agent's CPU at 50,000 datagrams per second switching tasks; waiting lets datagrams gather
/// (about 25 per millisecond per socket there) in a buffer that holds thousands, and adds at
/// most a couple of milliseconds before spans are queued.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

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

    fn thrift(self) -> Thrift {
        match self {
            Format::Compact => Thrift::Compact,
            Format::Binary => Thrift::Binary,
        }
    }
}

/// Sockets per listener: one per core, up to four.
fn sockets_per_listener() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

/// Binds `addr` (empty: off, no socket) with one socket per core sharing it (`SO_REUSEPORT`),
/// each with `SO_RCVBUF` asked to be `buffer` bytes.
pub async fn bind(transport: &'static str, addr: &str, buffer: usize) -> Result<Vec<UdpSocket>, JaegerError> {
    bind_n(transport, addr, buffer, sockets_per_listener()).await
}

/// [`bind`] with `count` sockets.
pub async fn bind_n(
    transport: &'static str,
    addr: &str,
    buffer: usize,
    count: usize,
) -> Result<Vec<UdpSocket>, JaegerError> {
    if addr.is_empty() {
        return Ok(Vec::new());
    }
    let bind_error = |error| JaegerError::Bind { transport, addr: addr.to_string(), error };
    let mut at = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_error)?
        .next()
        .ok_or_else(|| bind_error(std::io::Error::other("no address")))?;
    let mut sockets = Vec::with_capacity(count);
    let mut granted = 0;
    for i in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP)).map_err(bind_error)?;
        #[cfg(unix)]
        socket.set_reuse_port(true).map_err(bind_error)?;
        if let Err(e) = socket.set_recv_buffer_size(buffer) {
            if i == 0 {
                tracing::warn!(transport, buffer, error = %e, "cannot size the UDP receive buffer");
            }
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = mmsg::count_drops(&socket) {
            tracing::debug!(transport, error = %e, "SO_RXQ_OVFL refused: kernel drops not counted");
        }
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&at.into()).map_err(bind_error)?;
        if i == 0 {
            // Port 0: the others join the port the first one was given.
            at = socket.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(at);
            granted = socket.recv_buffer_size().unwrap_or(0);
        }
        sockets.push(UdpSocket::from_std(socket.into()).map_err(bind_error)?);
    }
    tracing::info!(transport, addr = %at, sockets = sockets.len(), receive_buffer = granted, "Jaeger UDP receiver listening");
    Ok(sockets)
}

/// Reads datagrams until `stop`, one reader task per socket. A reader that ends before `stop`
/// (it panicked) is an error of the listener: the kernel would keep routing some clients'
/// datagrams to its socket, unread and uncounted.
pub async fn serve(
    sockets: Vec<UdpSocket>,
    format: Format,
    traces: Arc<dyn TraceConsumer>,
    stop: CancellationToken,
) -> Result<(), JaegerError> {
    let mut tasks = tokio::task::JoinSet::new();
    for socket in sockets {
        tasks.spawn(read(socket, format, traces.clone(), stop.clone()));
    }
    while let Some(ended) = tasks.join_next().await {
        if !stop.is_cancelled() {
            let message = match ended {
                Err(e) => format!("a reader of the UDP socket failed: {e}"),
                Ok(()) => "a reader of the UDP socket stopped".to_string(),
            };
            return Err(JaegerError::Serve { transport: format.transport(), message });
        }
    }
    Ok(())
}

/// One reader: waits for datagrams, takes the ones waiting (up to [`DRAIN_DATAGRAMS`] or
/// [`DRAIN_BYTES`]) and hands their spans on as one request; each datagram is decoded or counted
/// and dropped on its own.
async fn read(socket: UdpSocket, format: Format, traces: Arc<dyn TraceConsumer>, stop: CancellationToken) {
    let transport = format.transport();
    let mut slots = Slots::new(transport);
    // Datagrams are read straight into the request's encoding, in buffers kept from request to
    // request.
    let mut request = RequestBuilder::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ready = socket.readable() => if let Err(e) = ready {
                tracing::debug!(transport, error = %e, "UDP socket not readable");
                continue;
            },
        }
        let (mut datagrams, mut taken, mut bytes) = (0, 0u64, 0);
        let mut emptied = false;
        while datagrams < DRAIN_DATAGRAMS && bytes < DRAIN_BYTES {
            let room = (DRAIN_DATAGRAMS - datagrams).min(SLOTS);
            match socket.try_io(Interest::READABLE, || slots.receive(&socket, room)) {
                Ok(n) => {
                    for i in 0..n {
                        let datagram = slots.datagram(i);
                        bytes += datagram.len();
                        taken += u64::from(take(datagram, format, &mut request));
                    }
                    datagrams += n;
                    if n < room {
                        emptied = true;
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    emptied = true;
                    break;
                }
                Err(e) => {
                    // ICMP errors and the like surface here; the socket stays usable.
                    tracing::debug!(transport, error = %e, "UDP receive error");
                    emptied = true;
                    break;
                }
            }
        }
        if taken > 0 {
            // Every datagram of a refused request is dropped: counted one by one, as they came.
            let (encoded, spans) = request.finish();
            if let Err(refusal) = deliver_encoded(traces.as_ref(), transport, encoded, spans, taken) {
                warn_once(transport, &refusal);
            }
        }
        if emptied {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PAUSE) => {}
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

/// One datagram, read into `request`; `false` when it is counted and dropped.
fn take(datagram: &[u8], format: Format, request: &mut RequestBuilder) -> bool {
    let transport = format.transport();
    if datagram.len() > MAX_DATAGRAM {
        metrics().rejected.with_label_values(&[transport, "too_large"]).inc();
        return false;
    }
    match request.add(datagram, format.thrift()) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(transport, error = %e, "malformed Jaeger datagram dropped");
            metrics().rejected.with_label_values(&[transport, "malformed"]).inc();
            false
        }
    }
}

/// A reader's receive buffers.
struct Slots {
    buf: Vec<u8>,
    lens: [usize; SLOTS],
    #[cfg(target_os = "linux")]
    drops: mmsg::Drops,
}

impl Slots {
    fn new(transport: &'static str) -> Slots {
        #[cfg(not(target_os = "linux"))]
        let _ = transport;
        Slots {
            // Zeroed by the allocator's fresh pages (calloc), not written: untouched slots stay
            // out of the resident set.
            buf: vec![0u8; SLOTS * SLOT],
            lens: [0; SLOTS],
            #[cfg(target_os = "linux")]
            drops: mmsg::Drops::new(transport),
        }
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Up to `room` datagrams (at most [`SLOTS`]) without waiting; `WouldBlock` when none.
    #[cfg(target_os = "linux")]
    fn receive(&mut self, socket: &UdpSocket, room: usize) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        mmsg::receive(socket.as_raw_fd(), &mut self.buf, &mut self.lens[..room.min(SLOTS)], &mut self.drops)
    }

    /// One datagram at a time where `recvmmsg` does not exist.
    #[cfg(not(target_os = "linux"))]
    fn receive(&mut self, socket: &UdpSocket, _room: usize) -> std::io::Result<usize> {
        let (n, _) = socket.try_recv_from(&mut self.buf[..SLOT])?;
        self.lens[0] = n;
        Ok(1)
    }
}

/// `recvmmsg(2)` and the socket's drop counter, through `libc`: neither tokio nor socket2 read
/// several datagrams per system call, and at 50,000 datagrams per second one `recvfrom` each
/// (plus a readiness check) was a tenth of the reader's time.
#[cfg(target_os = "linux")]
mod mmsg {
    use std::io;
    use std::os::fd::{AsRawFd, RawFd};

    use super::{metrics, SLOT, SLOTS};

    /// Room for one `SO_RXQ_OVFL` control message (a `cmsghdr` and a `u32`), aligned as a
    /// `cmsghdr` must be.
    const CONTROL_WORDS: usize = 8;

    /// Asks the kernel to attach the socket's drop counter to the datagrams read.
    pub fn count_drops(socket: &socket2::Socket) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, and a pointer to an int of the size given.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RXQ_OVFL,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The socket's drop counter as last seen, and the counter it is counted into.
    pub struct Drops {
        seen: u32,
        counter: prometheus::IntCounter,
    }

    impl Drops {
        pub fn new(transport: &'static str) -> Drops {
            Drops { seen: 0, counter: metrics().rejected.with_label_values(&[transport, "kernel_dropped"]) }
        }

        /// `total` is the counter when a datagram was queued: cumulative, so only a newer
        /// value (modulo 2^32) counts, by its difference.
        fn saw(&mut self, total: u32) {
            let more = total.wrapping_sub(self.seen);
            if more != 0 && more < 1 << 31 {
                self.seen = total;
                self.counter.inc_by(u64::from(more));
            }
        }
    }

    /// Reads up to `lens.len()` datagrams into the `SLOT`-sized slots of `buf`, their lengths into
    /// `lens`; `WouldBlock` when none is waiting.
    pub fn receive(fd: RawFd, buf: &mut [u8], lens: &mut [usize], drops: &mut Drops) -> io::Result<usize> {
        let room = lens.len().min(SLOTS);
        assert!(buf.len() >= room * SLOT);
        let mut control = [[0u64; CONTROL_WORDS]; SLOTS];
        // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
        let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for (i, (slot, ctl)) in buf.chunks_exact_mut(SLOT).zip(control.iter_mut()).take(room).enumerate() {
            iov[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: SLOT };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_iov = &mut iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = ctl.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(ctl) as _;
        }
        // SAFETY: `room` headers, each pointing at one iovec over its own slot of `buf` and at its
        // own control buffer, all alive and unaliased until the call returns; MSG_DONTWAIT never
        // blocks the runtime's thread.
        let n = unsafe {
            libc::recvmmsg(fd, msgs.as_mut_ptr(), room as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, msg) in msgs.iter().take(n).enumerate() {
            // A datagram larger than its slot (not possible over IPv4) reads as too large.
            lens[i] = if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 { SLOT } else { msg.msg_len as usize };
            // SAFETY: the header as the kernel filled it in; its control length bounds the walk.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                        drops.saw(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>()));
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg.msg_hdr, cmsg);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::receiver::jaeger::encode;
    use crate::receiver::jaeger::model::{trace_id, Batch, Process, Span, Tag, TagValue};
    use crate::receiver::ConsumeError;

    /// Every request the readers handed on.
    #[derive(Default)]
    struct Collect(Mutex<Vec<ExportTraceServiceRequest>>);

    impl TraceConsumer for Collect {
        fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(request);
            Ok(())
        }
    }

    impl Collect {
        /// Span name -> times seen, once `spans` spans came (or after 10 s).
        async fn wait_for(&self, spans: usize) -> BTreeMap<String, usize> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut seen = BTreeMap::new();
                for rs in self.0.lock().unwrap().iter().flat_map(|r| &r.resource_spans) {
                    for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                        *seen.entry(span.name.clone()).or_insert(0) += 1;
                    }
                }
                if seen.values().sum::<usize>() >= spans || tokio::time::Instant::now() > deadline {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn batch(service: &str, client: usize, seq: usize) -> Batch {
        Batch {
            process: Process {
                service_name: service.into(),
                tags: vec![Tag::new("client", TagValue::Long(client as i64))],
            },
            spans: (0..3)
                .map(|i| Span {
                    trace_id: trace_id(client as i64, seq as i64),
                    span_id: (i as i64 + 1).to_be_bytes(),
                    operation_name: format!("c{client}-s{seq}-{i}"),
                    ..Span::default()
                })
                .collect(),
        }
    }

    /// Datagrams the kernel dropped on the sockets of `port` (`/proc/net/udp`, last column).
    fn kernel_drops(port: u16) -> u64 {
        let local = format!(":{port:04X}");
        std::fs::read_to_string("/proc/net/udp")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&local)))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    }

    fn sockets_on(port: u16) -> usize {
        let local = format!(":{port:04X}");
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        table.lines().filter(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&local))).count()
    }

    fn rejected(transport: &str, reason: &str) -> u64 {
        metrics().rejected.with_label_values(&[transport, reason]).get()
    }

    /// Four sockets share one port; 64 clients (64 source ports, which the kernel spreads over
    /// them) send 5 datagrams each: every span arrives once, whichever socket it came through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_sockets_on_one_port_all_feed_the_consumer_every_span_once() {
        let sockets = bind_n("thrift_compact", "127.0.0.1:0", 1 << 20, 4).await.unwrap();
        let addr = sockets[0].local_addr().unwrap();
        assert!(sockets.iter().all(|s| s.local_addr().unwrap() == addr));
        assert_eq!(sockets_on(addr.port()), 4, "four sockets bound to {addr}");
        let collect = Arc::new(Collect::default());
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(sockets, Format::Compact, collect.clone(), stop.clone()));
        let (clients, per_client) = (64, 5);
        for client in 0..clients {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for seq in 0..per_client {
                socket.send_to(&encode::compact_emit_batch(&batch("svc", client, seq)), addr).unwrap();
            }
        }
        let seen = collect.wait_for(clients * per_client * 3).await;
        assert_eq!(kernel_drops(addr.port()), 0, "nothing dropped by the kernel (else the test proves nothing)");
        assert_eq!(seen.len(), clients * per_client * 3, "every span");
        assert!(seen.values().all(|&n| n == 1), "none twice");
        stop.cancel();
        served.await.unwrap().unwrap();
    }

    /// Datagrams waiting together are one request, a process's spans under one resource, in the
    /// order sent.
    #[tokio::test]
    async fn waiting_datagrams_of_one_process_are_one_request_with_one_resource() {
        let sockets = bind_n("thrift_binary", "127.0.0.1:0", 1 << 20, 1).await.unwrap();
        let addr = sockets[0].local_addr().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Sent before anyone reads: all waiting at once.
        for seq in 0..10 {
            client.send_to(&encode::binary_emit_batch(&batch("one", 1, seq)), addr).unwrap();
        }
        client.send_to(&encode::binary_emit_batch(&batch("two", 2, 0)), addr).unwrap();
        let collect = Arc::new(Collect::default());
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(sockets, Format::Binary, collect.clone(), stop.clone()));
        assert_eq!(collect.wait_for(33).await.len(), 33);
        stop.cancel();
        served.await.unwrap().unwrap();
        let requests = collect.0.lock().unwrap();
        assert_eq!(requests.len(), 1, "one request");
        let resources = &requests[0].resource_spans;
        assert_eq!(resources.len(), 2, "one resource per process");
        let names: Vec<&str> =
            resources[0].scope_spans.iter().flat_map(|ss| &ss.spans).map(|s| s.name.as_str()).collect();
        let want: Vec<String> = (0..10).flat_map(|seq| (0..3).map(move |i| format!("c1-s{seq}-{i}"))).collect();
        assert_eq!(names, want);
    }

    /// Datagrams the kernel drops on a full socket are counted as `kernel_dropped` once the next
    /// datagram is read, as many as `/proc/net/udp` shows.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn datagrams_the_kernel_drops_are_counted() {
        // The smallest buffer the kernel grants (a few KiB): 200 datagrams of ~1 KiB overflow it.
        let sockets = bind_n("thrift_binary", "127.0.0.1:0", 1, 1).await.unwrap();
        let addr = sockets[0].local_addr().unwrap();
        let before = rejected("thrift_binary", "kernel_dropped");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = encode::binary_emit_batch(&batch(&"x".repeat(1000), 3, 0));
        for _ in 0..200 {
            client.send_to(&datagram, addr).unwrap();
        }
        let dropped = kernel_drops(addr.port());
        assert!(dropped > 0, "the kernel dropped some");
        let collect = Arc::new(Collect::default());
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(sockets, Format::Binary, collect.clone(), stop.clone()));
        // Read what waits, then one more datagram, queued after the drops, brings the counter.
        collect.wait_for(3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send_to(&datagram, addr).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rejected("thrift_binary", "kernel_dropped") - before < dropped && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rejected("thrift_binary", "kernel_dropped") - before, dropped);
        let taken = collect.wait_for((201 - dropped as usize) * 3).await.values().sum::<usize>() as u64;
        assert_eq!(taken / 3 + dropped, 201, "every datagram taken or counted as dropped");
        stop.cancel();
        served.await.unwrap().unwrap();
    }
}
