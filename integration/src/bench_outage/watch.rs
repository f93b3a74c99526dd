//! What the bench watches on the agent while it runs, per phase: its RSS (every 250 ms), its
//! queues' bytes in memory and on disk and the tailer's lag (its `/metrics`, every second), and
//! the bytes of the queue segment files under `data_dir/queue` (every 500 ms).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::agent::metric_sum;
use crate::procstat::Process;

/// The phases of the bench, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    WarmUp = 0,
    Outage = 1,
    Recovery = 2,
    /// Writer and targets stopped; what is left drains.
    Final = 3,
}

pub const PHASES: [Phase; 4] = [Phase::WarmUp, Phase::Outage, Phase::Recovery, Phase::Final];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::Outage => "outage",
            Phase::Recovery => "recovery",
            Phase::Final => "final drain",
        }
    }
}

/// Maxima seen in one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub rss: u64,
    pub loki_memory: u64,
    pub mimir_memory: u64,
    /// `lgtm_agent_queue_bytes{exporter="mimir",medium="disk"}`.
    pub mimir_disk_gauge: u64,
    /// Bytes of the files under `data_dir/queue/mimir`.
    pub mimir_disk_files: u64,
    /// Bytes of the files under `data_dir/queue/loki` (memory only by design: expected 0).
    pub loki_disk_files: u64,
    /// `lgtm_agent_logs_lag_bytes`: written to the files, not yet read.
    pub logs_lag: u64,
}

impl Peaks {
    fn max(&mut self, o: &Peaks) {
        self.rss = self.rss.max(o.rss);
        self.loki_memory = self.loki_memory.max(o.loki_memory);
        self.mimir_memory = self.mimir_memory.max(o.mimir_memory);
        self.mimir_disk_gauge = self.mimir_disk_gauge.max(o.mimir_disk_gauge);
        self.mimir_disk_files = self.mimir_disk_files.max(o.mimir_disk_files);
        self.loki_disk_files = self.loki_disk_files.max(o.loki_disk_files);
        self.logs_lag = self.logs_lag.max(o.logs_lag);
    }

    /// The maxima over several phases.
    pub fn over(all: &[Peaks]) -> Peaks {
        let mut p = Peaks::default();
        for q in all {
            p.max(q);
        }
        p
    }
}

pub struct Watch {
    pid: u32,
    phase: Arc<AtomicUsize>,
    peaks: Arc<Mutex<[Peaks; 4]>>,
    /// The agent's CPU seconds and the time at the start of each phase entered.
    starts: Mutex<Vec<(f64, Instant)>>,
    task: JoinHandle<()>,
}

/// The agent's CPU use in one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseCpu {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

impl Watch {
    pub fn start(pid: u32, admin: u16, data_dir: &Path) -> Watch {
        let phase = Arc::new(AtomicUsize::new(Phase::WarmUp as usize));
        let peaks = Arc::new(Mutex::new([Peaks::default(); 4]));
        let task = tokio::spawn(watch(pid, admin, data_dir.join("queue"), phase.clone(), peaks.clone()));
        let starts = Mutex::new(vec![(Process::Pid(pid).cpu_seconds(), Instant::now())]);
        Watch { pid, phase, peaks, starts, task }
    }

    /// Enters the next phase.
    pub fn enter(&self, p: Phase) {
        self.phase.store(p as usize, Ordering::Release);
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Process::Pid(self.pid).cpu_seconds(), Instant::now()));
    }

    /// The agent's CPU seconds per phase so far, the current one up to now.
    pub fn cpu(&self) -> Vec<PhaseCpu> {
        let mut marks = self.starts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        marks.push((Process::Pid(self.pid).cpu_seconds(), Instant::now()));
        marks
            .windows(2)
            .map(|w| PhaseCpu { cpu_seconds: w[1].0 - w[0].0, wall_seconds: (w[1].1 - w[0].1).as_secs_f64() })
            .collect()
    }

    /// Maxima of each phase so far, in the order of [`PHASES`].
    pub fn peaks(&self) -> [Peaks; 4] {
        *self.peaks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(pid: u32, admin: u16, queue_dir: PathBuf, phase: Arc<AtomicUsize>, peaks: Arc<Mutex<[Peaks; 4]>>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        let mut now = Peaks { rss: Process::Pid(pid).rss_bytes(), ..Peaks::default() };
        if n % 2 == 0 {
            let dir = queue_dir.clone();
            let sizes =
                tokio::task::spawn_blocking(move || (dir_bytes(&dir.join("mimir")), dir_bytes(&dir.join("loki"))));
            (now.mimir_disk_files, now.loki_disk_files) = sizes.await.unwrap_or_default();
        }
        if n % 4 == 0 {
            if let Ok(text) = async { client.get(&url).send().await?.text().await }.await {
                let gauge = |exporter: &str, medium: &str| {
                    let (e, m) = (format!("exporter=\"{exporter}\""), format!("medium=\"{medium}\""));
                    metric_sum(&text, "lgtm_agent_queue_bytes", &[&e, &m]) as u64
                };
                now.loki_memory = gauge("loki", "memory");
                now.mimir_memory = gauge("mimir", "memory");
                now.mimir_disk_gauge = gauge("mimir", "disk");
                now.logs_lag = metric_sum(&text, "lgtm_agent_logs_lag_bytes", &[]) as u64;
            }
        }
        let p = phase.load(Ordering::Acquire).min(3);
        peaks.lock().unwrap_or_else(|p| p.into_inner())[p].max(&now);
    }
}

/// Bytes of the regular files under `dir`, recursively; 0 if it does not exist.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
