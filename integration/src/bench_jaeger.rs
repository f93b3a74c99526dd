//! The `jaeger` bench workload: Thrift compact `emitBatch` datagrams (the Jaeger agent protocol,
//! UDP 6831; with `binary`, Thrift binary ones as to 6832) sent to the release `lgtm-agent` at increasing rates; the agent exports to an
//! in-process OTLP/gRPC receiver that only counts spans, walking the protobuf without decoding it
//! ([`crate::bench_traces::wire::CountingReceiver`]: the bench shares the machine with the agent,
//! and a receiver decoding 500,000 spans per second into prost structs took CPU the agent needed).
//!
//! The datagrams are sent from `senders` sockets in turn (as from that many clients: the agent's
//! `SO_REUSEPORT` sockets are chosen by the sender's address and port, so one sending socket
//! would reach one of them only).
//!
//! Per step it prints the datagrams/s offered, the spans/s the agent took
//! (`lgtm_agent_jaeger_received_total`), the agent's CPU (utime + stime from `/proc`, in cores
//! and in microseconds per datagram taken), spans per CPU-second, the sending thread's CPU and
//! the whole bench process's (sender and OTLP receiver; they share the machine), the datagrams the kernel dropped because a socket's receive buffer was
//! full (`drops` of the port's sockets in `/proc/net/udp`), what the agent counted as dropped
//! (`lgtm_agent_jaeger_rejected_total`, whose `kernel_dropped` reason is the kernel's drops as
//! the agent saw them) and the drop rate: datagrams sent whose spans were not taken, over
//! datagrams sent. With `rates` it runs those steps in order (the curve); otherwise it doubles
//! from `start_rate` and stops after the first step whose drop rate is over 1%, or at `max_rate`.
//! At the end it waits for the exporter and compares the spans exported with the spans taken.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::AgentProcess;
use crate::bench_traces::wire::CountingReceiver;
use lgtm_pipeline::receiver::jaeger::encode;
use lgtm_pipeline::receiver::jaeger::model::{trace_id, Batch, Process, Span, Tag, TagValue};

#[derive(Debug, Clone)]
pub struct JaegerBench {
    /// Spans per datagram.
    pub spans_per_batch: usize,
    /// First rate, datagrams per second; each step doubles it.
    pub start_rate: u64,
    pub max_rate: u64,
    /// Fixed rates, datagrams per second, run in order whatever the drops (empty: doubling).
    pub rates: Vec<u64>,
    /// Sending sockets, used in turn.
    pub senders: usize,
    /// Length of each step.
    pub step: Duration,
    /// `otlp.jaeger.udp_receive_buffer` of the agent.
    pub receive_buffer: u64,
    /// Thrift binary datagrams to `thrift_binary` instead of compact ones to `thrift_compact`.
    pub binary: bool,
    pub agent_bin: Option<PathBuf>,
}

impl Default for JaegerBench {
    fn default() -> Self {
        JaegerBench {
            spans_per_batch: 10,
            start_rate: 1_000,
            max_rate: 256_000,
            rates: Vec::new(),
            senders: 8,
            step: Duration::from_secs(5),
            receive_buffer: 8 * 1024 * 1024,
            binary: false,
            agent_bin: None,
        }
    }
}

/// A client's `Batch` numbered `seq`: `spans` spans of one trace, of one service.
pub fn batch(seq: u64, spans: usize) -> Batch {
    let tid = trace_id(0x5eed, seq as i64);
    Batch {
        process: Process {
            service_name: "tns-app".into(),
            tags: vec![
                Tag::new("hostname", TagValue::Str("bench-node".into())),
                Tag::new("jaeger.version", TagValue::Str("Go-2.30.0".into())),
            ],
        },
        spans: (0..spans)
            .map(|i| Span {
                trace_id: tid,
                span_id: ((seq << 8) | (i as u64 + 1)).to_be_bytes(),
                parent_span_id: if i == 0 { [0; 8] } else { ((seq << 8) | 1).to_be_bytes() },
                operation_name: format!("GET /api/albums/{i}"),
                flags: 1,
                start_unix_nano: 1_700_000_000_000_000_000 + seq * 1_000_000,
                duration_nano: 1_234_000,
                tags: vec![
                    Tag::new("span.kind", TagValue::Str("server".into())),
                    Tag::new("http.method", TagValue::Str("GET".into())),
                    Tag::new("http.status_code", TagValue::Long(200)),
                    Tag::new("sampler.type", TagValue::Str("const".into())),
                ],
                ..Span::default()
            })
            .collect(),
    }
}

pub async fn run(b: JaegerBench) -> anyhow::Result<()> {
    let bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let receiver = CountingReceiver::start().await?;
    let tempo = receiver.addr;

    let dir = tempfile::tempdir()?;
    let (admin, udp_port) = (crate::free_port(), free_udp_port()?);
    let config = format!(
        "cluster: bench\ntenant: bench\nmode: daemonset\ndata_dir: {data}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  tempo: {{ endpoint: \"http://{tempo}\" }}\n\
         logs: {{ enabled: false }}\n\
         scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
         otlp:\n  grpc: \"\"\n  http: \"\"\n  zipkin: \"\"\n  jaeger:\n    thrift_compact: \"{compact}\"\n    \
         thrift_binary: \"{binary}\"\n    thrift_http: \"\"\n    grpc: \"\"\n    udp_receive_buffer: {buffer}\n",
        data = dir.path().join("data").display(),
        buffer = b.receive_buffer,
        compact = if b.binary { String::new() } else { format!("127.0.0.1:{udp_port}") },
        binary = if b.binary { format!("127.0.0.1:{udp_port}") } else { String::new() },
    );
    let mut agent = AgentProcess::launch(&bin, dir.path(), &config, admin, &[("RUST_LOG", "warn")]).await?;
    let pid = agent.pid();

    let encode: fn(&Batch) -> Vec<u8> = if b.binary { encode::binary_emit_batch } else { encode::compact_emit_batch };
    let datagrams: Vec<Vec<u8>> = (0..1024).map(|i| encode(&batch(i, b.spans_per_batch))).collect();
    let avg = datagrams.iter().map(Vec::len).sum::<usize>() / datagrams.len();
    println!(
        "jaeger: Thrift {}, {} spans per datagram ({avg} bytes), receive buffer asked {} KiB (net.core.rmem_max {}), steps of {:?}",
        if b.binary { "binary" } else { "compact" },
        b.spans_per_batch,
        b.receive_buffer / 1024,
        std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap_or_default().trim(),
        b.step
    );
    println!(
        "{:>10} {:>10} {:>11} {:>11} {:>9} {:>8} {:>12} {:>10} {:>9} {:>10} {:>10} {:>8}",
        "offered/s",
        "sent/s",
        "dgrams in/s",
        "spans in/s",
        "agent cpu",
        "us/dgram",
        "spans/cpu-s",
        "sender cpu",
        "bench cpu",
        "kern drop",
        "agent drop",
        "drop %"
    );
    let datagrams = Arc::new(datagrams);
    let rates = if b.rates.is_empty() { None } else { Some(b.rates.clone()) };
    let mut rate = rates.as_ref().map_or(b.start_rate, |r| r[0]);
    let mut step_index = 0;
    let mut taken_total = 0u64;
    loop {
        let before = Snapshot::take(pid, udp_port, admin).await;
        let (d, step, r, senders) = (datagrams.clone(), b.step, rate, b.senders);
        let (sent, sender_cpu) = tokio::task::spawn_blocking(move || send_at(&d, udp_port, r, step, senders)).await??;
        // Let the agent finish what is in its socket buffer before reading the counters.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = Snapshot::take(pid, udp_port, admin).await;
        let taken = after.received - before.received;
        taken_total += taken;
        let cpu = after.cpu - before.cpu;
        let kernel_drops = after.kernel_drops - before.kernel_drops;
        let agent_drops = after.rejected - before.rejected;
        let taken_datagrams = taken as f64 / b.spans_per_batch as f64;
        let lost_datagrams = sent as f64 - taken_datagrams;
        let drop_rate = (lost_datagrams.max(0.0) / sent.max(1) as f64) * 100.0;
        let secs = step.as_secs_f64();
        println!(
            "{:>10} {:>10.0} {:>11.0} {:>11.0} {:>9.2} {:>8.1} {:>12.0} {:>10.2} {:>9.2} {:>10} {:>10} {:>7.2}%",
            rate,
            sent as f64 / secs,
            taken_datagrams / secs,
            taken as f64 / secs,
            cpu / secs,
            cpu * 1e6 / taken_datagrams.max(1.0),
            taken as f64 / cpu.max(1e-9),
            sender_cpu / secs,
            (after.bench_cpu - before.bench_cpu) / secs,
            kernel_drops,
            agent_drops,
            drop_rate
        );
        step_index += 1;
        match &rates {
            Some(rates) => match rates.get(step_index) {
                Some(next) => rate = *next,
                None => break,
            },
            None => {
                if drop_rate > 1.0 {
                    println!(
                        "socket buffer overflow reached at {rate} datagrams/s offered ({:.0} spans/s)",
                        rate as f64 * b.spans_per_batch as f64
                    );
                    break;
                }
                if rate >= b.max_rate {
                    println!("no overflow up to {rate} datagrams/s offered");
                    break;
                }
                rate = (rate * 2).min(b.max_rate);
            }
        }
    }
    // Every span taken is exported once: wait for the exporter's last batches.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.counts.spans() < taken_total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exported = receiver.counts.spans();
    println!(
        "spans taken by the agent: {taken_total}; exported to the OTLP receiver: {exported} ({})",
        if exported == taken_total { "every one, once" } else { "MISMATCH" }
    );
    agent.terminate(Duration::from_secs(20)).await;
    Ok(())
}

/// Sends for `step` at `rate` datagrams per second (paced every millisecond) from `senders`
/// sockets in turn; returns how many, and the CPU-seconds the sending thread used.
fn send_at(datagrams: &[Vec<u8>], port: u16, rate: u64, step: Duration, senders: usize) -> anyhow::Result<(u64, f64)> {
    let sockets = (0..senders.max(1))
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(("127.0.0.1", port))?;
            Ok(socket)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let cpu_before = crate::procstat::Process::Thread.cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < step {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            // ECONNREFUSED and ENOBUFS come back on a busy loopback; those datagrams still count
            // as offered.
            let socket = &sockets[(sent % sockets.len() as u64) as usize];
            let _ = socket.send(&datagrams[(sent % datagrams.len() as u64) as usize]);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((sent, crate::procstat::Process::Thread.cpu_seconds() - cpu_before))
}

struct Snapshot {
    cpu: f64,
    /// The bench process's own CPU-seconds (sender and receiver).
    bench_cpu: f64,
    received: u64,
    /// `lgtm_agent_jaeger_rejected_total`, every reason.
    rejected: u64,
    kernel_drops: u64,
}

impl Snapshot {
    async fn take(pid: u32, port: u16, admin: u16) -> Snapshot {
        let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .and_then(|r| r.error_for_status())
            .map(|r| r.text());
        let text = match metrics {
            Ok(f) => f.await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let sum = |family: &str| {
            text.lines()
                .filter(|l| l.starts_with(family))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Snapshot {
            cpu: crate::procstat::Process::Pid(pid).cpu_seconds(),
            bench_cpu: crate::procstat::Process::This.cpu_seconds(),
            received: sum("lgtm_agent_jaeger_received_total{"),
            rejected: sum("lgtm_agent_jaeger_rejected_total{"),
            kernel_drops: udp_drops(port),
        }
    }
}

/// `drops` of the UDP socket bound to `port`, from `/proc/net/udp` (last column).
fn udp_drops(port: u16) -> u64 {
    let needle = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").ends_with(&needle)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}
