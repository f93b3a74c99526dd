//! Host metrics: a node_exporter-compatible subset read from `<root>/proc` and `<root>/sys`.
//!
//! What it does: reads the same kernel files node_exporter reads and exposes them under
//! node_exporter's metric names, types, help texts and labels, so dashboards and alerts written
//! for node_exporter work unchanged. One file per node_exporter collector: [`cpu`] (and
//! `node_cpu_guest_seconds_total`), [`meminfo`], [`loadavg`], [`filesystem`], [`diskstats`],
//! [`netdev`], [`stat`] (boot time, context switches, forks, interrupts, processes), [`time`] and
//! [`uname`]. A collector that fails is reported as `node_scrape_collector_success{collector} 0`,
//! as node_exporter does; it never fails the whole collection.
//!
//! What it does not: scrape anything over HTTP, or ship anything. The agent scrapes
//! [`render_text`] in-process through the same scrape loop as any other target, so `up`,
//! relabeling and staleness behave as for a real node_exporter. Collection is synchronous file
//! I/O (and `statfs`): call it from a blocking thread, not from a runtime worker.
//!
//! Data comes in from `<root>/proc`, `<root>/sys`, `<root>/run/udev/data` and `statfs` on
//! `<root>/<mountpoint>` (`root` is `/` on a bare host and `/host` in the chart, where the host's
//! `/` is mounted); it goes out as Prometheus text exposition format 0.0.4.

pub(crate) mod cpu;
pub mod diskstats;
pub(crate) mod exposition;
pub mod filesystem;
mod fs;
pub(crate) mod loadavg;
pub(crate) mod meminfo;
pub(crate) mod netdev;
pub(crate) mod stat;
pub(crate) mod time;
pub(crate) mod uname;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

pub use exposition::{CollectorOutcome, Family, HostMetrics, MetricType, Sample};

use fs::HostFs;

/// Why reading the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host root {path} is not a readable directory: {reason}")]
    Root { path: PathBuf, reason: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// Runs every collector against the host mounted at `root` (`/` for this machine).
///
/// Never fails: a collector that cannot read its files is recorded as failed in
/// [`HostMetrics::collectors`] and rendered as `node_scrape_collector_success{collector} 0`.
pub fn collect(root: &Path) -> HostMetrics {
    collect_at(root, SystemTime::now())
}

fn collect_at(root: &Path, now: SystemTime) -> HostMetrics {
    let start = Instant::now();
    let mut fs = HostFs::new(root);
    let mut m = HostMetrics::default();
    // cpu and stat both read /proc/stat; read it once (it is the costliest file on large hosts).
    let mut proc_stat = None;
    m.run("cpu", |m| {
        let parsed = stat::read(&mut fs)?;
        cpu::collect(&parsed, m);
        proc_stat = Some(parsed);
        Ok(())
    });
    m.run("diskstats", |m| diskstats::collect(&mut fs, m));
    m.run("filesystem", |m| filesystem::collect(&mut fs, m));
    m.run("loadavg", |m| loadavg::collect(&mut fs, m));
    m.run("meminfo", |m| meminfo::collect(&mut fs, m));
    m.run("netdev", |m| netdev::collect(&mut fs, m));
    m.run("stat", |m| {
        let parsed = match proc_stat.take() {
            Some(parsed) => parsed,
            None => stat::read(&mut fs)?,
        };
        stat::collect(&parsed, m);
        Ok(())
    });
    m.run("time", |m| time::collect(&mut fs, m, now));
    m.run("uname", uname::collect);
    m.finish();
    collect_seconds().set(start.elapsed().as_secs_f64());
    m
}

/// Collects the host at `root` and writes the text exposition into `out`, which is cleared
/// first (pass the same buffer every scrape to reuse its allocation).
///
/// Fails only when `root` itself is not a readable directory, so that the scrape reports
/// `up 0` for a misconfigured root instead of a page of failed collectors.
pub fn render_text(root: &Path, out: &mut String) -> Result<(), HostError> {
    match std::fs::read_dir(root) {
        Ok(_) => {}
        Err(e) => return Err(HostError::Root { path: root.to_path_buf(), reason: e.to_string() }),
    }
    out.clear();
    collect(root).render(out);
    Ok(())
}

/// `lgtm_agent_host_collect_seconds`: wall time of the last host metrics collection.
fn collect_seconds() -> &'static prometheus::Gauge {
    static GAUGE: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
        lgtm_pipeline::metrics::gauge_vec(
            "lgtm_agent_host_collect_seconds",
            "Duration of the last host metrics collection, in seconds.",
            &[],
        )
        .with_label_values::<&str>(&[])
    });
    &GAUGE
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_root_is_an_error_not_a_panic() {
        let mut out = String::from("stale");
        let err = render_text(Path::new("/nonexistent/host/root"), &mut out).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/host/root"), "{err}");
    }

    #[test]
    fn empty_root_reports_every_file_collector_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = String::new();
        render_text(dir.path(), &mut out).unwrap();
        for c in ["cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "stat"] {
            let line = format!("node_scrape_collector_success{{collector=\"{c}\"}} 0\n");
            assert!(out.contains(&line), "{c}: {out}");
        }
        for c in ["time", "uname"] {
            let line = format!("node_scrape_collector_success{{collector=\"{c}\"}} 1\n");
            assert!(out.contains(&line), "{c}: {out}");
        }
        assert!(out.contains("node_time_seconds "));
    }

    #[test]
    fn full_fixture_renders_every_collector() {
        let root = testing::full_root();
        let m = collect(root.path());
        for c in m.collectors() {
            assert!(c.error.is_none(), "{}: {:?}", c.name, c.error);
        }
        let mut out = String::new();
        m.render(&mut out);
        // Families are grouped and sorted: each name's HELP appears once, in order.
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .map(|l| l.split(' ').next().unwrap())
            .filter(|n| !n.starts_with("node_scrape_collector_"))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(out.contains("node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 20\n"));
        assert!(out.contains("node_memory_MemTotal_bytes 16777216\n"));
    }
}
