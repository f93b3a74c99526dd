//! node_exporter's `cpu` collector: `node_cpu_seconds_total{cpu,mode}` and
//! `node_cpu_guest_seconds_total{cpu,mode}` from the per-CPU lines of `/proc/stat`.

use super::exposition::{HostMetrics, MetricType};
use super::stat::ProcStat;

/// `/proc/stat` counts in USER_HZ, which is 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// Modes of `node_cpu_seconds_total`, by `/proc/stat` column. Guest time is already included in
/// `user` and `nice` by the kernel, so it is exposed in its own family, as node_exporter does.
const MODES: [(&str, usize); 8] =
    [("user", 0), ("nice", 1), ("system", 2), ("idle", 3), ("iowait", 4), ("irq", 5), ("softirq", 6), ("steal", 7)];
const GUEST_MODES: [(&str, usize); 2] = [("user", 8), ("nice", 9)];

pub(crate) fn collect(stat: &ProcStat, out: &mut HostMetrics) {
    let seconds = out.family("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", MetricType::Counter);
    let guest = out.family(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
        MetricType::Counter,
    );
    for (n, ticks) in &stat.cpus {
        let cpu = n.to_string();
        for (family, modes) in [(seconds, &MODES[..]), (guest, &GUEST_MODES[..])] {
            for &(mode, column) in modes {
                out.push(
                    family,
                    vec![("cpu", cpu.clone()), ("mode", mode.to_string())],
                    ticks[column] as f64 / USER_HZ,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    #[test]
    fn cpu_seconds_per_cpu_and_mode_in_user_hz() {
        let root = FakeRoot::new().file(
            "proc/stat",
            "cpu  300 2 100 5000 7 0 3 1 50 0\n\
             cpu0 23512 0 6031 68253 188 0 17 10 40 0\n\
             cpu1 1 2 3 4 5 6 7 8 9 10\n",
        );
        let text = render_one(&root, |fs, m| {
            collect(&super::super::stat::read(fs)?, m);
            Ok(())
        });
        assert_eq!(
            text,
            "# HELP node_cpu_guest_seconds_total Seconds the CPUs spent in guests (VMs) for each mode.\n\
             # TYPE node_cpu_guest_seconds_total counter\n\
             node_cpu_guest_seconds_total{cpu=\"0\",mode=\"user\"} 0.4\n\
             node_cpu_guest_seconds_total{cpu=\"0\",mode=\"nice\"} 0\n\
             node_cpu_guest_seconds_total{cpu=\"1\",mode=\"user\"} 0.09\n\
             node_cpu_guest_seconds_total{cpu=\"1\",mode=\"nice\"} 0.1\n\
             # HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n\
             # TYPE node_cpu_seconds_total counter\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 235.12\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"nice\"} 0\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"system\"} 60.31\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 682.53\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"iowait\"} 1.88\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"irq\"} 0\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"softirq\"} 0.17\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"steal\"} 0.1\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"user\"} 0.01\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"nice\"} 0.02\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"system\"} 0.03\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"idle\"} 0.04\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"iowait\"} 0.05\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"irq\"} 0.06\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"softirq\"} 0.07\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"steal\"} 0.08\n"
        );
    }
}
