//! `bench node`: one realistic Kubernetes node, the same load given in turn to lgtm-agent
//! (daemonset mode), to the OpenTelemetry Collector configured as a PoC node agent, and to the
//! classic stack (Prometheus in agent mode with node_exporter for the metrics, rotel-agent for the
//! traces: one agent per signal), interleaved, `--runs` times each:
//!
//! - 100 pods' CRI log files under a `/var/log/pods`-like tree, appended at `--log-rate` in all
//!   (mixed line sizes, one record in 20 split into a partial `P` line and its `F` end, and every
//!   file rotated the kubelet's way once per minute: renamed to `0.log.<time>`, a new `0.log`);
//! - a kubelet stand-in serving `/metrics/cadvisor` and `/metrics/resource` for those 100
//!   containers (the kubelet's metric names and label sets), scraped every `--scrape-interval`;
//! - host metrics every `--scrape-interval` (lgtm-agent's `scrape.host_metrics`, the Collector's
//!   `hostmetrics` receiver);
//! - OTLP/gRPC traces at `--spans-per-second` from a client in this process.
//!
//! Everything is delivered to stand-ins in this process that count each record by its identity:
//! log lines carry `id=<n>`, spans a unique span id, kubelet samples their series and timestamp.
//! Per agent: CPU % of one core (user + sys from `/proc`) and RSS mean and peak over the window,
//! records delivered / lost / duplicated per signal. Medians over the runs are printed, and
//! `--plot FILE.svg` draws them (see [`svg`]).
//!
//! The Collector is the pinned build of `integration/peers/otelcol`, found in the cache directory
//! `scripts/build-otelcol.sh` writes (`~/.cache/lgtm-agent/peers/otelcol-<version>/`); when it is
//! absent the bench says how to build it and leaves its column out. The classic stack has no log
//! shipper here (neither Vector nor Fluent Bit is installable on the project's machines): its logs
//! column is empty and its figures cover metrics and traces only, which favours it. Its CPU and
//! RSS are the sums over its three processes (the peak is the sum of each one's peak, an upper
//! bound of their peak together).

pub mod load;
pub mod sink;
pub mod svg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::agent::AgentProcess;
use crate::peers::node_exporter::NodeExporter;
use crate::peers::prometheus::PrometheusAgent;
use crate::procstat::Process;
use load::{KubeletStandIn, LogWriter, SpanClient};
use sink::Sink;

/// The Collector release `integration/peers/otelcol` pins (its `collectorVersion`).
pub const COLLECTOR_VERSION: &str = "0.165.0";

/// Options of the `node` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeBench {
    /// Measured window per agent and run.
    #[arg(long, default_value = "60s")]
    pub window: lgtm_config::Duration,
    /// Runs per agent (interleaved: lgtm-agent, Collector, lgtm-agent, ...); medians are printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Pods (one container, one log file each).
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Bytes per second appended to all log files together.
    #[arg(long, default_value = "1MiB")]
    pub log_rate: lgtm_config::ByteSize,
    /// Kubelet and host metrics scrape interval.
    #[arg(long, default_value = "30s")]
    pub scrape_interval: lgtm_config::Duration,
    /// OTLP spans per second sent by the client.
    #[arg(long, default_value_t = 1000)]
    pub spans_per_second: u64,
    /// Writes a grouped bar chart (CPU, mean and peak RSS per agent) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The lgtm-agent binary; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// The Collector binary; default: the cache directory's build of `integration/peers/otelcol`.
    #[arg(long)]
    pub otelcol_bin: Option<PathBuf>,
    /// Where to write the log trees; default: the system temp directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Measure only these agents (`lgtm-agent`, `otelcol-contrib`, `classic`), comma-separated;
    /// default: every agent that is installed.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
}

/// Where `scripts/build-otelcol.sh` puts the Collector.
pub fn otelcol_cache_path() -> PathBuf {
    let base = std::env::var_os("LGTM_PEERS_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/lgtm-agent/peers")
    });
    base.join(format!("otelcol-{COLLECTOR_VERSION}")).join("otelcol-lgtm-bench")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lgtm,
    Collector,
    Classic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lgtm => "lgtm-agent",
            Kind::Collector => "otelcol-contrib",
            Kind::Classic => "prom+node_exp+rotel",
        }
    }

    /// Whether `--agents` names this agent.
    fn matches(self, name: &str) -> bool {
        match self {
            Kind::Lgtm => name == "lgtm-agent" || name == "lgtm",
            Kind::Collector => name == "otelcol-contrib" || name == "otelcol" || name == "collector",
            Kind::Classic => name == "classic",
        }
    }
}

/// One agent's figures from one run.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub cpu_percent: f64,
    pub rss_mean: f64,
    pub rss_peak: f64,
    /// Written / sent by the load: log records, kubelet samples (served), spans.
    pub expected: [u64; 3],
    /// Distinct records delivered per signal (logs, kubelet samples, spans), host samples last.
    pub delivered: [u64; 4],
    pub duplicated: [u64; 3],
}

impl RunFigures {
    fn lost(&self, i: usize) -> u64 {
        self.expected[i].saturating_sub(self.delivered[i])
    }
}

pub async fn run(b: NodeBench) -> anyhow::Result<()> {
    let lgtm_bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let otelcol = b.otelcol_bin.clone().unwrap_or_else(otelcol_cache_path);
    let mut kinds = vec![Kind::Lgtm];
    if otelcol.is_file() {
        kinds.push(Kind::Collector);
    } else {
        eprintln!(
            "NOTE: the OpenTelemetry Collector is not built ({} is missing); build it with \
             scripts/build-otelcol.sh (Go >= 1.26, ~15 min on one core). Measuring lgtm-agent alone.",
            otelcol.display()
        );
    }
    match (crate::peers::which("prometheus"), crate::peers::rotel::rotel_binary()) {
        (Some(_), Some(_)) if crate::peers::which("prometheus-node-exporter").is_some() => kinds.push(Kind::Classic),
        _ => eprintln!(
            "NOTE: the classic stack needs prometheus, prometheus-node-exporter (Debian) and rotel-agent \
             (pip install rotel); leaving its column out."
        ),
    }
    if !b.agents.is_empty() {
        for a in &b.agents {
            anyhow::ensure!(
                [Kind::Lgtm, Kind::Collector, Kind::Classic].iter().any(|k| k.matches(a)),
                "--agents: unknown agent {a:?} (expected lgtm-agent, otelcol-contrib or classic)"
            );
        }
        kinds.retain(|k| b.agents.iter().any(|a| k.matches(a)));
    }
    let window: Duration = b.window.into();
    println!(
        "bench node: {} pods, {}/s of CRI logs, kubelet + host metrics every {}, {} spans/s; window {:?}, {} run(s) per agent",
        b.pods, b.log_rate, b.scrape_interval, b.spans_per_second, window, b.runs
    );
    let mut results: Vec<(Kind, Vec<RunFigures>)> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for run in 0..b.runs {
        for (kind, figures) in results.iter_mut() {
            let bin = if *kind == Kind::Collector { &otelcol } else { &lgtm_bin };
            let f = one_run(*kind, bin, &b).await.with_context(|| format!("{} run {}", kind.name(), run + 1))?;
            println!(
                "  run {} {:<16} cpu {:5.1}%  rss mean {:6.1} MiB peak {:6.1} MiB  logs {}/{} (dup {})  kubelet {}/{} (dup {})  spans {}/{} (dup {})  host samples {}",
                run + 1,
                kind.name(),
                f.cpu_percent,
                f.rss_mean / MIB,
                f.rss_peak / MIB,
                f.delivered[0],
                f.expected[0],
                f.duplicated[0],
                f.delivered[1],
                f.expected[1],
                f.duplicated[1],
                f.delivered[2],
                f.expected[2],
                f.duplicated[2],
                f.delivered[3],
            );
            figures.push(f);
        }
    }
    let medians: Vec<(String, RunFigures)> =
        results.iter().map(|(k, runs)| (k.name().to_string(), median_figures(runs))).collect();
    print_table(&medians);
    if let Some(path) = &b.plot {
        let title = format!(
            "bench node: {} pods, {}/s logs, {} spans/s, metrics every {} (medians of {})",
            b.pods, b.log_rate, b.spans_per_second, b.scrape_interval, b.runs
        );
        std::fs::write(path, svg::grouped_bars(&title, &medians))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of each figure on its own (the runs' counts of lost and duplicated records are
/// medians too; each run's are printed above the table).
pub fn median_figures(runs: &[RunFigures]) -> RunFigures {
    let m = |f: &dyn Fn(&RunFigures) -> f64| median(runs.iter().map(f).collect());
    let mut out = RunFigures {
        cpu_percent: m(&|r: &RunFigures| r.cpu_percent),
        rss_mean: m(&|r: &RunFigures| r.rss_mean),
        rss_peak: m(&|r: &RunFigures| r.rss_peak),
        ..RunFigures::default()
    };
    for i in 0..3 {
        out.expected[i] = m(&|r: &RunFigures| r.expected[i] as f64) as u64;
        out.duplicated[i] = m(&|r: &RunFigures| r.duplicated[i] as f64) as u64;
        // Lost as the median of each run's loss, not the difference of two medians.
        let lost = m(&|r: &RunFigures| r.lost(i) as f64) as u64;
        out.delivered[i] = out.expected[i].saturating_sub(lost);
    }
    out.delivered[3] = m(&|r: &RunFigures| r.delivered[3] as f64) as u64;
    out
}

fn print_table(rows: &[(String, RunFigures)]) {
    println!();
    println!(
        "{:<16} {:>7} {:>13} {:>13} {:>22} {:>22} {:>22} {:>8}",
        "agent (median)",
        "CPU %",
        "RSS mean MiB",
        "RSS peak MiB",
        "logs lost/dup",
        "kubelet lost/dup",
        "spans lost/dup",
        "host"
    );
    for (name, f) in rows {
        let sig = |i: usize| match f.expected[i] {
            0 => "-".to_string(),
            n => format!("{}/{} of {n}", f.lost(i), f.duplicated[i]),
        };
        println!(
            "{:<16} {:>7.1} {:>13.1} {:>13.1} {:>22} {:>22} {:>22} {:>8}",
            name,
            f.cpu_percent,
            f.rss_mean / MIB,
            f.rss_peak / MIB,
            sig(0),
            sig(1),
            sig(2),
            f.delivered[3]
        );
    }
    if let Some((_, ours)) = rows.first() {
        for (name, peer) in &rows[1..] {
            println!(
                "lgtm-agent / {name}: CPU {:.2}, peak RSS {:.2} (goal: at most 0.20 each)",
                ours.cpu_percent / peer.cpu_percent.max(f64::MIN_POSITIVE),
                ours.rss_peak / peer.rss_peak.max(f64::MIN_POSITIVE)
            );
        }
    }
}

/// A started agent: its processes, and what stops them.
enum Running {
    Lgtm(AgentProcess),
    Collector(Child, tempfile::TempDir),
    Classic { prometheus: PrometheusAgent, node_exporter: NodeExporter, rotel: Child },
}

impl Running {
    fn pids(&self) -> Vec<Process> {
        match self {
            Running::Lgtm(a) => vec![Process::Pid(a.pid())],
            Running::Collector(c, _) => vec![Process::Pid(c.id())],
            Running::Classic { prometheus, node_exporter, rotel } => {
                vec![Process::Pid(prometheus.pid()), Process::Pid(node_exporter.pid()), Process::Pid(rotel.id())]
            }
        }
    }

    fn stop(self) {
        match self {
            Running::Lgtm(mut a) => a.kill(),
            Running::Collector(mut c, _dir) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::Classic { prometheus, node_exporter, mut rotel } => {
                drop((prometheus, node_exporter));
                let _ = rotel.kill();
                let _ = rotel.wait();
            }
        }
    }
}

async fn one_run(kind: Kind, bin: &Path, b: &NodeBench) -> anyhow::Result<RunFigures> {
    let base = match &b.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let pods = base.path().join("pods");
    std::fs::create_dir_all(&pods)?;
    let sink = Sink::start().await?;
    let traces = crate::otlp_receiver::OtlpReceiver::start().await;
    let kubelet = KubeletStandIn::start(b.pods).await?;
    let scrape: Duration = b.scrape_interval.into();
    let otlp_port = crate::free_port();
    let agent = match kind {
        Kind::Lgtm => {
            let admin = crate::free_port();
            let yaml = lgtm_config(b, base.path(), &pods, &sink, &traces.endpoint(), &kubelet, otlp_port, admin);
            let dir = base.path().join("agent");
            std::fs::create_dir_all(&dir)?;
            Running::Lgtm(AgentProcess::launch(bin, &dir, &yaml, admin, &[("RUST_LOG", "warn")]).await?)
        }
        Kind::Collector => {
            let dir = tempfile::tempdir()?;
            let yaml = collector_config(&pods, &sink, &traces.addr.to_string(), &kubelet, scrape, otlp_port);
            let (child, log) = crate::peers::otelcol::spawn(bin, dir.path(), &yaml)?;
            let started = Instant::now();
            while tokio::net::TcpStream::connect(("127.0.0.1", otlp_port)).await.is_err() {
                if started.elapsed() > Duration::from_secs(30) {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("the Collector is not listening after 30 s; log:\n{log}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Running::Collector(child, dir)
        }
        Kind::Classic => start_classic(&sink, &traces.endpoint(), &kubelet, scrape, otlp_port).await?,
    };
    let procs = agent.pids();
    let cpu_now = || procs.iter().map(|p| p.cpu_seconds()).sum::<f64>();
    let window: Duration = b.window.into();

    // The classic stack has no log shipper here: no log load for it (see the module doc).
    let logs = match kind {
        Kind::Classic => None,
        _ => Some(LogWriter::start(&pods, b.pods, b.log_rate.bytes(), Duration::from_secs(60))?),
    };
    let spans = SpanClient::start(otlp_port, b.spans_per_second).await?;
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    let mut rss = Vec::new();
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(procs.iter().map(|p| p.rss_bytes() as f64).sum());
    }
    let cpu = cpu_now() - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let peak = procs.iter().map(|p| p.peak_rss_bytes() as f64).sum();
    let written = match logs {
        Some(logs) => logs.stop().await?,
        None => 0,
    };
    let sent = spans.stop().await;
    // Drain: what was written and scraped in the window has up to 30 s to arrive.
    let drain = Instant::now();
    loop {
        let served = kubelet.served_samples();
        let s = sink.counts();
        let span_ids = sink::span_ids(&traces);
        if (s.logs >= written && span_ids.0 >= sent && s.kubelet >= served) || drain.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = kubelet.served_samples();
    agent.stop();
    let s = sink.counts();
    let (span_distinct, span_dup) = sink::span_ids(&traces);
    Ok(RunFigures {
        cpu_percent: 100.0 * cpu / elapsed,
        rss_mean: rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss_peak: peak,
        expected: [written, served, sent],
        delivered: [s.logs, s.kubelet, span_distinct, s.host],
        duplicated: [s.logs_dup, s.kubelet_dup, span_dup],
    })
}

/// The classic stack: node_exporter and the kubelet endpoints scraped by Prometheus in agent mode
/// (remote write to the sink), rotel-agent receiving OTLP/gRPC and exporting it to the trace sink.
async fn start_classic(
    sink: &Sink,
    tempo: &str,
    kubelet: &KubeletStandIn,
    scrape: Duration,
    otlp_port: u16,
) -> anyhow::Result<Running> {
    let node_exporter = NodeExporter::start(&["cpu", "meminfo", "loadavg", "diskstats", "filesystem", "netdev"])
        .await
        .context("prometheus-node-exporter is not installed")?;
    let s = scrape.as_secs().max(1);
    let config = format!(
        "global:\n  scrape_interval: {s}s\n  scrape_timeout: 10s\nscrape_configs:\n\
         \x20 - job_name: kubelet-cadvisor\n    metrics_path: /metrics/cadvisor\n    static_configs: [{{ targets: [\"{k}\"] }}]\n\
         \x20 - job_name: kubelet-resource\n    metrics_path: /metrics/resource\n    static_configs: [{{ targets: [\"{k}\"] }}]\n\
         \x20 - job_name: node-exporter\n    static_configs: [{{ targets: [\"{n}\"] }}]\n\
         remote_write:\n  - url: \"{rw}\"\n",
        k = kubelet.addr,
        n = node_exporter.address(),
        rw = sink.write_url(),
    );
    let bin = crate::peers::which("prometheus").context("prometheus is not installed")?;
    let prometheus = PrometheusAgent::spawn(&bin, &config, "warn").context("starting prometheus in agent mode")?;
    if !prometheus.wait_ready(Duration::from_secs(30)).await {
        bail!("prometheus agent not ready after 30 s");
    }
    let rotel_bin = crate::peers::rotel::rotel_binary().context("rotel-agent is not installed")?;
    let rotel = Command::new(rotel_bin)
        .args(["start", "--exporter", "otlp", "--otlp-exporter-endpoint", tempo])
        .arg("--otlp-grpc-endpoint")
        .arg(format!("127.0.0.1:{otlp_port}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{}", crate::free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting rotel-agent")?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", otlp_port)).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("rotel-agent is not listening after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Running::Classic { prometheus, node_exporter, rotel })
}

#[allow(clippy::too_many_arguments)]
fn lgtm_config(
    b: &NodeBench,
    base: &Path,
    pods: &Path,
    sink: &Sink,
    tempo: &str,
    kubelet: &KubeletStandIn,
    otlp_port: u16,
    admin: u16,
) -> String {
    let interval = b.scrape_interval;
    format!(
        "cluster: bench\ntenant: bench\nmode: daemonset\nnode_name: bench-node\ndata_dir: {data}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ url: \"{rw}\" }}\n  loki: {{ url: \"{loki}\" }}\n  tempo: {{ endpoint: \"{tempo}\" }}\n\
         logs: {{ path: \"{pods}\", kubernetes: false }}\nevents: {{ enabled: false }}\ncluster_state: {{ enabled: false }}\n\
         scrape:\n  interval: {interval}\n  timeout: 10s\n  kubelet: {{ enabled: false }}\n  monitors: {{ enabled: false }}\n\
         \x20 host_metrics: {{ enabled: true }}\n\
         \x20 static_configs:\n\
         \x20   - targets: [\"{k}\"]\n      metrics_path: /metrics/cadvisor\n      labels: {{ job: kubelet-cadvisor }}\n\
         \x20   - targets: [\"{k}\"]\n      metrics_path: /metrics/resource\n      labels: {{ job: kubelet-resource }}\n\
         otlp:\n  grpc: \"127.0.0.1:{otlp_port}\"\n  http: \"\"\n  zipkin: \"\"\n  \
         jaeger: {{ thrift_compact: \"\", thrift_binary: \"\", thrift_http: \"\", grpc: \"\" }}\n",
        data = base.join("data").display(),
        rw = sink.write_url(),
        loki = sink.loki_url(),
        pods = pods.display(),
        k = kubelet.addr,
    )
}

/// The Collector as the PoC's node agent: filelog (container parser) -> OTLP/HTTP to Loki's OTLP
/// endpoint, prometheus + hostmetrics -> prometheusremotewrite, otlp -> otlp; memory_limiter and
/// batch in each pipeline, its own telemetry off.
fn collector_config(
    pods: &Path,
    sink: &Sink,
    tempo: &str,
    kubelet: &KubeletStandIn,
    scrape: Duration,
    otlp_port: u16,
) -> String {
    let s = scrape.as_secs().max(1);
    format!(
        r#"receivers:
  filelog:
    include: ["{pods}/*/*/*.log"]
    start_at: beginning
    include_file_path: true
    include_file_name: false
    operators:
      - type: container
        id: container-parser
  prometheus:
    config:
      scrape_configs:
        - job_name: kubelet-cadvisor
          scrape_interval: {s}s
          scrape_timeout: 10s
          metrics_path: /metrics/cadvisor
          static_configs: [{{ targets: ["{k}"] }}]
        - job_name: kubelet-resource
          scrape_interval: {s}s
          scrape_timeout: 10s
          metrics_path: /metrics/resource
          static_configs: [{{ targets: ["{k}"] }}]
  hostmetrics:
    collection_interval: {s}s
    scrapers:
      cpu: {{}}
      memory: {{}}
      load: {{}}
      disk: {{}}
      filesystem: {{}}
      network: {{}}
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_port}
{processors}exporters:
  otlphttp/loki:
    logs_endpoint: {otlp_logs}
  prometheusremotewrite:
    endpoint: {rw}
  otlp/tempo:
    endpoint: {tempo}
    tls:
      insecure: true
service:
{telemetry}  pipelines:
    logs:
      receivers: [filelog]
      processors: [memory_limiter, batch]
      exporters: [otlphttp/loki]
    metrics:
      receivers: [prometheus, hostmetrics]
      processors: [memory_limiter, batch]
      exporters: [prometheusremotewrite]
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp/tempo]
"#,
        pods = pods.display(),
        k = kubelet.addr,
        otlp_logs = sink.otlp_logs_url(),
        rw = sink.write_url(),
        processors = crate::peers::otelcol::PROCESSORS,
        telemetry = crate::peers::otelcol::TELEMETRY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_each_runs_loss() {
        let run = |cpu: f64, lost: u64| RunFigures {
            cpu_percent: cpu,
            expected: [100, 10, 10],
            delivered: [100 - lost, 10, 10, 5],
            ..RunFigures::default()
        };
        let m = median_figures(&[run(3.0, 0), run(1.0, 4), run(2.0, 1)]);
        assert_eq!(m.cpu_percent, 2.0);
        assert_eq!(m.lost(0), 1);
        assert_eq!(m.lost(1), 0);
    }
}
