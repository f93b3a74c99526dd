//! `/proc/stat`: node_exporter's `stat` collector (boot time, context switches, forks, interrupts,
//! runnable and blocked processes). The per-CPU lines are parsed here too and rendered by
//! [`super::cpu`], so the file is read once per collection.

use super::exposition::{HostMetrics, MetricType};
use super::fs::{parse_u64, HostFs};
use super::HostError;

/// Ticks per CPU line, in `/proc/stat` order: user nice system idle iowait irq softirq steal guest
/// guest_nice. Older kernels print fewer columns; the missing ones stay 0.
pub const CPU_COLUMNS: usize = 10;

/// The parsed `/proc/stat`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcStat {
    /// `(n, ticks)` for each `cpuN` line (the aggregate `cpu` line is skipped, as node_exporter does).
    pub cpus: Vec<(u32, [u64; CPU_COLUMNS])>,
    pub intr: u64,
    pub ctxt: u64,
    pub btime: u64,
    pub processes: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

pub(crate) fn read(fs: &mut HostFs) -> Result<ProcStat, HostError> {
    let path = fs.proc("stat");
    let text = fs.read(&path)?;
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(n) = key.strip_prefix("cpu") {
            if n.is_empty() {
                continue;
            }
            let n: u32 = parse_u64(n, &path, "cpu number")?.try_into().unwrap_or(u32::MAX);
            let mut ticks = [0u64; CPU_COLUMNS];
            for (slot, field) in ticks.iter_mut().zip(fields) {
                *slot = parse_u64(field, &path, key)?;
            }
            stat.cpus.push((n, ticks));
            continue;
        }
        let slot = match key {
            "intr" => &mut stat.intr,
            "ctxt" => &mut stat.ctxt,
            "btime" => &mut stat.btime,
            "processes" => &mut stat.processes,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        if let Some(first) = fields.next() {
            *slot = parse_u64(first, &path, key)?;
        }
    }
    Ok(stat)
}

pub(crate) fn collect(stat: &ProcStat, out: &mut HostMetrics) {
    use MetricType::{Counter, Gauge};
    let f = |v: u64| v as f64;
    out.single("node_boot_time_seconds", "Node boot time, in unixtime.", Gauge, f(stat.btime));
    out.single("node_context_switches_total", "Total number of context switches.", Counter, f(stat.ctxt));
    out.single("node_forks_total", "Total number of forks.", Counter, f(stat.processes));
    out.single("node_intr_total", "Total number of interrupts serviced.", Counter, f(stat.intr));
    out.single(
        "node_procs_blocked",
        "Number of processes blocked waiting for I/O to complete.",
        Gauge,
        f(stat.procs_blocked),
    );
    out.single("node_procs_running", "Number of processes in runnable state.", Gauge, f(stat.procs_running));
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    #[test]
    fn stat_collector_exposes_node_exporter_families() {
        let root = FakeRoot::new().file(
            "proc/stat",
            "cpu  10 0 5 40 0 0 0 0 0 0\ncpu0 10 0 5 40 0 0 0 0 0 0\n\
             intr 1234 5 6 7\nctxt 999\nbtime 1700000000\nprocesses 4321\n\
             procs_running 3\nprocs_blocked 1\nsoftirq 10 1 2\n",
        );
        let text = render_one(&root, |fs, m| {
            let s = read(fs)?;
            collect(&s, m);
            Ok(())
        });
        assert_eq!(
            text,
            "# HELP node_boot_time_seconds Node boot time, in unixtime.\n\
             # TYPE node_boot_time_seconds gauge\n\
             node_boot_time_seconds 1700000000\n\
             # HELP node_context_switches_total Total number of context switches.\n\
             # TYPE node_context_switches_total counter\n\
             node_context_switches_total 999\n\
             # HELP node_forks_total Total number of forks.\n\
             # TYPE node_forks_total counter\n\
             node_forks_total 4321\n\
             # HELP node_intr_total Total number of interrupts serviced.\n\
             # TYPE node_intr_total counter\n\
             node_intr_total 1234\n\
             # HELP node_procs_blocked Number of processes blocked waiting for I/O to complete.\n\
             # TYPE node_procs_blocked gauge\n\
             node_procs_blocked 1\n\
             # HELP node_procs_running Number of processes in runnable state.\n\
             # TYPE node_procs_running gauge\n\
             node_procs_running 3\n"
        );
    }

    #[test]
    fn short_cpu_lines_of_old_kernels_leave_missing_columns_zero() {
        let root = FakeRoot::new().file("proc/stat", "cpu0 1 2 3 4\n");
        let mut fs = HostFs::new(root.path());
        let s = read(&mut fs).unwrap();
        assert_eq!(s.cpus, vec![(0, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0])]);
    }

    #[test]
    fn garbage_number_is_a_parse_error_naming_the_file() {
        let root = FakeRoot::new().file("proc/stat", "ctxt lots\n");
        let mut fs = HostFs::new(root.path());
        let err = read(&mut fs).unwrap_err().to_string();
        assert!(err.contains("proc/stat") && err.contains("ctxt"), "{err}");
    }
}
