//! `bench`: whole-process figures for the agent's workloads.
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- pipeline [--series 10000] [--rounds 60]
//! cargo run --release -p lgtm-integration --bin bench -- logs [--size 1GiB] [--files 100] [--workloads idle,bulk,steady] [--steady-rate 5MiB] [--steady-window 30s]
//! cargo run --release -p lgtm-integration --bin bench -- scrape [--targets 50] [--series 2000] [--interval 5s] [--duration 60s] [--shards N]
//! cargo run --release -p lgtm-integration --bin bench -- cluster-state [--pods 5000] [--deployments 500] [--nodes 50] [--interval 10s] [--intervals 6]
//! cargo run --release -p lgtm-integration --bin bench -- jaeger [--spans-per-batch 10] [--start-rate 1000] [--max-rate 256000] [--rates 10000,20000,...] [--senders 8] [--step 5s] [--receive-buffer 8MiB] [--binary]
//! cargo run --release -p lgtm-integration --bin bench -- node [--window 60s] [--runs 3] [--plot node.svg]
//! cargo run --release -p lgtm-integration --bin bench -- outage [--down 120s] [--log-rate 20MiB] [--series 50000] [--targets 25] [--interval 5s]
//! cargo run --release -p lgtm-integration --bin bench -- request-memory [--size 15MiB]
//! ```
//!
//! `pipeline`: synthetic series pushed through the pipeline (sink -> queue -> remote-write
//! exporter) into a real Prometheus (`--web.enable-remote-write-receiver`); prints samples/s,
//! CPU-seconds per million samples and peak RSS of this process (which contains the whole
//! pipeline). Prometheus runs as a separate process and is not counted.
//!
//! `logs`: a generated CRI tree shipped by the release `lgtm-agent` into an in-process Loki
//! receiver that checks every line; prints MiB/s, CPU-seconds per GiB, peak RSS and idle RSS of
//! the agent, and the receiver's own CPU (see [`lgtm_integration::bench_logs`]).
//!
//! `scrape`: fake targets scraped by the release `lgtm-agent` and by Prometheus in agent mode at
//! once, both remote-writing into a real Prometheus; prints samples/s, CPU-seconds per million
//! samples and RSS per 1,000 active series of each, and their ratios (see
//! [`lgtm_integration::bench_scrape`]).
//!
//! `cluster-state`: Pods, Deployments (with ReplicaSets) and Nodes in the in-process fake API
//! server, their kube-state-metrics series emitted by the release `lgtm-agent` into a real
//! Prometheus; prints the agent's CPU-seconds and RSS per interval (see
//! [`lgtm_integration::bench_cluster_state`]).
//!
//! `node`: one node's CRI logs, kubelet and host metrics and OTLP traces, given in turn to the
//! release `lgtm-agent` and to the OpenTelemetry Collector (`scripts/build-otelcol.sh`); prints CPU,
//! RSS and records lost/duplicated per signal of each, and draws a chart (see
//! [`lgtm_integration::bench_node`]).
//!
//! `outage`: Loki and Mimir down for `--down` while the release `lgtm-agent` tails a CRI tree
//! written at `--log-rate` and scrapes `--series` series into a real Prometheus; prints lines and
//! samples lost, the drain time after recovery, and the agent's RSS, queue memory and queue disk
//! against its configured limits; exits non-zero if anything was lost or a limit exceeded (see
//! [`lgtm_integration::bench_outage`]).
//!
//! `request-memory`: one large request of the smallest spans to each receiver and encoding of the
//! release `lgtm-agent` (Tempo down); prints the agent's peak RSS growth per request byte (see
//! [`lgtm_integration::bench_request_memory`]).
//!
//! `jaeger`: Jaeger Thrift compact `emitBatch` datagrams sent to the release `lgtm-agent` at
//! doubling rates; prints spans/s per CPU-second of the agent and the datagram drop rate, up to
//! the point the socket's receive buffer overflows (see [`lgtm_integration::bench_jaeger`]).

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use lgtm_config::{Config, Mode};
use lgtm_integration::peers::prometheus::Prometheus;
use lgtm_integration::procstat::Process;
use lgtm_pipeline::proto::{Label, Sample, TimeSeries};
use lgtm_pipeline::{Delivery, Pipeline};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Synthetic series through the pipeline into a real Prometheus.
    Pipeline {
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        #[arg(long, default_value_t = 60)]
        rounds: usize,
        #[arg(long, default_value_t = 4)]
        shards: usize,
    },
    /// A generated CRI tree shipped by lgtm-agent into an in-process Loki receiver.
    Logs {
        /// Total size of the CRI files (`256MiB`, `1GiB`).
        #[arg(long, default_value = "1GiB")]
        size: lgtm_config::ByteSize,
        #[arg(long, default_value_t = 100)]
        files: usize,
        /// Where to generate the trees; default: the system temp directory.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
        #[arg(long)]
        agent_bin: Option<std::path::PathBuf>,
        /// The agent's `exporters.loki.queue.max_memory`; default: the config's default.
        #[arg(long)]
        loki_queue_memory: Option<lgtm_config::ByteSize>,
        /// Also run the OpenTelemetry Collector on the same trees (`scripts/build-otelcol.sh`;
        /// `auto`: its cache path if built).
        #[arg(long)]
        collector: Option<std::path::PathBuf>,
        /// Which workloads: `idle` (the agent on `--files` quiet files: VmRSS, CPU), `bulk` (a
        /// `--size` tree written before the agent starts: CPU-seconds per GiB, peak RSS), `steady`
        /// (`--files` files appended at `--steady-rate`: CPU % of one core, latency write -> push);
        /// comma-separated, or `all`.
        #[arg(long, default_value = "all")]
        workloads: lgtm_integration::bench_logs::Workloads,
        /// Bytes per second written across the files in the steady workload.
        #[arg(long, default_value = "5MiB")]
        steady_rate: lgtm_config::ByteSize,
        /// The steady workload's measured window (after a warm-up of 5 s).
        #[arg(long, default_value = "30s")]
        steady_window: lgtm_config::Duration,
    },
    /// Fake targets scraped by lgtm-agent and by Prometheus in agent mode, side by side.
    Scrape {
        #[arg(long, default_value_t = 50)]
        targets: usize,
        /// Series per target.
        #[arg(long, default_value_t = 2000)]
        series: usize,
        #[arg(long, default_value = "5s")]
        interval: lgtm_config::Duration,
        /// The measured window, after a warm-up of two intervals plus 5 s.
        #[arg(long, default_value = "60s")]
        duration: lgtm_config::Duration,
        /// The lgtm-agent binary to run; default: build the workspace's release binary.
        #[arg(long)]
        agent_bin: Option<std::path::PathBuf>,
        /// lgtm-agent's remote-write shards (default: the config's).
        #[arg(long)]
        shards: Option<usize>,
        /// Also run the OpenTelemetry Collector on the same targets (`scripts/build-otelcol.sh`;
        /// `auto`: its cache path).
        #[arg(long)]
        collector: Option<std::path::PathBuf>,
    },
    /// Pods, Deployments and Nodes in the fake API; lgtm-agent's cluster-state series.
    ClusterState {
        #[arg(long, default_value_t = 5000)]
        pods: usize,
        #[arg(long, default_value_t = 500)]
        deployments: usize,
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        #[arg(long, default_value = "10s")]
        interval: lgtm_config::Duration,
        /// Measured intervals, after the warm-up.
        #[arg(long, default_value_t = 6)]
        intervals: usize,
        /// The lgtm-agent binary to run; default: build the workspace's release binary.
        #[arg(long)]
        agent_bin: Option<std::path::PathBuf>,
    },
    /// One node's logs, kubelet and host metrics and traces, lgtm-agent against the OpenTelemetry Collector.
    Node(lgtm_integration::bench_node::NodeBench),
    /// OTLP spans through lgtm-agent's receivers, trace routing and tail sampling.
    Traces(lgtm_integration::bench_traces::TracesBench),
    /// ServiceMonitors, Services and EndpointSlices in the fake API server discovered by lgtm-agent.
    Discovery(lgtm_integration::bench_discovery::DiscoveryBench),
    /// Loki and Mimir down for minutes while logs and series flow; everything arrives after.
    Outage(lgtm_integration::bench_outage::OutageBench),
    /// One large request per receiver and encoding: lgtm-agent's peak RSS per request byte.
    RequestMemory(lgtm_integration::bench_request_memory::RequestMemoryBench),
    /// Jaeger Thrift compact (UDP 6831) or binary (6832) datagrams to lgtm-agent at increasing rates.
    Jaeger {
        #[arg(long, default_value_t = 10)]
        spans_per_batch: usize,
        /// First rate in datagrams/s; each step doubles it.
        #[arg(long, default_value_t = 1000)]
        start_rate: u64,
        #[arg(long, default_value_t = 256_000)]
        max_rate: u64,
        /// Fixed rates in datagrams/s, comma-separated, run in order whatever the drops (the
        /// curve); instead of doubling from `--start-rate`.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<u64>,
        /// Sending sockets (clients), used in turn.
        #[arg(long, default_value_t = 8)]
        senders: usize,
        #[arg(long, default_value = "5s")]
        step: lgtm_config::Duration,
        /// The agent's `otlp.jaeger.udp_receive_buffer`.
        #[arg(long, default_value = "8MiB")]
        receive_buffer: lgtm_config::ByteSize,
        /// Thrift binary datagrams to the agent's `thrift_binary` port (6832) instead of compact
        /// ones to `thrift_compact` (6831).
        #[arg(long)]
        binary: bool,
        /// The lgtm-agent binary to run; default: build the workspace's release binary.
        #[arg(long)]
        agent_bin: Option<std::path::PathBuf>,
    },
}

/// `--collector auto` is the cache path `scripts/build-otelcol.sh` builds into.
fn collector_path(flag: std::path::PathBuf) -> std::path::PathBuf {
    if flag.as_os_str() == "auto" {
        lgtm_integration::bench_node::otelcol_cache_path()
    } else {
        flag
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.workload {
        Workload::Pipeline { series, rounds, shards } => rt.block_on(pipeline(series, rounds, shards)),
        Workload::Logs {
            size,
            files,
            dir,
            agent_bin,
            loki_queue_memory,
            collector,
            workloads,
            steady_rate,
            steady_window,
        } => {
            let collector = collector.map(collector_path);
            let opts = lgtm_integration::bench_logs::LogsBenchOptions {
                size: size.bytes(),
                files,
                dir,
                agent: agent_bin,
                loki_queue_memory: loki_queue_memory.map(|b| b.bytes()),
                collector,
                workloads,
                steady_rate: steady_rate.bytes(),
                steady_window: steady_window.get(),
                ..Default::default()
            };
            let report = rt.block_on(lgtm_integration::bench_logs::run_logs_bench(&opts))?;
            println!("{report}");
            anyhow::ensure!(report.is_exact(), "lines were lost, duplicated or altered");
            Ok(())
        }
        Workload::Scrape { targets, series, interval, duration, agent_bin, shards, collector } => {
            rt.block_on(lgtm_integration::bench_scrape::run(lgtm_integration::bench_scrape::ScrapeBench {
                targets,
                series,
                interval: interval.get(),
                duration: duration.get(),
                agent_bin,
                shards,
                collector: collector.map(collector_path),
            }))
        }
        Workload::ClusterState { pods, deployments, nodes, interval, intervals, agent_bin } => rt.block_on(
            lgtm_integration::bench_cluster_state::run(lgtm_integration::bench_cluster_state::ClusterStateBench {
                pods,
                deployments,
                nodes,
                interval: interval.get(),
                intervals,
                agent_bin,
            }),
        ),
        Workload::Node(b) => rt.block_on(lgtm_integration::bench_node::run(b)),
        Workload::Traces(b) => rt.block_on(lgtm_integration::bench_traces::run(b)),
        Workload::Discovery(b) => rt.block_on(lgtm_integration::bench_discovery::run(b)),
        Workload::Outage(b) => rt.block_on(lgtm_integration::bench_outage::run(b)),
        Workload::RequestMemory(b) => rt.block_on(lgtm_integration::bench_request_memory::run(b)),
        Workload::Jaeger {
            spans_per_batch,
            start_rate,
            max_rate,
            rates,
            senders,
            step,
            receive_buffer,
            binary,
            agent_bin,
        } => rt.block_on(lgtm_integration::bench_jaeger::run(lgtm_integration::bench_jaeger::JaegerBench {
            spans_per_batch,
            start_rate,
            max_rate,
            rates,
            senders,
            step: step.get(),
            receive_buffer: receive_buffer.bytes(),
            binary,
            agent_bin,
        })),
    }
}

async fn pipeline(series: usize, rounds: usize, shards: usize) -> anyhow::Result<()> {
    let prom = Prometheus::start().await.ok_or_else(|| anyhow::anyhow!("prometheus is not installed"))?;
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "cluster: bench\ntenant: bench\ndata_dir: {}\nexporters:\n  mimir: {{ url: \"{}\", shards: {shards} }}\n  loki: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n",
        dir.path().display(),
        prom.write_url()
    );
    let cfg = Config::from_yaml("bench.yaml", &yaml, Some(Mode::Daemonset), |_| None)?;
    let (p, handle) = Pipeline::start(&cfg)?;

    // Label sets built once, as the scrape cache would hold them.
    let label_sets: Vec<Vec<Label>> = (0..series)
        .map(|i| {
            vec![
                Label::new("__name__", format!("bench_metric_{}", i % 100)),
                Label::new("instance", format!("10.0.{}.{}:9100", (i / 256) % 256, i % 256)),
                Label::new("job", "bench"),
                Label::new("series", i.to_string()),
            ]
        })
        .collect();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let start_ts = now_ms - (rounds as i64 + 5) * 1000;

    let cpu0 = Process::This.cpu_seconds();
    let t0 = Instant::now();
    let mut acks = Vec::with_capacity(rounds * series.div_ceil(1000));
    for r in 0..rounds {
        let ts = start_ts + r as i64 * 1000;
        for chunk in label_sets.chunks(1000) {
            let batch: Vec<TimeSeries> = chunk
                .iter()
                .map(|l| TimeSeries { labels: l.clone(), samples: vec![Sample { timestamp: ts, value: r as f64 }] })
                .collect();
            acks.push(p.metrics.send(batch).await?);
        }
    }
    let mut accepted = 0usize;
    for a in acks {
        if a.outcome().await == Some(Delivery::Accepted) {
            accepted += 1;
        }
    }
    let elapsed = t0.elapsed();
    let cpu = Process::This.cpu_seconds() - cpu0;
    handle.shutdown(Duration::from_secs(10)).await;

    let samples = series * rounds;
    let check = prom.query("count({job=\"bench\"})").await;
    let in_prom = check.first().map(|s| s.value).unwrap_or(0.0);
    println!("workload: pipeline (remote write into a real Prometheus)");
    println!("series: {series}, rounds: {rounds}, samples: {samples}, shards: {shards}");
    println!("batches accepted: {accepted}, series in Prometheus: {in_prom}");
    println!("wall: {:.2} s, samples/s: {:.0}", elapsed.as_secs_f64(), samples as f64 / elapsed.as_secs_f64());
    println!("cpu-seconds per million samples: {:.3}", cpu / (samples as f64 / 1e6));
    println!("peak RSS: {:.1} MiB", Process::This.peak_rss_bytes() as f64 / (1024.0 * 1024.0));
    Ok(())
}
