//! The `outage` bench workload: Loki and Mimir down for minutes while logs and series flow into
//! the release `lgtm-agent` (daemonset mode); after they come back, everything must arrive, with
//! the agent's memory and disk within its configured queue limits all along.
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- outage [--down 120s] [--log-rate 20MiB] [--series 50000] [--targets 25] [--interval 5s]
//! ```
//!
//! The set-up, all on loopback:
//! - logs: a thread of this process appends CRI lines at `--log-rate` bytes/s to `--files` files
//!   of a `/var/log/pods`-like tree in a temporary directory (deleted at the end); every line is
//!   a pure function of (file, number), and the in-process Loki receiver regenerates and
//!   compares each one it gets ([`loki`]);
//! - metrics: `--targets` targets serve `--series` series in all, each answer carrying its
//!   scrape number, scraped every `--interval` and remote-written into a real Prometheus through
//!   a TCP gate ([`gate`]; a restarted Prometheus would lose what it held);
//! - phases: warm-up (everything flows), outage (`--down`: the Loki receiver's listener closed,
//!   or answering 503 with `--loki-down unavailable`, and the gate closed: connection refused),
//!   recovery (data still flowing until the agent has delivered everything from before the
//!   recovery, then two more intervals), final drain (writer and targets stopped, until
//!   everything arrived). Recovery and final drain are bounded by `--recovery-timeout`.
//!
//! Checked, and the exit status is non-zero if one fails: no line lost or altered; no sample
//! lost (served, not stored, and not part of a scrape the agent recorded as failed); no
//! `lgtm_agent_dropped_total`; the queues' memory gauges under `queue.max_memory`; the agent's
//! RSS after the warm-up under its warm-up peak plus both queues' `max_memory`; the Mimir queue's
//! files under `queue.max_disk`; everything drained within the timeout.

mod agent;
mod gate;
pub(crate) mod lines;
mod loki;
mod samples;
mod targets;
mod watch;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use lgtm_config::{ByteSize, Config, Mode};

use crate::agent_config::{AgentConfig, Backoff};
use crate::peers::prometheus::Prometheus;
use crate::procstat::Process;
use agent::{metric_sum, Agent};
use gate::Gate;
use lines::Writer;
use loki::{CheckingLoki, DownMode};
use samples::{Promql, TargetAccount, JOB};
use targets::Targets;
use watch::{Peaks, Phase, Watch, PHASES};

const MIB: f64 = 1024.0 * 1024.0;

/// Options of the `outage` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct OutageBench {
    /// How long Loki and Mimir are down.
    #[arg(long, default_value = "120s")]
    pub down: lgtm_config::Duration,
    /// Everything flowing before the outage.
    #[arg(long, default_value = "20s")]
    pub warmup: lgtm_config::Duration,
    /// Bytes of CRI log lines written per second.
    #[arg(long, default_value = "20MiB")]
    pub log_rate: ByteSize,
    /// Log files the rate is spread over (one container each).
    #[arg(long, default_value_t = 20)]
    pub files: usize,
    /// Series served by all targets together.
    #[arg(long, default_value_t = 50_000)]
    pub series: usize,
    #[arg(long, default_value_t = 25)]
    pub targets: usize,
    /// Scrape interval (and timeout).
    #[arg(long, default_value = "5s")]
    pub interval: lgtm_config::Duration,
    /// Bound on recovery plus final drain.
    #[arg(long, default_value = "10m")]
    pub recovery_timeout: lgtm_config::Duration,
    /// How the Loki receiver is down: its listener closed, or answering 503.
    #[arg(long, value_enum, default_value_t = DownMode::Refused)]
    pub loki_down: DownMode,
    /// `exporters.loki.queue.max_memory`; default: the agent's.
    #[arg(long)]
    pub loki_queue_memory: Option<ByteSize>,
    /// `exporters.mimir.queue.max_memory`; default: the agent's.
    #[arg(long)]
    pub mimir_queue_memory: Option<ByteSize>,
    /// `exporters.mimir.queue.max_disk`; default: the agent's.
    #[arg(long)]
    pub mimir_queue_disk: Option<ByteSize>,
    /// `retry.max_backoff` of both exporters; default: the agent's.
    #[arg(long)]
    pub max_backoff: Option<lgtm_config::Duration>,
    /// Where the temporary directory (log tree, agent data) goes; default: the system's.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
}

/// Runs the workload and prints its figures; an error if anything was lost or a limit exceeded.
pub async fn run(b: OutageBench) -> anyhow::Result<()> {
    let report = run_bench(&b).await?;
    println!("{report}");
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("outage bench failed: {}", failures.join("; "));
    }
    Ok(())
}

/// The limits in force in the agent's config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub loki_memory: u64,
    pub mimir_memory: u64,
    pub mimir_disk: u64,
    pub max_backoff: Duration,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct OutageReport {
    pub settings: String,
    pub limits: Limits,
    pub down: Duration,
    pub log_rate_asked: u64,
    pub log_rate_held: f64,
    pub log_bytes: u64,
    pub lines_written: u64,
    pub lines_at_recovery: u64,
    pub loki: loki::Counts,
    pub loki_line_bytes: u64,
    /// Lines received per file that the writer never wrote (beyond its count).
    pub lines_beyond_written: u64,
    pub targets: Vec<TargetAccount>,
    pub series_per_target: usize,
    pub peaks: [Peaks; 4],
    pub cpu: Vec<watch::PhaseCpu>,
    pub agent_hwm: u64,
    pub rss_limit: u64,
    pub logs_drained: Option<Duration>,
    pub metrics_drained: Option<Duration>,
    pub final_complete: bool,
    pub dropped: f64,
    pub retries_loki: f64,
    pub retries_mimir: f64,
    pub failed_loki: f64,
    pub failed_mimir: f64,
    pub agent_cpu_seconds: f64,
    pub bench_cpu_seconds: f64,
    pub agent_exit: String,
    pub wall: Duration,
}

async fn run_bench(b: &OutageBench) -> anyhow::Result<OutageReport> {
    if b.files == 0 || b.targets == 0 || b.series == 0 {
        bail!("--files, --targets and --series must be at least 1");
    }
    let agent_bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    // Deleted when dropped, on every path out of here.
    let work = tempfile::Builder::new().prefix("lgtm-bench-outage-").tempdir_in(&base)?;
    let (pods, data_dir) = (work.path().join("pods"), work.path().join("data"));
    std::fs::create_dir_all(&pods)?;

    let prom = Prometheus::start().await.context("prometheus is not installed (scripts/install-test-deps.sh)")?;
    let mut gate = Gate::open(format!("127.0.0.1:{}", prom.port).parse()?).await?;
    let mut loki = CheckingLoki::start().await?;
    let targets = Targets::start(b.targets, b.series).await?;
    let promql = Promql::new(prom.port);

    let admin = crate::free_port();
    let write_url = format!("http://{}/api/v1/write", gate.addr);
    let paths = AgentPaths { data_dir: &data_dir, pods: &pods };
    let yaml = agent_yaml(b, &paths, admin, &loki.push_url(), &write_url, &targets);
    let limits = limits_of(&yaml)?;
    let mut report = OutageReport {
        settings: format!(
            "down {:?}, warm-up {:?}, logs {:.1} MiB/s over {} files, {} targets x {} series every {:?}, Loki down as {:?}",
            b.down.get(),
            b.warmup.get(),
            b.log_rate.bytes() as f64 / MIB,
            b.files,
            b.targets,
            targets.series_per_target,
            b.interval.get(),
            b.loki_down
        ),
        limits,
        down: b.down.get(),
        log_rate_asked: b.log_rate.bytes(),
        series_per_target: targets.series_per_target,
        ..Default::default()
    };

    let bench_started = Instant::now();
    let cpu0 = Process::This.cpu_seconds();
    let writer = Writer::start(&pods, b.files, b.log_rate.bytes())?;
    let mut agent = Agent::start(&agent_bin, work.path(), &yaml, admin).await?;
    let watch = Watch::start(agent.pid(), admin, &data_dir);
    eprintln!("outage bench: {}; agent pid {}, work dir {}", report.settings, agent.pid(), work.path().display());

    // Warm-up: everything flows.
    sleep_watching(b.warmup.get(), &mut agent).await?;
    let warm_lines = loki.counts().unique;
    let warm_seq = promql.max_seq(&targets.addrs, bench_started.elapsed() + Duration::from_secs(60)).await?;
    eprintln!(
        "warm-up done: {warm_lines} of {} lines arrived, scrape numbers stored up to {:?}",
        writer.written.total_lines(),
        warm_seq.iter().max()
    );
    if warm_lines == 0 || warm_seq.iter().all(|s| *s == 0) {
        bail!("nothing flowed during the warm-up (agent log: {})", agent.log.display());
    }
    let warm_hwm = Process::Pid(agent.pid()).peak_rss_bytes();
    report.rss_limit = warm_hwm + limits.loki_memory + limits.mimir_memory;

    // Outage.
    watch.enter(Phase::Outage);
    loki.go_down(b.loki_down).await;
    gate.close().await;
    eprintln!("backends down for {:?}", b.down.get());
    sleep_watching(b.down.get(), &mut agent).await?;

    // Recovery: data still flows; how long until what was written or served before it arrived?
    let lines_at_recovery = writer.written.lines_per_file();
    report.lines_at_recovery = lines_at_recovery.iter().sum();
    let served_at_recovery = targets.served();
    loki.come_back().await?;
    gate.reopen().await?;
    watch.enter(Phase::Recovery);
    let recovered = Instant::now();
    let deadline = recovered + b.recovery_timeout.get();
    eprintln!("backends back; {} lines written so far", report.lines_at_recovery);
    let drain_deadline = deadline - Duration::from_secs(60).min(b.recovery_timeout.get() / 2);
    while Instant::now() < drain_deadline && (report.logs_drained.is_none() || report.metrics_drained.is_none()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.check_running()?;
        if report.logs_drained.is_none() && loki.has_all_below(&lines_at_recovery) {
            report.logs_drained = Some(recovered.elapsed());
            eprintln!("logs drained after {:?}", recovered.elapsed());
        }
        if report.metrics_drained.is_none() {
            let seq = promql.max_seq(&targets.addrs, bench_started.elapsed() + Duration::from_secs(60)).await?;
            if seq.iter().zip(&served_at_recovery).all(|(got, served)| got >= served) {
                report.metrics_drained = Some(recovered.elapsed());
                eprintln!("metrics drained after {:?}", recovered.elapsed());
            }
        }
    }
    sleep_watching(b.interval.get() * 2, &mut agent).await?;

    // Final drain: nothing new; wait for everything.
    let stopped_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    targets.stop_serving();
    report.log_rate_held = writer.achieved_rate();
    let written = writer.written.clone();
    tokio::task::spawn_blocking(move || writer.stop()).await??;
    watch.enter(Phase::Final);
    let lines_final = written.lines_per_file();
    report.lines_written = lines_final.iter().sum();
    report.log_bytes = written.bytes.load(std::sync::atomic::Ordering::Acquire);
    let served_final = targets.served();
    eprintln!("writer and targets stopped; waiting for the rest ({} lines written)", report.lines_written);
    let mut quiet_checks = 0;
    let final_deadline = deadline.max(Instant::now() + Duration::from_secs(60));
    while Instant::now() < final_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.check_running()?;
        let logs_done = loki.has_all_below(&lines_final);
        let seq = promql.max_seq(&targets.addrs, bench_started.elapsed() + Duration::from_secs(60)).await?;
        let seq_done = seq.iter().zip(&served_final).all(|(got, served)| got >= served);
        // A last scrape that failed never shows its number: then an empty queue is the sign.
        let text = agent.metrics().await;
        let queues_empty = metric_sum(&text, "lgtm_agent_queue_records", &[]) == 0.0;
        quiet_checks = if queues_empty { quiet_checks + 1 } else { 0 };
        if logs_done && (seq_done || quiet_checks >= 6) {
            report.final_complete = true;
            break;
        }
    }
    // Anything sent twice arrives right after; give it a moment before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let text = agent.metrics().await;
    report.dropped = metric_sum(&text, "lgtm_agent_dropped_total", &[]);
    report.retries_loki = metric_sum(&text, "lgtm_agent_exporter_retries_total", &["exporter=\"loki\""]);
    report.retries_mimir = metric_sum(&text, "lgtm_agent_exporter_retries_total", &["exporter=\"mimir\""]);
    report.failed_loki = metric_sum(&text, "lgtm_agent_exporter_failed_total", &["exporter=\"loki\""]);
    report.failed_mimir = metric_sum(&text, "lgtm_agent_exporter_failed_total", &["exporter=\"mimir\""]);
    report.agent_cpu_seconds = Process::Pid(agent.pid()).cpu_seconds();
    report.agent_hwm = Process::Pid(agent.pid()).peak_rss_bytes();
    report.peaks = watch.peaks();
    report.cpu = watch.cpu();
    drop(watch);
    report.agent_exit = match agent.stop(Duration::from_secs(30)).await {
        Some(status) => status.to_string(),
        None => "killed after 30 s of SIGTERM".into(),
    };
    report.bench_cpu_seconds = Process::This.cpu_seconds() - cpu0;
    report.wall = bench_started.elapsed();

    report.loki = loki.counts();
    report.loki_line_bytes = loki.line_bytes();
    let unique = loki.unique_per_file();
    report.lines_beyond_written =
        unique.iter().enumerate().map(|(f, u)| u.saturating_sub(lines_final.get(f).copied().unwrap_or(0))).sum();
    loki.stop().await;
    report.targets = promql
        .account(
            &targets.addrs,
            &served_final,
            targets.series_per_target,
            bench_started.elapsed() + Duration::from_secs(60),
            stopped_unix,
        )
        .await?;
    Ok(report)
}

/// Sleeps `d`, failing early if the agent exits.
async fn sleep_watching(d: Duration, agent: &mut Agent) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(500))).await;
        agent.check_running()?;
    }
    Ok(())
}

struct AgentPaths<'a> {
    data_dir: &'a std::path::Path,
    pods: &'a std::path::Path,
}

fn agent_yaml(
    b: &OutageBench,
    paths: &AgentPaths,
    admin: u16,
    loki_url: &str,
    write_url: &str,
    targets: &Targets,
) -> String {
    let interval = format!("{}ms", b.interval.get().as_millis());
    let static_configs = serde_json::json!([{
        "targets": targets.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "labels": { "job": JOB },
        "metrics_path": targets.metrics_path,
    }]);
    let mut c = AgentConfig::new("outage-bench", paths.data_dir, admin)
        .set("mode", "daemonset")
        .set("node_name", "bench-node")
        // The agent's default backoff (100 ms to 30 s).
        .loki(loki_url, Backoff("100ms", "30s"))
        .mimir(write_url, Backoff("100ms", "30s"))
        .logs_from(paths.pods)
        .scrape(&interval, &interval, static_configs);
    for exporter in ["loki", "mimir"] {
        // The agent's own default, not the tests' quicker one.
        c = c.set(&format!("exporters.{exporter}.batch.max_wait"), "1s");
        if let Some(max) = b.max_backoff {
            c = c.set(&format!("exporters.{exporter}.retry.max_backoff"), format!("{}ms", max.get().as_millis()));
        }
    }
    if let Some(m) = b.loki_queue_memory {
        c = c.set("exporters.loki.queue.max_memory", m.bytes());
    }
    if let Some(m) = b.mimir_queue_memory {
        c = c.set("exporters.mimir.queue.max_memory", m.bytes());
    }
    if let Some(d) = b.mimir_queue_disk {
        c = c.set("exporters.mimir.queue.max_disk", d.bytes());
    }
    c.yaml()
}

/// The queue limits and backoff the agent will run with, read the way it reads its config.
fn limits_of(yaml: &str) -> anyhow::Result<Limits> {
    let cfg = Config::from_yaml("outage-agent.yaml", yaml, Some(Mode::Daemonset), |_| None)
        .map_err(|e| anyhow::anyhow!("the bench's agent config is invalid: {e}"))?;
    let (loki, mimir) = (&cfg.exporters.loki, &cfg.exporters.mimir);
    Ok(Limits {
        loki_memory: loki.queue.max_memory().bytes(),
        mimir_memory: mimir.queue.max_memory().bytes(),
        mimir_disk: mimir.queue.max_disk().bytes(),
        max_backoff: mimir.retry.max_backoff.get(),
    })
}

impl OutageReport {
    fn lines_lost(&self) -> u64 {
        self.lines_written.saturating_sub(self.loki.unique.saturating_sub(self.lines_beyond_written))
    }

    fn samples(&self) -> (u64, u64, u64, u64) {
        let t = &self.targets;
        (
            t.iter().map(|a| a.expected_samples).sum(),
            t.iter().map(|a| a.stored_samples).sum(),
            t.iter().map(|a| a.failed_scrapes * a.series_per_target).sum(),
            t.iter().map(|a| a.lost_samples()).sum(),
        )
    }

    /// The agent's peak RSS after the warm-up: the highest 250 ms sample, or its `VmHWM` at the
    /// end, which catches spikes between samples (the limit is above the warm-up's `VmHWM`, so a
    /// `VmHWM` over the limit was reached after the warm-up).
    fn peak_rss_after_warmup(&self) -> u64 {
        Peaks::over(&self.peaks[1..]).rss.max(self.agent_hwm)
    }

    /// What failed, one phrase each; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let all = Peaks::over(&self.peaks);
        if self.lines_lost() > 0 {
            f.push(format!("{} log lines lost", self.lines_lost()));
        }
        if self.loki.altered + self.lines_beyond_written > 0 {
            f.push(format!("{} log lines altered", self.loki.altered + self.lines_beyond_written));
        }
        let (_, _, _, lost) = self.samples();
        if lost > 0 {
            f.push(format!("{lost} samples lost"));
        }
        if self.dropped > 0.0 {
            f.push(format!("lgtm_agent_dropped_total = {}", self.dropped));
        }
        if all.loki_memory > self.limits.loki_memory {
            f.push(format!("Loki queue memory {} > {}", all.loki_memory, self.limits.loki_memory));
        }
        if all.mimir_memory > self.limits.mimir_memory {
            f.push(format!("Mimir queue memory {} > {}", all.mimir_memory, self.limits.mimir_memory));
        }
        if self.peak_rss_after_warmup() > self.rss_limit {
            f.push(format!("RSS {:.1} MiB > {:.1} MiB", mib(self.peak_rss_after_warmup()), mib(self.rss_limit)));
        }
        if all.mimir_disk_files > self.limits.mimir_disk {
            f.push(format!("Mimir queue files {} > {}", all.mimir_disk_files, self.limits.mimir_disk));
        }
        if self.logs_drained.is_none() || self.metrics_drained.is_none() || !self.final_complete {
            f.push("not everything arrived within --recovery-timeout".into());
        }
        f
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "not drained".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

impl fmt::Display for OutageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        writeln!(f, "workload: outage ({})", self.settings)?;
        writeln!(
            f,
            "agent limits: loki queue max_memory {:.0} MiB (memory only: the log files are the buffer), mimir queue max_memory {:.0} MiB, max_disk {:.0} MiB, retry max_backoff {:?}",
            mib(l.loki_memory),
            mib(l.mimir_memory),
            mib(l.mimir_disk),
            l.max_backoff
        )?;
        writeln!(
            f,
            "logs: {:.1} MiB written at {:.2} MiB/s (asked {:.2}); lines written {}, arrived {} unique ({} entries), lost {}, duplicated {}, altered {}",
            mib(self.log_bytes),
            self.log_rate_held / MIB,
            self.log_rate_asked as f64 / MIB,
            self.lines_written,
            self.loki.unique,
            self.loki.entries,
            self.lines_lost(),
            self.loki.duplicates,
            self.loki.altered + self.lines_beyond_written
        )?;
        let (expected, stored, failed, lost) = self.samples();
        let served: u64 = self.targets.iter().map(|t| t.served_scrapes).sum();
        let failed_scrapes: u64 = self.targets.iter().map(|t| t.failed_scrapes).sum();
        let missing: usize = self.targets.iter().map(|t| t.missing_scrapes.len()).sum();
        writeln!(
            f,
            "samples: {} scrapes x {} series served = {expected}; in Prometheus {stored}; of scrapes the agent recorded as failed {failed} ({failed_scrapes} scrapes); lost {lost} (scrape numbers missing: {missing})",
            served, self.series_per_target
        )?;
        for (i, t) in self.targets.iter().enumerate().filter(|(_, t)| !t.missing_scrapes.is_empty()).take(5) {
            writeln!(
                f,
                "  target {i}: missing scrape numbers {:?}",
                &t.missing_scrapes[..t.missing_scrapes.len().min(20)]
            )?;
        }
        writeln!(
            f,
            "drain after recovery: logs {} (the {} lines written before it), metrics {}; final drain complete: {}",
            secs(self.logs_drained),
            self.lines_at_recovery,
            secs(self.metrics_drained),
            if self.final_complete { "yes" } else { "NO" }
        )?;
        writeln!(
            f,
            "{:<12} {:>10} {:>14} {:>15} {:>15} {:>17} {:>12} {:>8} {:>12}",
            "phase",
            "RSS MiB",
            "loki mem MiB",
            "mimir mem MiB",
            "mimir disk MiB",
            "mimir files MiB",
            "log lag MiB",
            "wall s",
            "agent CPU s"
        )?;
        for (i, (p, k)) in PHASES.iter().zip(&self.peaks).enumerate() {
            let cpu = self.cpu.get(i).copied().unwrap_or_default();
            writeln!(
                f,
                "{:<12} {:>10.1} {:>14.1} {:>15.1} {:>15.1} {:>17.1} {:>12.1} {:>8.1} {:>12.1}",
                p.name(),
                mib(k.rss),
                mib(k.loki_memory),
                mib(k.mimir_memory),
                mib(k.mimir_disk_gauge),
                mib(k.mimir_disk_files),
                mib(k.logs_lag),
                cpu.wall_seconds,
                cpu.cpu_seconds
            )?;
        }
        let after = Peaks::over(&self.peaks[1..]);
        writeln!(
            f,
            "memory: peak RSS after the warm-up {:.1} MiB (sampled {:.1}, VmHWM {:.1}) <= warm-up VmHWM + both queues' max_memory = {:.1} MiB: {}; loki queue files {:.1} MiB (expected 0)",
            mib(self.peak_rss_after_warmup()),
            mib(after.rss),
            mib(self.agent_hwm),
            mib(self.rss_limit),
            if self.peak_rss_after_warmup() <= self.rss_limit { "yes" } else { "NO" },
            mib(Peaks::over(&self.peaks).loki_disk_files)
        )?;
        writeln!(
            f,
            "agent self-metrics: lgtm_agent_dropped_total {}, retries loki {} mimir {}, failed loki {} mimir {}",
            self.dropped, self.retries_loki, self.retries_mimir, self.failed_loki, self.failed_mimir
        )?;
        writeln!(
            f,
            "agent CPU {:.1} s; this process (writer, Loki receiver, targets, gate) CPU {:.1} s; fake Loki got {} pushes, {:.1} MiB of lines, {} answered 503; agent exit: {}; wall {:.1} s",
            self.agent_cpu_seconds,
            self.bench_cpu_seconds,
            self.loki.pushes,
            mib(self.loki_line_bytes),
            self.loki.refused_503,
            self.agent_exit,
            self.wall.as_secs_f64()
        )?;
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "result: PASS")
        } else {
            write!(f, "result: FAIL ({})", failures.join("; "))
        }
    }
}
