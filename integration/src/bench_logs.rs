//! The `logs` bench workload: a generated `/var/log/pods` tree of CRI files shipped by the real
//! release `lgtm-agent` binary into an in-process counting Loki.
//!
//! The tree: `files` containers (one per pod), `size` bytes in all, lines of 80 to 400 bytes, half
//! plain (logfmt-ish) and half JSON, and one logical line in ten written as a `P` part and an `F`
//! part. Every line is a pure function of (file, number), so the receiving side regenerates what
//! it expects and compares bytes: lines lost, duplicated or altered are counted, not sampled.
//!
//! The receiver is not [`crate::fake_loki::FakeLoki`] (which keeps every line in memory): it
//! decodes the snappy block and walks the protobuf without building messages, marks each line in
//! a bitmap, and keeps nothing else. Its own CPU time is measured (this process does nothing else
//! while the agent ships) and printed, to show it is not the bottleneck.
//!
//! Figures of the agent process, from `/proc/<pid>`: CPU-seconds (`utime + stime`, 100 Hz ticks)
//! per GiB of CRI bytes, throughput (MiB of CRI bytes per wall second, agent start to last
//! line), peak RSS (`VmHWM`), and, in a separate run, the RSS (`VmRSS`) of an agent idling on
//! `files` quiet files after shipping their few lines (and its CPU meanwhile).
//!
//! The steady workload (`--workloads steady`): `files` empty files, the agent started, then lines
//! appended at `steady_rate` bytes per second in all, one `write` per CRI line as a runtime does,
//! round-robin over the files every 10 ms. After a warm-up, the agent's CPU (`/proc/<pid>/stat`)
//! over a window gives the percent of one core and the CPU-seconds per GiB written; each line's
//! time from its `write` to the push that carried it gives the latency percentiles. Every line
//! is checked as in the bulk run.
//!
//! With `--collector PATH` (or `auto`: the build of `scripts/build-otelcol.sh`), the OpenTelemetry
//! Collector then ships the same two trees (`filelog` + `container` operator -> `otlphttp` into the
//! receiver's OTLP logs endpoint, checked line by line the same way), and the ratios are printed.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

use crate::procstat::Process;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What to generate and which binary ships it.
#[derive(Debug, Clone)]
pub struct LogsBenchOptions {
    /// Total bytes of CRI files.
    pub size: u64,
    /// Number of files (one container per pod).
    pub files: usize,
    /// Where to generate the trees (a temporary directory under it); the system temp dir if unset.
    pub dir: Option<PathBuf>,
    /// The `lgtm-agent` binary; `target/release/lgtm-agent` (built if missing) if unset.
    pub agent: Option<PathBuf>,
    /// Lines per file of the idle measurement.
    pub quiet_lines: u32,
    /// How long the idle agent sits before its RSS is read.
    pub idle_wait: Duration,
    /// `exporters.loki.queue.max_memory` of the agent; its default if unset.
    pub loki_queue_memory: Option<u64>,
    /// The OpenTelemetry Collector to run on the same trees after the agent (`filelog` with the
    /// `container` operator -> `otlphttp` into the same receiver's OTLP logs endpoint); none: the
    /// agent alone.
    pub collector: Option<PathBuf>,
    /// Which workloads run (all by default).
    pub workloads: Workloads,
    /// The steady workload: bytes per second written across the `files` files, one `write` per
    /// CRI line as a runtime does, round-robin over the files.
    pub steady_rate: u64,
    /// Written before the measured window starts (the agent is running and shipping).
    pub steady_warmup: Duration,
    /// The measured window of the steady workload.
    pub steady_window: Duration,
}

/// The workloads of one `bench logs` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workloads {
    /// The agent idling on `files` quiet files: its VmRSS and CPU.
    pub idle: bool,
    /// The agent shipping a `size` tree written before it starts: CPU-seconds per GiB, peak RSS.
    pub bulk: bool,
    /// The agent following `files` files written at `steady_rate`: CPU % of one core, CPU-seconds
    /// per GiB, latency from the write to the push.
    pub steady: bool,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads { idle: true, bulk: true, steady: true }
    }
}

impl std::str::FromStr for Workloads {
    type Err = String;

    /// A comma-separated list of `idle`, `bulk`, `steady` (or `all`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut w = Workloads { idle: false, bulk: false, steady: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "idle" => w.idle = true,
                "bulk" => w.bulk = true,
                "steady" => w.steady = true,
                "all" => w = Workloads::default(),
                other => return Err(format!("unknown workload {other:?} (idle, bulk, steady, all)")),
            }
        }
        if w == (Workloads { idle: false, bulk: false, steady: false }) {
            return Err("no workload given (idle, bulk, steady, all)".into());
        }
        Ok(w)
    }
}

impl Default for LogsBenchOptions {
    fn default() -> Self {
        LogsBenchOptions {
            size: 1 << 30,
            files: 100,
            dir: None,
            agent: None,
            quiet_lines: 10,
            idle_wait: Duration::from_secs(5),
            loki_queue_memory: None,
            collector: None,
            workloads: Workloads::default(),
            steady_rate: 5 * 1024 * 1024,
            steady_warmup: Duration::from_secs(5),
            steady_window: Duration::from_secs(30),
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct LogsBenchReport {
    pub files: usize,
    pub cri_bytes: u64,
    pub lines_written: u64,
    pub partial_lines: u64,
    pub generate_seconds: f64,
    pub check: CheckCounts,
    pub wall_seconds: f64,
    pub agent_cpu_seconds: f64,
    pub agent_user_seconds: f64,
    pub agent_peak_rss: u64,
    pub idle_rss: u64,
    /// Of `idle_rss`: anonymous memory (heap, stacks) and file pages (the binary's code).
    pub idle_rss_anon: u64,
    pub idle_rss_file: u64,
    pub idle_peak_rss: u64,
    /// CPU % of one core of the idle agent over the idle wait.
    pub idle_cpu_percent: f64,
    pub loki_cpu_seconds: f64,
    pub loki_pushes: u64,
    /// The agent's exporter retries during the bulk run (a slow run with retries was refused).
    pub agent_retries: u64,
    pub loki_line_bytes: u64,
    /// The Collector's figures on the same trees, when it ran.
    pub collector: Option<PeerFigures>,
    /// Which workloads ran.
    pub workloads: Workloads,
    pub steady: Option<SteadyFigures>,
}

/// The figures of the steady workload.
#[derive(Debug, Clone, Default)]
pub struct SteadyFigures {
    pub files: usize,
    /// Bytes per second asked for.
    pub rate: u64,
    /// CRI bytes written in the measured window, and its length.
    pub window_bytes: u64,
    pub window_seconds: f64,
    /// Agent CPU seconds in the window.
    pub cpu_seconds: f64,
    /// All lines written (warm-up, window), and what arrived of them.
    pub lines_written: u64,
    pub check: CheckCounts,
    /// VmRSS at the end of the window, VmHWM of the whole run.
    pub rss: u64,
    pub peak_rss: u64,
    /// From the `write` of a line (its last piece) to the push that carried it, over all lines.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
}

impl SteadyFigures {
    /// Bytes per second written in the window.
    pub fn achieved_rate(&self) -> f64 {
        self.window_bytes as f64 / self.window_seconds.max(1e-9)
    }

    /// Percent of one core.
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_seconds / self.window_seconds.max(1e-9)
    }

    pub fn cpu_seconds_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.window_bytes as f64 / GIB).max(1e-12)
    }

    pub fn is_exact(&self) -> bool {
        self.check.unique == self.lines_written && self.check.duplicates == 0 && self.check.corrupt == 0
    }
}

/// A peer's figures on the same trees (see [`LogsBenchOptions::collector`]).
#[derive(Debug, Clone, Default)]
pub struct PeerFigures {
    pub name: String,
    pub check: CheckCounts,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
    pub idle_rss: u64,
    /// Lines of the quiet tree that never arrived.
    pub idle_lost: u64,
}

impl LogsBenchReport {
    pub fn mib_per_second(&self) -> f64 {
        self.cri_bytes as f64 / MIB / self.wall_seconds.max(1e-9)
    }

    pub fn cpu_seconds_per_gib(&self) -> f64 {
        self.agent_cpu_seconds / (self.cri_bytes as f64 / GIB).max(1e-12)
    }

    /// No line lost, duplicated or altered in any workload that ran.
    pub fn is_exact(&self) -> bool {
        let bulk = !self.workloads.bulk
            || (self.check.unique == self.lines_written && self.check.duplicates == 0 && self.check.corrupt == 0);
        bulk && self.steady.as_ref().is_none_or(SteadyFigures::is_exact)
    }
}

impl fmt::Display for LogsBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.check;
        writeln!(f, "workload: logs (CRI tree -> lgtm-agent -> in-process Loki receiver)")?;
        if self.workloads.idle {
            writeln!(
                f,
                "idle: agent RSS with {} quiet files: {:.1} MiB (target <= 8; anonymous {:.1}, file {:.1}; its peak {:.1} MiB), CPU {:.2} % of one core",
                self.files,
                self.idle_rss as f64 / MIB,
                self.idle_rss_anon as f64 / MIB,
                self.idle_rss_file as f64 / MIB,
                self.idle_peak_rss as f64 / MIB,
                self.idle_cpu_percent
            )?;
        }
        if self.workloads.bulk {
            writeln!(
                f,
                "bulk: tree of {} files, {:.1} MiB, {} lines ({} written as P+F), generated in {:.1} s",
                self.files,
                self.cri_bytes as f64 / MIB,
                self.lines_written,
                self.partial_lines,
                self.generate_seconds
            )?;
            writeln!(
                f,
                "bulk: received {} entries, {} unique, lost {}, duplicated {}, altered {}, streams {}",
                c.entries,
                c.unique,
                self.lines_written.saturating_sub(c.unique),
                c.duplicates,
                c.corrupt,
                c.streams
            )?;
            for sample in &c.altered_samples {
                writeln!(f, "bulk: altered: {sample}")?;
            }
            writeln!(
                f,
                "bulk: wall {:.2} s, throughput {:.1} MiB/s, exporter retries {}",
                self.wall_seconds,
                self.mib_per_second(),
                self.agent_retries
            )?;
            writeln!(
                f,
                "bulk: agent CPU {:.2} s ({:.2} user, {:.2} system), CPU-seconds per GiB {:.2} (target <= 2.5)",
                self.agent_cpu_seconds,
                self.agent_user_seconds,
                self.agent_cpu_seconds - self.agent_user_seconds,
                self.cpu_seconds_per_gib()
            )?;
            writeln!(f, "bulk: agent peak RSS {:.1} MiB (target <= 20)", self.agent_peak_rss as f64 / MIB)?;
            let loki_mib = self.loki_line_bytes as f64 / MIB;
            writeln!(
                f,
                "bulk: fake Loki {:.2} CPU-s for {} pushes, {:.1} MiB of lines ({:.0} MiB/s per CPU-second; {:.0}% of one core on average)",
                self.loki_cpu_seconds,
                self.loki_pushes,
                loki_mib,
                loki_mib / self.loki_cpu_seconds.max(1e-9),
                100.0 * self.loki_cpu_seconds / self.wall_seconds.max(1e-9)
            )?;
        }
        if let Some(s) = &self.steady {
            writeln!(
                f,
                "steady: {} files at {:.2} MiB/s (asked {:.2}), window {:.1} s: agent CPU {:.2} % of one core (target <= 3), {:.2} CPU-seconds per GiB{}",
                s.files,
                s.achieved_rate() / MIB,
                s.rate as f64 / MIB,
                s.window_seconds,
                s.cpu_percent(),
                s.cpu_seconds_per_gib(),
                if self.workloads.bulk {
                    format!(" ({:.2}x bulk; target <= 2)", s.cpu_seconds_per_gib() / self.cpu_seconds_per_gib().max(1e-9))
                } else {
                    String::new()
                }
            )?;
            writeln!(
                f,
                "steady: latency write -> push p50 {:.0} ms, p99 {:.0} ms (target < 1000), max {:.0} ms; RSS {:.1} MiB, peak {:.1} MiB",
                s.latency_p50.as_secs_f64() * 1e3,
                s.latency_p99.as_secs_f64() * 1e3,
                s.latency_max.as_secs_f64() * 1e3,
                s.rss as f64 / MIB,
                s.peak_rss as f64 / MIB
            )?;
            writeln!(
                f,
                "steady: {} lines written, {} unique arrived, lost {}, duplicated {}, altered {}",
                s.lines_written,
                s.check.unique,
                s.lines_written.saturating_sub(s.check.unique),
                s.check.duplicates,
                s.check.corrupt
            )?;
        }
        write!(f, "exact: {}", if self.is_exact() { "yes" } else { "NO" })?;
        if let Some(peer) = &self.collector {
            let gib = self.cri_bytes as f64 / GIB;
            let per_gib = peer.cpu_seconds / gib.max(1e-12);
            writeln!(f)?;
            writeln!(
                f,
                "{}: {} unique of {} lines (lost {}, duplicated {}, altered {}), wall {:.2} s ({:.1} MiB/s)",
                peer.name,
                peer.check.unique,
                self.lines_written,
                self.lines_written.saturating_sub(peer.check.unique),
                peer.check.duplicates,
                peer.check.corrupt,
                peer.wall_seconds,
                self.cri_bytes as f64 / MIB / peer.wall_seconds.max(1e-9)
            )?;
            for sample in &peer.check.altered_samples {
                writeln!(f, "{}: altered: {sample}", peer.name)?;
            }
            writeln!(
                f,
                "{}: CPU-seconds per GiB {:.2}, peak RSS {:.1} MiB, idle RSS {:.1} MiB (quiet tree: {} lines lost)",
                peer.name,
                per_gib,
                peer.peak_rss as f64 / MIB,
                peer.idle_rss as f64 / MIB,
                peer.idle_lost
            )?;
            write!(
                f,
                "lgtm-agent / {}: CPU per GiB {:.3}, peak RSS {:.3}, idle RSS {:.3} (goal: at most 0.33 for CPU and peak RSS)",
                peer.name,
                self.cpu_seconds_per_gib() / per_gib.max(1e-12),
                self.agent_peak_rss as f64 / (peer.peak_rss as f64).max(1.0),
                self.idle_rss as f64 / (peer.idle_rss as f64).max(1.0)
            )?;
        }
        Ok(())
    }
}

/// Generates the trees, runs the agent twice (idle, then the shipping run), returns the figures.
pub async fn run_logs_bench(opts: &LogsBenchOptions) -> anyhow::Result<LogsBenchReport> {
    if opts.files == 0 {
        bail!("--files must be at least 1");
    }
    let agent_bin = match &opts.agent {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let work = tempfile::Builder::new().prefix("lgtm-bench-logs-").tempdir_in(&base)?;
    let mut report = LogsBenchReport { files: opts.files, workloads: opts.workloads, ..Default::default() };
    let queue = opts.loki_queue_memory;
    let with_collector = opts.collector.is_some() && opts.workloads.idle && opts.workloads.bulk;
    if opts.collector.is_some() && !with_collector {
        eprintln!("the Collector runs only with the idle and bulk workloads; not running it");
    }

    // Idle: a few lines per file, shipped, then nothing.
    let quiet_tree = work.path().join("quiet");
    let mut quiet = Generated::default();
    if opts.workloads.idle {
        quiet = tokio::task::spawn_blocking({
            let (dir, files, lines) = (quiet_tree.clone(), opts.files, opts.quiet_lines);
            move || generate_tree(&dir, files, Budget::Lines(lines))
        })
        .await??;
        let receiver = Receiver::start(&quiet.lines_per_file).await?;
        let mut agent =
            AgentRun::start(&agent_bin, &work.path().join("idle"), &quiet_tree, &receiver.push_url(), queue).await?;
        receiver.wait_complete(quiet.lines, Duration::from_secs(60), &mut agent).await?;
        let (cpu0, t0) = (Process::Pid(agent.pid()).cpu_seconds(), Instant::now());
        tokio::time::sleep(opts.idle_wait).await;
        report.idle_cpu_percent =
            100.0 * (Process::Pid(agent.pid()).cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64().max(1e-9);
        report.idle_rss = Process::Pid(agent.pid()).rss_bytes();
        report.idle_rss_anon = Process::Pid(agent.pid()).status_bytes("RssAnon");
        report.idle_rss_file = Process::Pid(agent.pid()).status_bytes("RssFile");
        report.idle_peak_rss = Process::Pid(agent.pid()).peak_rss_bytes();
        agent.stop().await;
        receiver.stop().await;
    }

    // The shipping run.
    let tree = work.path().join("pods");
    let mut generated = Generated::default();
    let timeout = Duration::from_secs(120).max(Duration::from_secs_f64(opts.size as f64 / (2.0 * MIB)));
    if opts.workloads.bulk {
        let t0 = Instant::now();
        generated = tokio::task::spawn_blocking({
            let (dir, files, size) = (tree.clone(), opts.files, opts.size);
            move || generate_tree(&dir, files, Budget::Bytes(size))
        })
        .await??;
        report.generate_seconds = t0.elapsed().as_secs_f64();
        report.cri_bytes = generated.bytes;
        report.lines_written = generated.lines;
        report.partial_lines = generated.partial;

        let receiver = Receiver::start(&generated.lines_per_file).await?;
        let loki_cpu0 = Process::This.cpu_seconds();
        let started = Instant::now();
        let mut agent =
            AgentRun::start(&agent_bin, &work.path().join("ship"), &tree, &receiver.push_url(), queue).await?;
        let done = receiver.wait_complete(generated.lines, timeout, &mut agent).await;
        report.wall_seconds = started.elapsed().as_secs_f64();
        report.loki_cpu_seconds = Process::This.cpu_seconds() - loki_cpu0;
        // Anything sent twice arrives right after; give it a moment before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        report.agent_cpu_seconds = Process::Pid(agent.pid()).cpu_seconds();
        report.agent_user_seconds = Process::Pid(agent.pid()).user_seconds();
        report.agent_peak_rss = Process::Pid(agent.pid()).peak_rss_bytes();
        report.agent_retries = agent.metric_sum("lgtm_agent_exporter_retries_total").await as u64;
        agent.stop().await;
        report.check = receiver.counts();
        report.loki_pushes = receiver.pushes.load(Ordering::Relaxed);
        report.loki_line_bytes = receiver.line_bytes.load(Ordering::Relaxed);
        receiver.stop().await;
        if let Err(e) = done {
            eprintln!("{e:#}");
        }
    }

    if opts.workloads.steady {
        report.steady = Some(run_steady(&agent_bin, work.path(), opts).await?);
    }

    if let Some(bin) = opts.collector.as_ref().filter(|_| with_collector) {
        let mut peer = PeerFigures { name: "otelcol-contrib".into(), ..Default::default() };
        // Idle, on the quiet tree.
        let receiver = Receiver::start(&quiet.lines_per_file).await?;
        let mut run =
            AgentRun::start_collector(bin, &work.path().join("c-idle"), &quiet_tree, &receiver.otlp_url()).await?;
        // A peer that does not deliver everything is reported, not a reason to stop the bench.
        if let Err(e) = receiver.wait_complete(quiet.lines, Duration::from_secs(30), &mut run).await {
            let c = receiver.counts();
            let log = std::fs::read_to_string(&run.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprintln!(
                "{}, idle run: {e:#} (duplicated {}, altered {}); its log ends:\n{}",
                peer.name,
                c.duplicates,
                c.corrupt,
                tail.join("\n")
            );
            peer.idle_lost = quiet.lines.saturating_sub(c.unique);
        }
        tokio::time::sleep(opts.idle_wait).await;
        peer.idle_rss = Process::Pid(run.pid()).rss_bytes();
        run.stop().await;
        receiver.stop().await;
        // Shipping, on the same tree the agent shipped.
        let receiver = Receiver::start(&generated.lines_per_file).await?;
        let started = Instant::now();
        let mut run = AgentRun::start_collector(bin, &work.path().join("c-ship"), &tree, &receiver.otlp_url()).await?;
        let done = receiver.wait_complete(generated.lines, timeout, &mut run).await;
        peer.wall_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.cpu_seconds = Process::Pid(run.pid()).cpu_seconds();
        peer.peak_rss = Process::Pid(run.pid()).peak_rss_bytes();
        run.stop().await;
        peer.check = receiver.counts();
        receiver.stop().await;
        if let Err(e) = done {
            eprintln!("{}: {e:#}", peer.name);
        }
        report.collector = Some(peer);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The generated lines.

/// How much each file gets.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// This many bytes in all, spread evenly.
    Bytes(u64),
    /// This many logical lines per file.
    Lines(u32),
}

#[derive(Debug, Default)]
struct Generated {
    bytes: u64,
    lines: u64,
    partial: u64,
    lines_per_file: Vec<u32>,
}

fn generate_tree(root: &Path, files: usize, budget: Budget) -> anyhow::Result<Generated> {
    let mut out = Generated::default();
    let mut message = Vec::with_capacity(512);
    for f in 0..files {
        // `<namespace>_<pod>_<uid>/<container>/0.log` with a hex uid, as the kubelet names them
        // (the Collector's `container` operator reads its metadata from this path).
        let dir = root.join(pod_dir(f)).join("app");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("0.log");
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let (mut bytes, mut n) = (0u64, 0u32);
        loop {
            let more = match budget {
                Budget::Bytes(total) => bytes < total / files as u64,
                Budget::Lines(lines) => n < lines,
            };
            if !more {
                break;
            }
            let partial = line_message(f as u32, n, &mut message);
            let ts = timestamp(n);
            if partial {
                let half = message.len() / 2;
                bytes += write_cri(&mut w, &ts, 'P', &message[..half])?;
                bytes += write_cri(&mut w, &ts, 'F', &message[half..])?;
                out.partial += 1;
            } else {
                bytes += write_cri(&mut w, &ts, 'F', &message)?;
            }
            n += 1;
        }
        w.flush()?;
        out.bytes += bytes;
        out.lines += u64::from(n);
        out.lines_per_file.push(n);
    }
    Ok(out)
}

/// The pod directory of file `f`.
fn pod_dir(f: usize) -> String {
    format!("bench_pod-{f:03}_00000000-0000-0000-0000-{f:012}")
}

fn write_cri(w: &mut impl Write, ts: &str, tag: char, message: &[u8]) -> std::io::Result<u64> {
    write!(w, "{ts} stdout {tag} ")?;
    w.write_all(message)?;
    w.write_all(b"\n")?;
    Ok((ts.len() + 10 + message.len() + 1) as u64)
}

/// One millisecond per line from 00:00:00Z of the day the tree is written (a day holds 86.4 M
/// lines per file): recent enough for Loki's `reject_old_samples_max_age`, which the agent checks.
fn timestamp(n: u32) -> String {
    let (ms, s) = (n % 1000, n / 1000);
    format!("{}T{:02}:{:02}:{:02}.{:03}000000Z", today(), (s / 3600) % 24, (s / 60) % 60, s % 60, ms)
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> &'static str {
    static TODAY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::bench_node::load::cri_time(std::time::SystemTime::now())[..10].to_string());
    &TODAY
}

const FILLER: &[u8] = b"the quick brown fox jumps over the lazy dog while the order service retries the \
payment gateway with exponential backoff and the cache warms up for the checkout page again ";

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The message of line `n` of file `f` into `out`; `true` when it is written as `P` + `F`.
fn line_message(f: u32, n: u32, out: &mut Vec<u8>) -> bool {
    let r = mix((u64::from(f) << 32) | u64::from(n));
    let json = r & 1 == 0;
    let partial = (r >> 8).is_multiple_of(10);
    let target = 80 + ((r >> 16) % 321) as usize;
    let start = ((r >> 32) % 64) as usize;
    out.clear();
    if json {
        write!(out, "{{\"f\":{f},\"n\":{n},\"level\":\"info\",\"msg\":\"processed order\",\"pad\":\"").ok();
    } else {
        write!(out, "f={f} n={n} level=info msg=\"GET /api/v1/orders/{n} 200\" pad=\"").ok();
    }
    let tail = if json { 2 } else { 1 };
    let mut i = start;
    while out.len() + tail < target {
        out.push(FILLER[i % FILLER.len()]);
        i += 1;
    }
    out.extend_from_slice(if json { b"\"}" } else { b"\"" });
    partial
}

/// (file, line) from a message made by [`line_message`].
fn line_id(message: &[u8]) -> Option<(u32, u32)> {
    let rest = message.strip_prefix(b"{\"f\":").or_else(|| message.strip_prefix(b"f="))?;
    let (f, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(b",\"n\":").or_else(|| rest.strip_prefix(b" n="))?;
    let (n, _) = leading_number(rest)?;
    Some((f, n))
}

fn leading_number(s: &[u8]) -> Option<(u32, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
    Some((n, &s[digits..]))
}

// ---------------------------------------------------------------------------------------------
// The steady workload.

/// When each line was written (nanoseconds since `base`, plus one; 0: not yet), for the latency
/// from the write to the push that carries it.
struct WriteTimes {
    base: Instant,
    at: Vec<Vec<AtomicU64>>,
}

impl WriteTimes {
    fn new(lines_per_file: &[u32]) -> WriteTimes {
        WriteTimes {
            base: Instant::now(),
            at: lines_per_file.iter().map(|&n| (0..n).map(|_| AtomicU64::new(0)).collect()).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    fn record(&self, f: usize, n: u32) {
        self.at[f][n as usize].store(self.now(), Ordering::Release);
    }

    /// Nanoseconds from the write of line `n` of file `f` to `now`, if it was written.
    fn since(&self, f: u32, n: u32, now: u64) -> Option<u64> {
        let t = self.at.get(f as usize)?.get(n as usize)?.load(Ordering::Acquire);
        (t > 0).then(|| now.saturating_sub(t))
    }
}

/// The CRI bytes of line `n` of file `f` as [`generate_tree`] writes them.
fn line_bytes(f: u32, n: u32, message: &mut Vec<u8>) -> u64 {
    let partial = line_message(f, n, message);
    let ts = timestamp(n).len() as u64;
    let len = message.len() as u64;
    if partial {
        2 * (ts + 10 + 1) + len
    } else {
        ts + 10 + len + 1
    }
}

/// How many lines file `f` gets for `budget` bytes (the first line that reaches it included).
fn plan_lines(f: u32, budget: u64) -> u32 {
    let mut message = Vec::with_capacity(512);
    let (mut bytes, mut n) = (0u64, 0u32);
    while bytes < budget {
        bytes += line_bytes(f, n, &mut message);
        n += 1;
    }
    n
}

/// Appends `plan[f]` lines to each file at `rate_per_file` bytes per second: every 10 ms, the
/// lines due are written round-robin over the files, one `write` per CRI line (a runtime writes
/// each line, and each piece of a split one, by itself). Bytes written so far go to `written`.
fn write_steady(
    paths: &[PathBuf],
    plan: &[u32],
    rate_per_file: f64,
    times: &WriteTimes,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    use std::fs::OpenOptions;
    let mut out: Vec<std::fs::File> = paths
        .iter()
        .map(|p| OpenOptions::new().append(true).open(p).with_context(|| format!("opening {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let mut next = vec![0u32; plan.len()];
    let mut bytes = vec![0u64; plan.len()];
    let (mut message, mut buf) = (Vec::with_capacity(512), Vec::with_capacity(1024));
    let start = Instant::now();
    loop {
        let due = rate_per_file * start.elapsed().as_secs_f64();
        let mut left = false;
        loop {
            let mut wrote = false;
            for (f, file) in out.iter_mut().enumerate() {
                let n = next[f];
                if n >= plan[f] {
                    continue;
                }
                left = true;
                if bytes[f] as f64 >= due {
                    continue;
                }
                let partial = line_message(f as u32, n, &mut message);
                let ts = timestamp(n);
                let mut pieces: Vec<(char, &[u8])> = Vec::with_capacity(2);
                if partial {
                    let half = message.len() / 2;
                    pieces.push(('P', &message[..half]));
                    pieces.push(('F', &message[half..]));
                } else {
                    pieces.push(('F', &message[..]));
                }
                let last = pieces.len() - 1;
                for (i, (tag, piece)) in pieces.into_iter().enumerate() {
                    buf.clear();
                    let k = write_cri(&mut buf, &ts, tag, piece)?;
                    if i == last {
                        times.record(f, n);
                    }
                    file.write_all(&buf)?;
                    bytes[f] += k;
                    written.fetch_add(k, Ordering::Relaxed);
                }
                next[f] += 1;
                wrote = true;
            }
            if !wrote {
                break;
            }
        }
        if !left {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent follows `files` files appended at `steady_rate` (after `steady_warmup`, for
/// `steady_window`): its CPU and RSS from `/proc` over the window, the latency of every line.
async fn run_steady(agent_bin: &Path, work: &Path, opts: &LogsBenchOptions) -> anyhow::Result<SteadyFigures> {
    let files = opts.files;
    let root = work.join("steady");
    let total = opts.steady_warmup + opts.steady_window;
    let rate_per_file = opts.steady_rate as f64 / files as f64;
    let budget = (rate_per_file * total.as_secs_f64()) as u64;
    let plan: Vec<u32> = (0..files).map(|f| plan_lines(f as u32, budget)).collect();
    let mut paths = Vec::with_capacity(files);
    for f in 0..files {
        let dir = root.join(pod_dir(f)).join("app");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("0.log");
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        paths.push(path);
    }
    let times = Arc::new(WriteTimes::new(&plan));
    let receiver = Receiver::start_with(&plan, Some(times.clone())).await?;
    let mut agent =
        AgentRun::start(agent_bin, &work.join("steady-agent"), &root, &receiver.push_url(), opts.loki_queue_memory)
            .await?;
    let pid = agent.pid();
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::task::spawn_blocking({
        let (plan, times, written) = (plan.clone(), times.clone(), written.clone());
        move || write_steady(&paths, &plan, rate_per_file, &times, &written)
    });
    tokio::time::sleep(opts.steady_warmup).await;
    let (cpu0, bytes0, t0) = (Process::Pid(pid).cpu_seconds(), written.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(opts.steady_window).await;
    let usage = Process::Pid(pid).usage();
    let mut s = SteadyFigures {
        files,
        rate: opts.steady_rate,
        window_seconds: t0.elapsed().as_secs_f64(),
        window_bytes: written.load(Ordering::Relaxed) - bytes0,
        cpu_seconds: usage.cpu_seconds - cpu0,
        rss: usage.rss_bytes,
        lines_written: plan.iter().map(|&n| u64::from(n)).sum(),
        ..Default::default()
    };
    writer.await??;
    let done = receiver.wait_complete(s.lines_written, Duration::from_secs(60), &mut agent).await;
    // Anything sent twice arrives right after; give it a moment before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.peak_rss = Process::Pid(pid).peak_rss_bytes();
    agent.stop().await;
    s.check = receiver.counts();
    let mut lat = std::mem::take(&mut receiver.seen.lock().unwrap_or_else(|p| p.into_inner()).latencies);
    receiver.stop().await;
    if let Err(e) = done {
        eprintln!("steady: {e:#}");
    }
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(Duration::ZERO, |&ns| Duration::from_nanos(ns))
    };
    s.latency_p50 = pick(0.5);
    s.latency_p99 = pick(0.99);
    s.latency_max = lat.last().map_or(Duration::ZERO, |&ns| Duration::from_nanos(ns));
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// The receiving side.

/// What the receiver counted.
#[derive(Debug, Clone, Default)]
pub struct CheckCounts {
    pub entries: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// Entries that are not a generated line, or differ from it.
    pub corrupt: u64,
    pub streams: usize,
    /// The first few altered entries, as [`altered_sample`] shows them.
    pub altered_samples: Vec<String>,
}

/// How many altered entries [`CheckCounts::altered_samples`] keeps.
const ALTERED_SAMPLES: usize = 4;

/// An altered entry as the report shows it: where it first differs from what was written, with
/// some context from both.
fn altered_sample(got: &[u8], expected: Option<&[u8]>) -> String {
    let around = |b: &[u8], at: usize| {
        let (from, to) = (at.saturating_sub(30), (at + 30).min(b.len()));
        format!("{:?}", String::from_utf8_lossy(&b[from.min(to)..to]))
    };
    match expected {
        Some(e) => {
            let at = got.iter().zip(e).position(|(a, b)| a != b).unwrap_or(got.len().min(e.len()));
            format!(
                "{} bytes, written {}; first difference at byte {at}: got {} written {}",
                got.len(),
                e.len(),
                around(got, at),
                around(e, at)
            )
        }
        None => format!("{} bytes, names no generated line: {}", got.len(), around(got, 0)),
    }
}

struct Seen {
    bits: Vec<Vec<u64>>,
    lines_per_file: Vec<u32>,
    counts: CheckCounts,
    streams: HashSet<String>,
    /// Nanoseconds from the write to the push of each line that arrived (steady workload).
    latencies: Vec<u64>,
}

struct Receiver {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
    pushes: Arc<AtomicU64>,
    line_bytes: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Seen>>,
    write_times: Option<Arc<WriteTimes>>,
    pushes: Arc<AtomicU64>,
    line_bytes: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(lines_per_file: &[u32]) -> anyhow::Result<Receiver> {
        Receiver::start_with(lines_per_file, None).await
    }

    /// With `write_times`, the latency of each line's first arrival is kept.
    async fn start_with(lines_per_file: &[u32], write_times: Option<Arc<WriteTimes>>) -> anyhow::Result<Receiver> {
        let seen = Arc::new(Mutex::new(Seen {
            bits: lines_per_file.iter().map(|n| vec![0u64; (*n as usize).div_ceil(64)]).collect(),
            lines_per_file: lines_per_file.to_vec(),
            counts: CheckCounts::default(),
            streams: HashSet::new(),
            latencies: Vec::new(),
        }));
        let state = ReceiverState {
            seen: seen.clone(),
            write_times,
            pushes: Arc::new(AtomicU64::new(0)),
            line_bytes: Arc::new(AtomicU64::new(0)),
        };
        let (pushes, line_bytes) = (state.pushes.clone(), state.line_bytes.clone());
        let app = Router::new()
            .route("/loki/api/v1/push", post(push))
            .route("/otlp/v1/logs", post(otlp_logs))
            .layer(DefaultBodyLimit::disable())
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, task) = crate::serve_until_stopped(listener, app);
        Ok(Receiver { addr, seen, pushes, line_bytes, stop: Some(stop), task: Some(task) })
    }

    fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Loki's OTLP logs endpoint (where the Collector's `otlphttp` exporter sends).
    fn otlp_url(&self) -> String {
        format!("http://{}/otlp/v1/logs", self.addr)
    }

    fn counts(&self) -> CheckCounts {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        CheckCounts { streams: seen.streams.len(), ..seen.counts.clone() }
    }

    /// Waits until every line arrived; fails after `timeout`, or when the agent exits.
    async fn wait_complete(&self, lines: u64, timeout: Duration, agent: &mut AgentRun) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let c = self.counts();
            let got = c.unique;
            if got >= lines {
                return Ok(());
            }
            // Every line accounted for, some of them altered: waiting longer changes nothing.
            if got + c.corrupt >= lines && c.corrupt > 0 {
                bail!("{got} of {lines} lines delivered intact, {} altered", c.corrupt);
            }
            if let Some(status) = agent.exited() {
                bail!(
                    "the shipper exited ({status}) with {got} of {lines} lines delivered; log: {}",
                    agent.log.display()
                );
            }
            if start.elapsed() > timeout {
                bail!("{got} of {lines} lines delivered after {timeout:?}; shipper log: {}", agent.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

async fn push(State(state): State<ReceiverState>, body: Bytes) -> (StatusCode, &'static str) {
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, "snappy"),
    };
    let mut lines: Vec<(&[u8], &[u8])> = Vec::with_capacity(4096);
    if walk_push(&raw, |labels, line| lines.push((labels, line))).is_none() {
        return (StatusCode::BAD_REQUEST, "protobuf");
    }
    check_lines(&state, &lines);
    (StatusCode::NO_CONTENT, "")
}

/// Loki's OTLP logs endpoint: each record's string body is a line; its stream is the resource.
async fn otlp_logs(
    State(state): State<ReceiverState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    let ct = [("content-type", "application/x-protobuf")];
    let raw = match headers.get("content-encoding").and_then(|v| v.to_str().ok()) {
        Some("gzip") => {
            let mut out = Vec::new();
            if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).is_err() {
                return (StatusCode::BAD_REQUEST, ct);
            }
            out
        }
        _ => body.to_vec(),
    };
    let Ok(req) = ExportLogsServiceRequest::decode(raw.as_slice()) else { return (StatusCode::BAD_REQUEST, ct) };
    let mut lines: Vec<(&[u8], &[u8])> = Vec::new();
    for (i, r) in req.resource_logs.iter().enumerate() {
        let stream: &[u8] = if i == 0 { b"resource-0" } else { b"resource-n" };
        for record in r.scope_logs.iter().flat_map(|s| &s.log_records) {
            match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(line)) => lines.push((stream, line.as_bytes())),
                _ => lines.push((stream, b"")),
            }
        }
    }
    check_lines(&state, &lines);
    (StatusCode::OK, ct)
}

/// Checks each (stream labels, line) against the generated line it names, and counts it.
fn check_lines(state: &ReceiverState, lines: &[(&[u8], &[u8])]) {
    let now = state.write_times.as_ref().map_or(0, |t| t.now());
    let mut ids: Vec<(u32, u32)> = Vec::with_capacity(lines.len());
    let mut labels: Vec<&[u8]> = Vec::new();
    let (mut corrupt, mut line_bytes) = (0u64, 0u64);
    let mut samples = Vec::new();
    let mut expected = Vec::with_capacity(512);
    for &(stream_labels, line) in lines {
        if labels.last() != Some(&stream_labels) {
            labels.push(stream_labels);
        }
        line_bytes += line.len() as u64;
        match line_id(line) {
            Some((f, n)) => {
                line_message(f, n, &mut expected);
                if expected == line {
                    ids.push((f, n));
                } else {
                    corrupt += 1;
                    if samples.len() < ALTERED_SAMPLES {
                        samples.push(altered_sample(line, Some(&expected)));
                    }
                }
            }
            None => {
                corrupt += 1;
                if samples.len() < ALTERED_SAMPLES {
                    samples.push(altered_sample(line, None));
                }
            }
        }
    }
    state.pushes.fetch_add(1, Ordering::Relaxed);
    state.line_bytes.fetch_add(line_bytes, Ordering::Relaxed);
    let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
    for l in labels {
        let l = String::from_utf8_lossy(l);
        if !seen.streams.contains(l.as_ref()) {
            seen.streams.insert(l.into_owned());
        }
    }
    seen.counts.corrupt += corrupt;
    let room = ALTERED_SAMPLES.saturating_sub(seen.counts.altered_samples.len());
    seen.counts.altered_samples.extend(samples.into_iter().take(room));
    seen.counts.entries += ids.len() as u64 + corrupt;
    for (f, n) in ids {
        let known = seen.lines_per_file.get(f as usize).is_some_and(|max| n < *max);
        if !known {
            seen.counts.corrupt += 1;
            continue;
        }
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        let w = &mut seen.bits[f as usize][word];
        if *w & bit != 0 {
            seen.counts.duplicates += 1;
        } else {
            *w |= bit;
            seen.counts.unique += 1;
            if let Some(ns) = state.write_times.as_ref().and_then(|t| t.since(f, n, now)) {
                seen.latencies.push(ns);
            }
        }
    }
}

/// Calls `on_line(stream labels, line)` for every entry of a `logproto.PushRequest`, without
/// decoding into messages. `None` if the bytes are not a valid encoding.
fn walk_push<'a>(buf: &'a [u8], mut on_line: impl FnMut(&'a [u8], &'a [u8])) -> Option<()> {
    for (field, stream) in Fields(buf) {
        let stream = stream?;
        if field != 1 {
            continue;
        }
        let mut labels: &[u8] = b"";
        for (f, value) in Fields(stream) {
            let value = value?;
            match f {
                1 => labels = value,
                2 => {
                    for (ef, line) in Fields(value) {
                        let line = line?;
                        if ef == 2 {
                            on_line(labels, line);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Some(())
}

/// The length-delimited fields of a protobuf message (others are skipped); an item is `None`
/// when the encoding is broken, and iteration stops after it.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.0.is_empty() {
                return None;
            }
            let Some(key) = varint(&mut self.0) else {
                self.0 = &[];
                return Some((0, None));
            };
            let (field, wire) = ((key >> 3) as u32, key & 7);
            let skipped = match wire {
                0 => varint(&mut self.0).map(|_| None),
                1 => self.0.get(8..).map(|r| {
                    self.0 = r;
                    None
                }),
                2 => varint(&mut self.0).and_then(|len| {
                    let len = usize::try_from(len).ok()?;
                    let (value, rest) = (self.0.get(..len)?, self.0.get(len..)?);
                    self.0 = rest;
                    Some(Some(value))
                }),
                5 => self.0.get(4..).map(|r| {
                    self.0 = r;
                    None
                }),
                _ => None::<Option<&[u8]>>,
            };
            match skipped {
                Some(Some(value)) => return Some((field, Some(value))),
                Some(None) => continue,
                None => {
                    self.0 = &[];
                    return Some((field, None));
                }
            }
        }
    }
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The agent process.

struct AgentRun {
    child: Option<Child>,
    log: PathBuf,
    /// The agent's admin port (0 for the Collector).
    admin: u16,
}

impl AgentRun {
    async fn start(
        bin: &Path,
        dir: &Path,
        pods: &Path,
        loki_url: &str,
        queue_memory: Option<u64>,
    ) -> anyhow::Result<AgentRun> {
        std::fs::create_dir_all(dir)?;
        let admin = crate::free_port();
        let queue = queue_memory.map(|b| format!(", queue: {{ max_memory: {b} }}")).unwrap_or_default();
        let config = format!(
            "cluster: bench\ntenant: bench\nmode: daemonset\nnode_name: bench-node\ndata_dir: {data}\n\
             admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
             exporters:\n  mimir: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n  loki: {{ url: \"{loki_url}\"{queue} }}\n\
             logs:\n  path: {pods}\n  kubernetes: false\n\
             scrape: {{ kubelet: {{ enabled: false }}, host_metrics: {{ enabled: false }} }}\n\
             otlp: {{ enabled: false }}\n",
            data = dir.join("data").display(),
            pods = pods.display(),
        );
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut run = AgentRun { child: Some(child), log, admin };
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return Ok(run);
            }
            if let Some(status) = run.exited() {
                bail!("lgtm-agent exited ({status}) before ready; log: {}", run.log.display());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("lgtm-agent not ready after 30 s; log: {}", run.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Collector as a node agent would ship pod logs: `filelog` from the beginning with the
    /// `container` operator (CRI parsing, partial lines joined, metadata from the path), batch,
    /// `otlphttp` to Loki's OTLP endpoint; its own telemetry off.
    async fn start_collector(bin: &Path, dir: &Path, pods: &Path, otlp_logs_url: &str) -> anyhow::Result<AgentRun> {
        let config = format!(
            "receivers:\n  filelog:\n    include: [\"{pods}/*/*/*.log\"]\n    start_at: beginning\n    \
             include_file_path: true\n    include_file_name: false\n    operators:\n      - type: container\n\
             processors:\n  memory_limiter: {{ check_interval: 1s, limit_mib: 512 }}\n  batch: {{}}\n\
             exporters:\n  otlphttp/loki:\n    logs_endpoint: {otlp_logs_url}\n\
             service:\n  telemetry: {{ logs: {{ level: warn }}, metrics: {{ level: none }} }}\n  pipelines:\n    \
             logs: {{ receivers: [filelog], processors: [memory_limiter, batch], exporters: [otlphttp/loki] }}\n",
            pods = pods.display(),
        );
        let (child, log) = crate::peers::otelcol::spawn(bin, dir, &config)?;
        let mut run = AgentRun { child: Some(child), log, admin: 0 };
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(status) = run.exited() {
            bail!("the Collector exited ({status}) at start; log: {}", run.log.display());
        }
        Ok(run)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then SIGKILL after 20 s.
    /// The sum of the agent's self-metric `name` (every label set), 0 when it cannot be read.
    async fn metric_sum(&self, name: &str) -> f64 {
        if self.admin == 0 {
            return 0.0;
        }
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let Ok(text) = async { reqwest::get(&url).await?.text().await }.await else { return 0.0 };
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_lines_carry_their_id_and_regenerate_identically() {
        let mut buf = Vec::new();
        let mut again = Vec::new();
        let (mut json, mut partial) = (0, 0);
        for n in 0..2000 {
            let p = line_message(7, n, &mut buf);
            assert_eq!(line_id(&buf), Some((7, n)));
            assert!((80..=400).contains(&buf.len()), "{}", buf.len());
            assert_eq!(line_message(7, n, &mut again), p);
            assert_eq!(buf, again);
            json += usize::from(buf.starts_with(b"{"));
            partial += usize::from(p);
            if buf.starts_with(b"{") {
                serde_json::from_slice::<serde_json::Value>(&buf).expect("valid JSON");
            }
        }
        assert!((800..1200).contains(&json), "about half JSON: {json}");
        assert!((140..260).contains(&partial), "about one in ten partial: {partial}");
    }

    #[test]
    fn the_walker_reads_what_prost_encodes() {
        use lgtm_pipeline::proto::{EntryAdapter, PushRequest, StreamAdapter};
        use prost::Message;
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"1\"}".into(),
                entries: vec![
                    EntryAdapter { line: "one".into(), ..Default::default() },
                    EntryAdapter { line: "two".into(), ..Default::default() },
                ],
                hash: 42,
            }],
        };
        let bytes = req.encode_to_vec();
        let mut got = Vec::new();
        walk_push(&bytes, |l, line| got.push((l.to_vec(), line.to_vec()))).unwrap();
        assert_eq!(got, vec![(b"{a=\"1\"}".to_vec(), b"one".to_vec()), (b"{a=\"1\"}".to_vec(), b"two".to_vec())]);
        assert!(walk_push(&bytes[..bytes.len() - 1], |_, _| {}).is_none());
    }

    #[test]
    fn the_steady_plan_counts_the_bytes_the_tree_generator_writes() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_tree(dir.path(), 3, Budget::Bytes(300_000)).unwrap();
        for f in 0..3u32 {
            assert_eq!(plan_lines(f, 100_000), g.lines_per_file[f as usize]);
        }
        let mut m = Vec::new();
        let total: u64 = (0..3u32)
            .flat_map(|f| (0..g.lines_per_file[f as usize]).map(move |n| (f, n)))
            .map(|(f, n)| line_bytes(f, n, &mut m))
            .sum();
        assert_eq!(total, g.bytes);
    }

    #[test]
    fn steady_lines_arrive_checked_with_their_latency() {
        let dir = tempfile::tempdir().unwrap();
        let plan = [3u32, 2];
        let paths: Vec<PathBuf> = (0..2).map(|f| dir.path().join(format!("{f}.log"))).collect();
        for p in &paths {
            std::fs::File::create(p).unwrap();
        }
        let times = WriteTimes::new(&plan);
        let written = AtomicU64::new(0);
        write_steady(&paths, &plan, 1e9, &times, &written).unwrap();
        let on_disk: u64 = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert_eq!(written.load(Ordering::Relaxed), on_disk);
        let now = times.now();
        assert!(times.since(1, 1, now).is_some());
        assert!(times.since(1, 2, now).is_none(), "beyond the plan");
        assert_eq!("steady,idle".parse::<Workloads>().unwrap(), Workloads { idle: true, bulk: false, steady: true });
        assert!("fast".parse::<Workloads>().is_err());
    }

    #[test]
    fn a_small_tree_has_the_asked_size_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_tree(dir.path(), 4, Budget::Bytes(400_000)).unwrap();
        assert_eq!(g.lines_per_file.len(), 4);
        assert!(g.bytes >= 400_000 && g.bytes < 400_000 + 4 * 1000, "{}", g.bytes);
        let on_disk: u64 =
            (0..4).map(|f| std::fs::metadata(dir.path().join(pod_dir(f)).join("app/0.log")).unwrap().len()).sum();
        assert_eq!(on_disk, g.bytes);
        assert_eq!(timestamp(3_723_004), format!("{}T01:02:03.004000000Z", today()));
        assert_eq!(today().len(), 10);
    }
}
