//! The `traces` bench workload: generated OTLP/gRPC load ([`load`]) sent to the release
//! `lgtm-agent`, which exports to an in-process receiver that counts spans by the kind tagged in
//! their trace ID ([`wire`]). Three phases, each with a fresh agent:
//!
//! 1. **ingest**: daemonset mode, no sampling, spans straight to the exporter; and the real
//!    `rotel-agent` (OTLP receiver -> OTLP exporter, both gzip) and, with `--collector`, the
//!    OpenTelemetry Collector (otlp receiver -> batch -> otlp exporter, gzip) with the same load,
//!    one after the other in the same run. Spans per CPU-second of each (utime + stime from `/proc/<pid>/stat`,
//!    from the first request until the receiver has every span) and their ratio.
//! 2. **tail sampling**: cluster mode with the PoC's policies (errors kept, slow kept at 30%),
//!    `decision_wait` short; spans received per CPU-second until every trace is decided and the
//!    kept spans are at the receiver. The receiver checks the decisions: every error span, no
//!    fast span, about 30% of the slow ones.
//! 3. **memory**: cluster mode with a `decision_wait` longer than the phase, so every trace of the
//!    load stays buffered; RSS after the load minus RSS before it, divided by the spans buffered
//!    (`lgtm_agent_sampling_spans_buffered`), against the mean encoded size of a `Span`.
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- traces [--traces 50000] [--spans-per-trace 6] [--concurrency 4] [--ingest-only]
//! ```
//!
//! Figures (2-core VM shared with the other helpers' builds and benches; three runs of the command
//! above with the defaults, medians, 2026-12-06): ingest 329,670 spans/cpu-s (315,789 to 329,670)
//! against rotel-agent's 240,000 in the same runs (1.37x; 1.23x to 1.52x). Requests stay encoded
//! from the receiver to the exporter (`lgtm_pipeline::trace_wire`); gzip in the exporter is now
//! 40% of the agent's CPU. The binary before that, three runs interleaved with three of this one:
//! 145,631 against 245,902 (0.58x), this one 337,079 against 256,410 (1.34x). Receive ->
//! tail-sample -> export 205,479 spans/cpu-s (197,368 to 222,222), a phase this work does not
//! change (179,641 for both binaries in the interleaved runs; 234,375 on 2026-11-25): the sampler
//! decoded every request into prost structs and malloc was a third of its CPU. 424 bytes of RSS
//! per buffered span of 300 encoded bytes (1.42x).
//!
//! The sampler now keeps requests encoded (`lgtm_statefulset::sampling::buffer`): `bench traces
//! --no-rotel --agent-bin <bin>`, binaries of 576e066 and of the change, 3 runs each interleaved,
//! load 6-8, 2026-12-07: receive -> tail-sample -> export 148,515 -> 322,581 spans/cpu-s (medians;
//! runs 144,231/148,515/149,254 and 238,095/370,370/322,581), RSS per buffered span 1.40x ->
//! 1.18x of its encoded size. Left in that phase: the Tempo queue's consumers waking on every push
//! (`DurableQueue::next`: clock reads, timer re-registration, about a fifth of the agent's CPU in
//! a profile), the request walked twice (checked by the receiver, read by the sampler), gzip.
//!
//! The Tempo exporter now frames and gzips its requests itself (`lgtm_pipeline::exporter`'s
//! `grpc_call`): once per request, straight from the queued records, with a compressor kept for
//! the next request, at `exporters.tempo.compression_level` (default 1); tonic compressed at level 6 on every
//! attempt after copying the request, 45% of the agent's ingest CPU in a profile. `bench traces
//! --agent-bin <bin>` (with rotel-agent; the "sent" column is what reached the receiver, gzip and
//! gRPC framing included), main's binary (21d211f) and this one, 3 runs each interleaved, load
//! 4.0-4.6 on the shared 2 cores, 2026-12-07: ingest 309,278 -> 588,235 spans/cpu-s (medians; runs
//! 309,278/326,087/306,122 and 588,235/555,556/681,818), 1.35x -> 2.53x rotel-agent's (232,558
//! median; runs 2.53/2.30/2.93), wall rate 1.56x -> 2.23x rotel's, peak RSS 73 -> 19 MiB, bytes
//! sent 9.5 -> 11.0 MiB (rotel-agent 9.5). The same binary with `--compression-level 6` (gzip as
//! rotel-agent and the Collector do it): 352,941 spans/cpu-s, 1.51x rotel-agent's, 9.5 MiB sent.
//! What is left at level 1 (perf, 4 s of the ingest phase): the receiver 56% (the request copied
//! to add `k8s.cluster.name` 15%, walking it 11.5%, the queue's disk write 12.5%, tonic reading
//! the body 10%), gzip 17%, page faults of fresh request buffers 18% (counted within those).
//!
//! Since then (`bench traces --ingest-only --agent-bin <bin> [--compression-level 6]`, main's
//! ca883bd and this change, 3 runs each interleaved at each level, load 1.7-3.5 on the shared 2
//! cores, 2026-12-07): the receiver queues a request as it came and the Tempo exporter adds
//! `k8s.cluster.name` as it frames it (slices of the record, new length prefixes and the attribute:
//! `lgtm_pipeline::trace_wire::resource_attribute_parts`), levels 2-9 gzip with libdeflate rather
//! than zlib-rs (rotel-agent's flate2 uses miniz_oxide), compressors are pooled per exporter
//! rather than one per sender, and the compressed message is sized exactly. Level 6: 352,941 ->
//! 454,545 spans/cpu-s (medians; runs 365,854/344,828/352,941 and 454,545/400,000/454,545),
//! 1.48x -> 1.92x rotel-agent's (runs 1.66/1.47/1.48 and 1.92/1.81/1.92; three more of this
//! binary at load 6.7: 1.89/1.97/1.94), wall rate 1.54x -> 1.85x, 9.5 -> 9.7 MiB sent. Level 1:
//! 576,923 -> 697,674 spans/cpu-s (runs 566,038/576,923/612,245 and 769,231/697,674/652,174),
//! 2.40x -> 3.00x rotel-agent's, wall rate 1.97x -> 2.25x, 11.0 MiB sent. Left at level 6 (perf):
//! libdeflate 50% of the agent's CPU, the wire check of every span 11%, the rest spread (socket
//! reads, the queue's segment writes, unmapping each request's buffer).//!
//! This process generates the load before any agent starts and sends pre-encoded bytes; the
//! receiver walks the protobuf without decoding it. Both still share the machine's cores with the
//! agent, which is why the figures are per CPU-second of the agent rather than per second.

pub mod load;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::agent::AgentProcess;
use crate::procstat::Process;
use load::{Kind, Load};
use wire::{CountingReceiver, Sender};

/// Options of the `traces` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct TracesBench {
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Traces per phase.
    #[arg(long, default_value_t = 50_000)]
    pub traces: u64,
    /// Spans per trace: a root, a child in a second service, database calls under it.
    #[arg(long, default_value_t = 6)]
    pub spans_per_trace: usize,
    /// Spans per export request (the OpenTelemetry SDKs' default batch is 512).
    #[arg(long, default_value_t = 512)]
    pub spans_per_request: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// `tail_sampling.decision_wait` of the tail-sampling phase.
    #[arg(long, default_value = "1s")]
    pub decision_wait: lgtm_config::Duration,
    /// Leave out the rotel-agent comparison.
    #[arg(long)]
    pub no_rotel: bool,
    /// The agent's gzip level to Tempo (`exporters.tempo.compression_level`); default: the
    /// agent's (1). rotel-agent compresses at 6 (flate2's default), the Collector at Go's default
    /// (6); `6` compares like with like.
    #[arg(long)]
    pub compression_level: Option<u32>,
    /// Also run the OpenTelemetry Collector in the ingest phase (`scripts/build-otelcol.sh`;
    /// `auto`: its cache path).
    #[arg(long)]
    pub collector: Option<PathBuf>,
    /// Run the ingest phase only (its figures and ratios), not tail sampling and memory.
    #[arg(long)]
    pub ingest_only: bool,
}

impl Default for TracesBench {
    fn default() -> Self {
        TracesBench {
            agent_bin: None,
            traces: 50_000,
            spans_per_trace: 6,
            spans_per_request: 512,
            concurrency: 4,
            decision_wait: lgtm_config::Duration::from_secs(1),
            no_rotel: false,
            compression_level: None,
            collector: None,
            ingest_only: false,
        }
    }
}

/// How long a phase may take before the bench gives up on it.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the workload and prints its figures.
pub async fn run(b: TracesBench) -> anyhow::Result<()> {
    let bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let load = load::generate(b.traces, b.spans_per_trace, b.spans_per_request, 0x7e4c_e5e5);
    // Sent before each measurement, so connections, allocator arenas and queues are warm; its
    // trace IDs differ from the load's.
    let warmup = load::generate(2_000, b.spans_per_trace, b.spans_per_request, 0xa11c_e5e5);
    println!(
        "traces: {} traces x {} spans = {} spans in {} requests ({:.1} MiB on the wire), mean span {:.0} bytes encoded; \
         errors {} / slow {} / fast {} traces; {} requests in flight",
        load.traces(),
        b.spans_per_trace,
        load.spans(),
        load.requests.len(),
        load.wire_bytes() as f64 / (1 << 20) as f64,
        load.mean_span_bytes(),
        load.traces_by_kind[Kind::Error.index()],
        load.traces_by_kind[Kind::Slow.index()],
        load.traces_by_kind[Kind::Fast.index()],
        b.concurrency,
    );

    let lgtm = ingest(Ingester::Lgtm, &bin, &load, &warmup, &b).await.context("ingest phase, lgtm-agent")?;
    let rotel = if b.no_rotel {
        None
    } else {
        match crate::peers::rotel::rotel_binary() {
            Some(rotel_bin) => Some(
                ingest(Ingester::Rotel, &rotel_bin, &load, &warmup, &b).await.context("ingest phase, rotel-agent")?,
            ),
            None => {
                println!("rotel-agent is not installed (scripts/install-test-deps.sh): no comparison");
                None
            }
        }
    };
    println!("\n1. OTLP ingest (receive -> export, no sampling)");
    println!(
        "{:<12} {:>10} {:>9} {:>12} {:>14} {:>10} {:>12}",
        "agent", "spans", "cpu-s", "spans/s", "spans/cpu-s", "peak RSS", "sent"
    );
    let collector = match &b.collector {
        Some(path) if path.as_os_str() == "auto" => Some(crate::bench_node::otelcol_cache_path()),
        other => other.clone(),
    };
    let collector = match collector {
        Some(path) => {
            anyhow::ensure!(path.exists(), "no Collector at {} (scripts/build-otelcol.sh builds it)", path.display());
            Some(ingest(Ingester::Collector, &path, &load, &warmup, &b).await.context("ingest phase, otelcol")?)
        }
        None => None,
    };
    for m in [Some(&lgtm), rotel.as_ref(), collector.as_ref()].into_iter().flatten() {
        m.print();
    }
    for peer in [rotel.as_ref(), collector.as_ref()].into_iter().flatten() {
        println!(
            "lgtm-agent / {}: spans per CPU-second {:.2} (issue 21 target >= 2 against rotel-agent), spans per second {:.2} (target >= 1)",
            peer.name,
            lgtm.per_cpu_second() / peer.per_cpu_second().max(1e-9),
            lgtm.per_second() / peer.per_second().max(1e-9),
        );
    }

    if b.ingest_only {
        return Ok(());
    }

    let sampling = tail_sampling(&bin, &load, &warmup, &b).await.context("tail-sampling phase")?;
    println!(
        "\n2. receive -> tail-sample -> export (cluster mode, PoC policies, decision_wait {:?})",
        b.decision_wait.get()
    );
    println!(
        "{:<12} {:>10} {:>9} {:>12} {:>14} {:>10} {:>12}",
        "agent", "spans", "cpu-s", "spans/s", "spans/cpu-s", "peak RSS", "sent"
    );
    sampling.run.print();
    println!("spans received per CPU-second: {:.0} (target >= 400,000)", sampling.run.per_cpu_second());
    sampling.print_decisions(&load);

    let memory = memory(&bin, &load, &b).await.context("memory phase")?;
    println!("\n3. memory of buffered spans (cluster mode, every trace waiting for its decision)");
    memory.print(&load);
    Ok(())
}

/// One measured send of the load through one process.
struct Run {
    name: &'static str,
    spans: u64,
    cpu_seconds: f64,
    wall: Duration,
    peak_rss: u64,
    /// Bytes the process sent to its receiver (compressed, gRPC framing included).
    wire_bytes: u64,
    /// Spans by kind at the receiver once the warm-up was through.
    warm_counts: [u64; 3],
}

impl Run {
    fn per_cpu_second(&self) -> f64 {
        self.spans as f64 / self.cpu_seconds.max(1e-9)
    }

    fn per_second(&self) -> f64 {
        self.spans as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        println!(
            "{:<12} {:>10} {:>9.2} {:>12.0} {:>14.0} {:>6.1} MiB {:>8.1} MiB",
            self.name,
            self.spans,
            self.cpu_seconds,
            self.spans as f64 / self.wall.as_secs_f64(),
            self.per_cpu_second(),
            mib(self.peak_rss),
            mib(self.wire_bytes)
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What one measured phase sends where.
struct Phase<'a> {
    name: &'static str,
    /// The process whose CPU is measured.
    pid: u32,
    /// Its OTLP/gRPC receiver.
    grpc: std::net::SocketAddr,
    load: &'a Load,
    warmup: &'a Load,
    concurrency: usize,
    /// The counting receiver's figures.
    counts: &'a wire::Counts,
}

/// Sends the warm-up and waits for `warm_done`; then sends the load and measures the CPU of the
/// process until `done` holds.
async fn measure<W, WF, D, DF>(p: Phase<'_>, warm_done: W, done: D) -> anyhow::Result<Run>
where
    W: FnMut() -> WF,
    WF: std::future::Future<Output = bool>,
    D: FnMut() -> DF,
    DF: std::future::Future<Output = bool>,
{
    let Phase { name, pid, grpc, load, warmup, concurrency, counts } = p;
    let sender = Sender::connect(grpc).await?;
    sender.send_all(&warmup.requests, concurrency).await?;
    if !wire::wait_until(PHASE_TIMEOUT, warm_done).await {
        bail!("{name}: the warm-up did not get through");
    }
    let warm_counts = Kind::ALL.map(|k| counts.of(k));
    let wire0 = counts.wire_bytes();
    let process = Process::Pid(pid);
    let cpu0 = process.cpu_seconds();
    let t0 = Instant::now();
    let sent = sender.send_all(&load.requests, concurrency).await?;
    if !wire::wait_until(PHASE_TIMEOUT, done).await {
        bail!("{name}: not done within {PHASE_TIMEOUT:?}");
    }
    let wall = t0.elapsed();
    let cpu_seconds = process.cpu_seconds() - cpu0;
    if sent.retries > 0 {
        println!("{name}: {} requests answered 'retry later' and were sent again", sent.retries);
    }
    let wire_bytes = counts.wire_bytes() - wire0;
    Ok(Run {
        name,
        spans: load.spans(),
        cpu_seconds,
        wall,
        peak_rss: process.peak_rss_bytes(),
        wire_bytes,
        warm_counts,
    })
}

/// Which process the ingest phase measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingester {
    Lgtm,
    Rotel,
    Collector,
}

/// Ingest alone: the load through `lgtm-agent` (daemonset mode, no sampling), `rotel-agent` or
/// the Collector, each exporting to its own counting receiver; done when every span has arrived
/// there.
async fn ingest(who: Ingester, bin: &Path, load: &Load, warmup: &Load, b: &TracesBench) -> anyhow::Result<Run> {
    let rx = CountingReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    // Kept alive until measured.
    let (name, pid, grpc, _agent, _peer) = match who {
        Ingester::Lgtm => {
            let a = Agent::start(bin, dir.path(), "daemonset", &rx.endpoint(), "", b.compression_level).await?;
            ("lgtm-agent", a.pid(), a.grpc, Some(a), None)
        }
        Ingester::Rotel => {
            let r = Peer::rotel(bin, dir.path(), &rx.endpoint()).await?;
            ("rotel-agent", r.pid(), r.grpc, None, Some(r))
        }
        Ingester::Collector => {
            let c = Peer::collector(bin, dir.path(), &rx.endpoint()).await?;
            ("otelcol", c.pid(), c.grpc, None, Some(c))
        }
    };
    let counts = rx.counts.clone();
    let (warm, all) = (warmup.spans(), warmup.spans() + load.spans());
    measure(
        Phase { name, pid, grpc, load, warmup, concurrency: b.concurrency, counts: &rx.counts },
        || {
            let c = counts.clone();
            async move { c.spans() >= warm }
        },
        || {
            let c = counts.clone();
            async move { c.spans() >= all }
        },
    )
    .await
}

struct Sampling {
    run: Run,
    /// Spans at the receiver by kind, the warm-up's excluded.
    kept: [u64; 3],
    /// The agent's own count of spans it sampled.
    sampled: f64,
}

impl Sampling {
    fn print_decisions(&self, load: &Load) {
        let row = |k: Kind| (self.kept[k.index()], load.spans_by_kind[k.index()]);
        let (e, es) = row(Kind::Error);
        let (s, ss) = row(Kind::Slow);
        let (f, fs) = row(Kind::Fast);
        println!(
            "kept spans: errors {e}/{es}, slow {s}/{ss} ({:.1}%, policy 30%), fast {f}/{fs}; \
             spans the agent counted sampled, warm-up included: {}",
            100.0 * s as f64 / ss.max(1) as f64,
            self.sampled
        );
        if e != es || f != 0 {
            println!("WARNING: the decisions are not the policies'");
        }
    }
}

async fn tail_sampling(bin: &Path, load: &Load, warmup: &Load, b: &TracesBench) -> anyhow::Result<Sampling> {
    let rx = CountingReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    let sampling = format!(
        "tail_sampling: {{ decision_wait: {}ms, max_traces: {}, max_buffer: 1GiB }}\n",
        b.decision_wait.get().as_millis(),
        b.traces.max(50_000)
    );
    let agent = Agent::start(bin, dir.path(), "cluster", &rx.endpoint(), &sampling, b.compression_level).await?;
    let admin = agent.admin;
    // Decided: every span through the sampler; exported: every sampled span at the receiver.
    let settled = |expected: u64| {
        let counts = rx.counts.clone();
        move || {
            let counts = counts.clone();
            async move {
                let m = Metrics::get(admin).await;
                let decided = m.sum("lgtm_agent_sampling_spans_total", "");
                let sampled = m.sum("lgtm_agent_sampling_spans_total", "decision=\"sampled\"");
                decided >= expected as f64 && counts.spans() as f64 >= sampled
            }
        }
    };
    let run = measure(
        Phase {
            name: "lgtm-agent",
            pid: agent.pid(),
            grpc: agent.grpc,
            load,
            warmup,
            concurrency: b.concurrency,
            counts: &rx.counts,
        },
        settled(warmup.spans()),
        settled(warmup.spans() + load.spans()),
    )
    .await?;
    let kept = Kind::ALL.map(|k| rx.counts.of(k) - run.warm_counts[k.index()]);
    let m = Metrics::get(admin).await;
    Ok(Sampling { run, kept, sampled: m.sum("lgtm_agent_sampling_spans_total", "decision=\"sampled\"") })
}

struct Memory {
    idle_rss: u64,
    loaded_rss: u64,
    spans_buffered: f64,
    traces_buffered: f64,
    buffer_bytes: f64,
}

impl Memory {
    fn print(&self, load: &Load) {
        let per_span = (self.loaded_rss.saturating_sub(self.idle_rss)) as f64 / self.spans_buffered.max(1.0);
        let mean = load.mean_span_bytes();
        println!(
            "buffered: {} traces, {} spans, {:.1} MiB by the sampler's count",
            self.traces_buffered,
            self.spans_buffered,
            self.buffer_bytes / (1 << 20) as f64
        );
        println!(
            "RSS idle {:.1} MiB, with the spans buffered {:.1} MiB: {:.0} bytes per buffered span, \
             {:.2}x the mean encoded span ({:.0} bytes; target <= 2x)",
            mib(self.idle_rss),
            mib(self.loaded_rss),
            per_span,
            per_span / mean,
            mean
        );
    }
}

async fn memory(bin: &Path, load: &Load, b: &TracesBench) -> anyhow::Result<Memory> {
    let rx = CountingReceiver::start().await?;
    let dir = tempfile::tempdir()?;
    let sampling =
        format!("tail_sampling: {{ decision_wait: 30m, max_traces: {}, max_buffer: 4GiB }}\n", b.traces.max(1) * 2);
    let agent = Agent::start(bin, dir.path(), "cluster", &rx.endpoint(), &sampling, b.compression_level).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let process = Process::Pid(agent.pid());
    let idle_rss = process.rss_bytes();
    let sender = Sender::connect(agent.grpc).await?;
    sender.send_all(&load.requests, b.concurrency).await?;
    let admin = agent.admin;
    let spans = load.spans() as f64;
    let buffered = wire::wait_until(PHASE_TIMEOUT, || async move {
        Metrics::get(admin).await.sum("lgtm_agent_sampling_spans_buffered", "") >= spans
    })
    .await;
    if !buffered {
        bail!("the agent did not buffer every span of the load");
    }
    // Let the allocator settle what the requests' decoding used.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded_rss = process.rss_bytes();
    let m = Metrics::get(admin).await;
    Ok(Memory {
        idle_rss,
        loaded_rss,
        spans_buffered: m.sum("lgtm_agent_sampling_spans_buffered", ""),
        traces_buffered: m.sum("lgtm_agent_sampling_traces_buffered", ""),
        buffer_bytes: m.sum("lgtm_agent_sampling_buffer_bytes", ""),
    })
}

/// A `/metrics` text of the agent.
struct Metrics(String);

impl Metrics {
    async fn get(admin: u16) -> Metrics {
        let text = match reqwest::get(format!("http://127.0.0.1:{admin}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Metrics(text)
    }

    /// Sum of the samples of `name` whose line contains `filter`.
    fn sum(&self, name: &str, filter: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The release `lgtm-agent` with only its OTLP/gRPC receiver and the Tempo exporter on.
struct Agent {
    process: AgentProcess,
    grpc: std::net::SocketAddr,
    admin: u16,
}

impl Agent {
    /// `extra`: more top-level YAML (the `tail_sampling` section); `level`: the gzip level to
    /// Tempo, the agent's default when `None`.
    async fn start(
        bin: &Path,
        dir: &Path,
        mode: &str,
        tempo: &str,
        extra: &str,
        level: Option<u32>,
    ) -> anyhow::Result<Agent> {
        let (admin, grpc_port) = (crate::free_port(), crate::free_port());
        let level = level.map(|l| format!(", compression_level: {l}")).unwrap_or_default();
        let config = format!(
            "cluster: bench\ntenant: bench\nmode: {mode}\ndata_dir: {data}\n\
             admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
             exporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  tempo: {{ endpoint: \"{tempo}\"{level} }}\n\
             logs: {{ enabled: false }}\nevents: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
             scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }}, monitors: {{ enabled: false }} }}\n\
             otlp:\n  grpc: \"127.0.0.1:{grpc_port}\"\n  http: \"\"\n  zipkin: \"\"\n  max_request_size: 64MiB\n  \
             jaeger: {{ thrift_compact: \"\", thrift_binary: \"\", thrift_http: \"\", grpc: \"\" }}\n{extra}",
            data = dir.join("data").display(),
        );
        let process = AgentProcess::launch(bin, dir, &config, admin, &[("RUST_LOG", "warn")]).await?;
        Ok(Agent { process, grpc: ([127, 0, 0, 1], grpc_port).into(), admin })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A peer receiving OTLP/gRPC and exporting OTLP/gRPC, killed on drop.
struct Peer {
    name: &'static str,
    child: Child,
    grpc: std::net::SocketAddr,
}

impl Peer {
    /// `rotel-agent`, gzip (its default; level 6, flate2's default) and its defaults otherwise.
    async fn rotel(bin: &Path, dir: &Path, endpoint: &str) -> anyhow::Result<Peer> {
        let (grpc_port, http_port) = (crate::free_port(), crate::free_port());
        let log_path = dir.join("rotel.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .args(["start", "--exporter", "otlp", "--otlp-exporter-endpoint", endpoint])
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--otlp-grpc-max-recv-msg-size-mib")
            .arg("64")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Peer { name: "rotel-agent", child, grpc: ([127, 0, 0, 1], grpc_port).into() }.listening(&log_path).await
    }

    /// The Collector as the PoC's third scenario passes traces on: otlp receiver (64 MiB
    /// messages, as rotel-agent here), memory_limiter, batch, otlp exporter (gzip, its default).
    async fn collector(bin: &Path, dir: &Path, endpoint: &str) -> anyhow::Result<Peer> {
        let grpc_port = crate::free_port();
        let endpoint = endpoint.trim_start_matches("http://");
        let (processors, telemetry) = (crate::peers::otelcol::PROCESSORS, crate::peers::otelcol::TELEMETRY);
        let config = format!(
            r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
        max_recv_msg_size_mib: 64
{processors}exporters:
  otlp:
    endpoint: {endpoint}
    tls:
      insecure: true
service:
{telemetry}  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
"#
        );
        let (child, log_path) = crate::peers::otelcol::spawn(bin, dir, &config)?;
        Peer { name: "otelcol", child, grpc: ([127, 0, 0, 1], grpc_port).into() }.listening(&log_path).await
    }

    /// Waits until the peer accepts connections on its gRPC port (20 s at most).
    async fn listening(mut self, log_path: &Path) -> anyhow::Result<Peer> {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(self.grpc).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}): {}", self.name, std::fs::read_to_string(log_path)?);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{} not listening after 20 s: {}", self.name, std::fs::read_to_string(log_path)?);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(self)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
