//! The `scrape` bench workload: the same fake targets scraped at the same time by the real
//! `lgtm-agent` binary (release build), by Prometheus in agent mode and, with `--collector`, by the
//! OpenTelemetry Collector (prometheus receiver -> prometheusremotewrite, as the PoC's third
//! scenario), all remote-writing into one real Prometheus; CPU-seconds and RSS of each scraper
//! process over a window.
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- scrape [--targets 50] [--series 2000] [--interval 5s] [--duration 60s] [--collector auto]
//! ```
//!
//! The targets are served by this process (one loopback port per target) with text bodies whose
//! counters and gauges change slowly, like real exporters: most series hit a scraper's cache,
//! every value is new. This process's own CPU is not counted. The figures:
//! - samples/s: samples of the job scraped during the window according to the series that
//!   reached the receiving Prometheus (`scrape_samples_post_metric_relabeling` plus the five
//!   synthetic series per scrape), divided by the window;
//! - CPU-seconds per million samples: utime + stime of the scraper (from `/proc/<pid>/stat`)
//!   over the window, per million of those samples;
//! - RSS per 1,000 active series: the scraper's average `VmRSS` over the window (and its peak
//!   `VmHWM` since start) divided by the active series of its job, in thousands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::peers::prometheus::{Prometheus, PrometheusAgent};
use crate::procstat::{Process, Usage};

/// The bench's settings (the subcommand's flags).
#[derive(Debug, Clone)]
pub struct ScrapeBench {
    pub targets: usize,
    /// Series per target.
    pub series: usize,
    pub interval: Duration,
    /// The measured window (after a warm-up of two intervals plus 5 s).
    pub duration: Duration,
    /// The `lgtm-agent` binary; `None`: build the workspace's release binary.
    pub agent_bin: Option<PathBuf>,
    /// lgtm-agent's remote-write shards; `None`: the config's default.
    pub shards: Option<usize>,
    /// The OpenTelemetry Collector (`scripts/build-otelcol.sh`), scraping the same targets as a
    /// third column; `None`: not run.
    pub collector: Option<PathBuf>,
}

const LGTM_JOB: &str = "lgtm";
const PROM_JOB: &str = "prom-agent";
const COLLECTOR_JOB: &str = "otelcol";

/// One fake target's body source.
struct Body {
    index: usize,
    series: usize,
    started: Instant,
}

/// Label values cycle through these, as paths and methods of an HTTP service would.
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 5] = ["200", "201", "404", "500", "503"];

/// Series per metric family.
const FAMILY_SIZE: usize = 50;

/// The exposition text of target `b` now: families of 50 series, three of four counters and one
/// of four gauges, values changing every second.
fn render(b: &Body, out: &mut String) {
    use std::fmt::Write as _;
    let secs = b.started.elapsed().as_secs_f64();
    out.clear();
    for i in 0..b.series {
        let family = i / FAMILY_SIZE;
        let gauge = family % 4 == 3;
        if i % FAMILY_SIZE == 0 {
            let (kind, suffix) = if gauge { ("gauge", "") } else { ("counter", "_total") };
            let _ = writeln!(
                out,
                "# HELP bench_app_family_{family}{suffix} Synthetic family {family} of the scrape bench."
            );
            let _ = writeln!(out, "# TYPE bench_app_family_{family}{suffix} {kind}");
        }
        let suffix = if gauge { "" } else { "_total" };
        let _ = write!(
            out,
            "bench_app_family_{family}{suffix}{{handler=\"/api/v1/items/{}\",method=\"{}\",code=\"{}\",series=\"{i}\"}} ",
            i % 13,
            METHODS[i % METHODS.len()],
            CODES[i % CODES.len()],
        );
        if gauge {
            let v = 100.0 * (secs / 60.0 + i as f64).sin() + b.index as f64;
            let _ = writeln!(out, "{v:.6}");
        } else {
            let v = ((i % 10 + 1) as f64 * secs).floor() + (b.index * 1000) as f64;
            let _ = writeln!(out, "{v}");
        }
    }
}

async fn metrics(State(body): State<Arc<Body>>) -> impl IntoResponse {
    let mut out = String::with_capacity(body.series * 110);
    render(&body, &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Serves `n` targets on loopback ports; they stop with the runtime.
async fn start_targets(n: usize, series: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let started = Instant::now();
    let mut addrs = Vec::with_capacity(n);
    for index in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a target port")?;
        addrs.push(listener.local_addr()?);
        let app = Router::new().route("/metrics", get(metrics)).with_state(Arc::new(Body { index, series, started }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    Ok(addrs)
}

/// One of the scrapers compared, killed on drop.
enum Scraper {
    /// The agent and the directory of its config and data, removed after it.
    Lgtm {
        child: Child,
        _dir: tempfile::TempDir,
    },
    Prometheus(PrometheusAgent),
    /// The Collector and the directory of its config and log.
    Collector {
        child: Child,
        _dir: tempfile::TempDir,
    },
}

impl Scraper {
    fn name(&self) -> &'static str {
        match self {
            Scraper::Lgtm { .. } => "lgtm-agent",
            Scraper::Prometheus(_) => "prometheus-agent",
            Scraper::Collector { .. } => "otelcol",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Scraper::Lgtm { child, .. } | Scraper::Collector { child, .. } => child.id(),
            Scraper::Prometheus(p) => p.pid(),
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            Scraper::Lgtm { child, .. } | Scraper::Collector { child, .. } => matches!(child.try_wait(), Ok(None)),
            Scraper::Prometheus(p) => p.is_running(),
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        if let Scraper::Lgtm { child, .. } | Scraper::Collector { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn duration_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn target_list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
}

async fn wait_http_ok(url: &str, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{what} not ready after 60 s ({url})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_lgtm(bin: &Path, b: &ScrapeBench, addrs: &[SocketAddr], write_url: &str) -> anyhow::Result<Scraper> {
    let dir = tempfile::tempdir()?;
    let admin = crate::free_port();
    let yaml = format!(
        "cluster: bench\ntenant: bench\nmode: daemonset\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         exporters:\n  mimir: {{ url: \"{write_url}\"{shards} }}\n  loki: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n\
         logs: {{ enabled: false }}\notlp: {{ enabled: false }}\n\
         scrape:\n  interval: {interval}\n  timeout: {interval}\n\
         \x20 kubelet: {{ enabled: false }}\n  host_metrics: {{ enabled: false }}\n\
         \x20 static_configs:\n    - targets: [{targets}]\n      labels: {{ job: {LGTM_JOB} }}\n",
        data = dir.path().join("data").display(),
        interval = duration_text(b.interval),
        targets = target_list(addrs),
        shards = b.shards.map(|n| format!(", shards: {n}")).unwrap_or_default(),
    );
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml)?;
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let scraper = Scraper::Lgtm { child, _dir: dir };
    wait_http_ok(&format!("http://127.0.0.1:{admin}/readyz"), "lgtm-agent").await?;
    Ok(scraper)
}

async fn start_prometheus_agent(b: &ScrapeBench, addrs: &[SocketAddr], write_url: &str) -> anyhow::Result<Scraper> {
    let bin = crate::peers::which("prometheus").context("prometheus is not installed")?;
    let interval = duration_text(b.interval);
    let yaml = format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\nscrape_configs:\n\
         \x20 - job_name: {PROM_JOB}\n    static_configs:\n      - targets: [{targets}]\n\
         remote_write:\n  - url: \"{write_url}\"\n",
        targets = target_list(addrs),
    );
    let agent = PrometheusAgent::spawn(&bin, &yaml, "warn").context("starting prometheus in agent mode")?;
    if !agent.wait_ready(Duration::from_secs(30)).await {
        bail!("prometheus agent not ready after 30 s");
    }
    Ok(Scraper::Prometheus(agent))
}

/// The Collector as the PoC's third scenario scrapes: the prometheus receiver, memory_limiter
/// and batch, prometheusremotewrite; its own telemetry off.
fn start_collector(bin: &Path, b: &ScrapeBench, addrs: &[SocketAddr], write_url: &str) -> anyhow::Result<Scraper> {
    let dir = tempfile::tempdir()?;
    let interval = duration_text(b.interval);
    let config = format!(
        r#"receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: {COLLECTOR_JOB}
          scrape_interval: {interval}
          scrape_timeout: {interval}
          static_configs: [{{ targets: [{targets}] }}]
{processors}exporters:
  prometheusremotewrite:
    endpoint: {write_url}
service:
{telemetry}  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [memory_limiter, batch]
      exporters: [prometheusremotewrite]
"#,
        targets = target_list(addrs),
        processors = crate::peers::otelcol::PROCESSORS,
        telemetry = crate::peers::otelcol::TELEMETRY,
    );
    let (child, _log) = crate::peers::otelcol::spawn(bin, dir.path(), &config)?;
    Ok(Scraper::Collector { child, _dir: dir })
}

/// An instant query at `time` (unix seconds) on the receiving Prometheus; the first value.
async fn query_at(prom: &Prometheus, promql: &str, time: f64) -> anyhow::Result<f64> {
    let url = format!("http://127.0.0.1:{}/api/v1/query", prom.port);
    let resp: serde_json::Value = reqwest::Client::new()
        .get(&url)
        .query(&[("query", promql.to_string()), ("time", format!("{time:.3}"))])
        .send()
        .await?
        .json()
        .await?;
    if resp["status"] != "success" {
        bail!("query {promql} failed: {resp}");
    }
    Ok(resp["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(0.0))
}

/// Samples a job delivered in `range`: what its scrapes ingested (after relabeling) plus the
/// five synthetic series of each scrape. (`count_over_time` over the whole job would drop the
/// metric names and collide.)
fn samples_query(job: &str, range: &str) -> String {
    format!(
        "sum(sum_over_time(scrape_samples_post_metric_relabeling{{job=\"{job}\"}}[{range}])) \
         + 5 * sum(count_over_time(up{{job=\"{job}\"}}[{range}]))"
    )
}

/// What one scraper did over the window.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    samples: f64,
    active_series: f64,
    cpu_seconds: f64,
    rss_avg_bytes: f64,
    peak_rss_bytes: u64,
}

impl Figures {
    fn samples_per_second(&self, window: Duration) -> f64 {
        self.samples / window.as_secs_f64()
    }

    fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds / (self.samples / 1e6).max(1e-9)
    }

    fn rss_per_thousand(&self, rss: f64) -> f64 {
        rss / (self.active_series / 1000.0).max(1e-9)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the workload and prints the figures.
pub async fn run(b: ScrapeBench) -> anyhow::Result<()> {
    let agent_bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let prom = Prometheus::start().await.context("prometheus is not installed")?;
    let addrs = start_targets(b.targets, b.series).await?;
    let lgtm = start_lgtm(&agent_bin, &b, &addrs, &prom.write_url()).await?;
    let prom_agent = start_prometheus_agent(&b, &addrs, &prom.write_url()).await?;
    let mut scrapers = vec![(LGTM_JOB, lgtm), (PROM_JOB, prom_agent)];
    if let Some(bin) = &b.collector {
        anyhow::ensure!(bin.exists(), "no Collector at {} (scripts/build-otelcol.sh builds it)", bin.display());
        scrapers.push((COLLECTOR_JOB, start_collector(bin, &b, &addrs, &prom.write_url())?));
    }

    let warmup = b.interval * 2 + Duration::from_secs(5);
    eprintln!(
        "{} targets x {} series every {:?}; warm-up {:?}, window {:?}",
        b.targets, b.series, b.interval, warmup, b.duration
    );
    tokio::time::sleep(warmup).await;

    let start_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let before: Vec<Usage> = scrapers.iter().map(|(_, s)| Process::Pid(s.pid()).usage()).collect();
    let mut rss_sum = vec![0f64; scrapers.len()];
    let mut rss_n = 0u32;
    let window_start = Instant::now();
    while window_start.elapsed() < b.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, (_, s)) in scrapers.iter().enumerate() {
            rss_sum[i] += Process::Pid(s.pid()).usage().rss_bytes as f64;
        }
        rss_n += 1;
    }
    let window = window_start.elapsed();
    let after: Vec<Usage> = scrapers.iter().map(|(_, s)| Process::Pid(s.pid()).usage()).collect();
    let end_unix = start_unix + window.as_secs_f64();

    // Let the last remote writes of the window land (Prometheus batches up to 5 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let range = format!("{}ms", window.as_millis());
    let mut figures = Vec::with_capacity(scrapers.len());
    for (i, (job, _)) in scrapers.iter().enumerate() {
        figures.push(Figures {
            samples: query_at(&prom, &samples_query(job, &range), end_unix).await?,
            active_series: query_at(&prom, &format!("count({{job=\"{job}\"}})"), end_unix).await?,
            cpu_seconds: after[i].cpu_seconds - before[i].cpu_seconds,
            rss_avg_bytes: rss_sum[i] / f64::from(rss_n.max(1)),
            peak_rss_bytes: after[i].peak_rss_bytes,
        });
    }
    let names: Vec<&str> = scrapers.iter().map(|(_, s)| s.name()).collect();
    for (_, mut s) in scrapers {
        if !s.is_running() {
            bail!("{} exited during the bench", s.name());
        }
    }

    print_figures(&b, window, &names, &figures);
    Ok(())
}

/// One column per scraper (lgtm-agent first), then lgtm-agent's ratio to each of the others.
fn print_figures(b: &ScrapeBench, window: Duration, names: &[&str], f: &[Figures]) {
    let l = &f[0];
    let p = &f[1];
    println!(
        "workload: scrape ({} targets x {} series, interval {:?}, window {:.1} s)",
        b.targets,
        b.series,
        b.interval,
        window.as_secs_f64()
    );
    let mut header = format!("{:<36}", "");
    for name in names {
        header += &format!(" {name:>18}");
    }
    for name in &names[1..] {
        header += &format!(" {:>14}", format!("ratio to {}", name.split('-').next().unwrap_or(name)));
    }
    println!("{header}");
    let row = |label: &str, value: &dyn Fn(&Figures) -> f64, digits: usize| {
        let mut line = format!("{label:<36}");
        for x in f {
            line += &format!(" {:>18.digits$}", value(x));
        }
        for x in &f[1..] {
            line += &format!(" {:>14.3}", value(l) / value(x));
        }
        println!("{line}");
    };
    row("samples/s", &|x| x.samples_per_second(window), 0);
    row("active series", &|x| x.active_series, 0);
    row("cpu-seconds in window", &|x| x.cpu_seconds, 2);
    row("cpu-seconds per million samples", &|x| x.cpu_per_million(), 3);
    row("RSS avg (MiB)", &|x| x.rss_avg_bytes / MIB, 1);
    row("RSS peak VmHWM (MiB)", &|x| x.peak_rss_bytes as f64 / MIB, 1);
    row("RSS avg per 1,000 series (KiB)", &|x| x.rss_per_thousand(x.rss_avg_bytes) / 1024.0, 1);
    row("RSS peak per 1,000 series (KiB)", &|x| x.rss_per_thousand(x.peak_rss_bytes as f64) / 1024.0, 1);
    // Issue 21's goals, against Prometheus agent in the same run.
    let cpu_ratio = l.cpu_per_million() / p.cpu_per_million();
    let rss_ratio = l.rss_per_thousand(l.peak_rss_bytes as f64) / p.rss_per_thousand(p.peak_rss_bytes as f64);
    println!(
        "targets vs prometheus-agent: cpu per million samples <= 0.33x: {} ({cpu_ratio:.3}); peak RSS per 1,000 series <= 0.2x: {} ({rss_ratio:.3})",
        if cpu_ratio <= 0.33 { "met" } else { "MISSED" },
        if rss_ratio <= 0.2 { "met" } else { "MISSED" },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_requested_series_and_change_over_time() {
        let b = Body { index: 1, series: 120, started: Instant::now() - Duration::from_secs(30) };
        let mut out = String::new();
        render(&b, &mut out);
        assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 120);
        assert_eq!(out.lines().filter(|l| l.starts_with("# TYPE")).count(), 3);
        assert!(out.contains("# TYPE bench_app_family_0_total counter\n"));
        let later = Body { started: b.started - Duration::from_secs(5), ..b };
        let mut out2 = String::new();
        render(&later, &mut out2);
        assert_ne!(out, out2);
    }
}
