//! CPU time and memory of a process, read from Linux `/proc`: the figures the bench command
//! reports and the memory bounds the bad-input tests assert.
//!
//! A process that is gone (or a field that is missing) reads as zero rather than failing: the
//! callers sample a process that may have just exited and only ever print or compare the figures.

/// Clock ticks per second of `utime` and `stime` (`USER_HZ`, 100 on every Linux we run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process whose figures are read: this very process or another one by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    This,
    /// The calling thread alone (`/proc/thread-self`).
    Thread,
    Pid(u32),
}

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// `utime + stime`.
    pub cpu_seconds: f64,
    /// `VmRSS`.
    pub rss_bytes: u64,
    /// `VmHWM`: the peak RSS since the process started.
    pub peak_rss_bytes: u64,
}

impl Process {
    fn read(self, file: &str) -> String {
        let path = match self {
            Process::This => format!("/proc/self/{file}"),
            Process::Thread => format!("/proc/thread-self/{file}"),
            Process::Pid(pid) => format!("/proc/{pid}/{file}"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// User plus system CPU seconds so far.
    pub fn cpu_seconds(self) -> f64 {
        let stat = self.read("stat");
        stat_seconds(&stat, STAT_UTIME) + stat_seconds(&stat, STAT_STIME)
    }

    /// User CPU seconds so far.
    pub fn user_seconds(self) -> f64 {
        stat_seconds(&self.read("stat"), STAT_UTIME)
    }

    /// Resident set size (`VmRSS`) in bytes.
    pub fn rss_bytes(self) -> u64 {
        status_bytes(&self.read("status"), "VmRSS")
    }

    /// Peak resident set size (`VmHWM`) in bytes.
    pub fn peak_rss_bytes(self) -> u64 {
        status_bytes(&self.read("status"), "VmHWM")
    }

    /// Any size field of `/proc/<pid>/status` (`RssAnon`, `RssFile`, ...) in bytes.
    pub fn status_bytes(self, field: &str) -> u64 {
        status_bytes(&self.read("status"), field)
    }

    /// CPU seconds, RSS and peak RSS, each file read once.
    pub fn usage(self) -> Usage {
        let stat = self.read("stat");
        let status = self.read("status");
        Usage {
            cpu_seconds: stat_seconds(&stat, STAT_UTIME) + stat_seconds(&stat, STAT_STIME),
            rss_bytes: status_bytes(&status, "VmRSS"),
            peak_rss_bytes: status_bytes(&status, "VmHWM"),
        }
    }
}

// `utime` and `stime` are fields 14 and 15 of `/proc/<pid>/stat`; counted after the command name,
// which is in parentheses and may hold spaces, they are the 12th and 13th.
const STAT_UTIME: usize = 11;
const STAT_STIME: usize = 12;

fn stat_seconds(stat: &str, index_after_command: usize) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks = rest.split_whitespace().nth(index_after_command).and_then(|v| v.parse::<f64>().ok());
    ticks.unwrap_or(0.0) / TICKS_PER_SECOND
}

/// `field` (without the colon) of a `/proc/<pid>/status` text, given there in kB, in bytes.
fn status_bytes(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1000 0 0";
        assert_eq!(stat_seconds(stat, STAT_UTIME), 2.5);
        assert_eq!(stat_seconds(stat, STAT_STIME), 0.75);
        assert_eq!(stat_seconds("", STAT_UTIME), 0.0);
    }

    #[test]
    fn status_sizes_are_bytes_and_a_field_is_not_matched_by_its_prefix() {
        let status = "Name:\tx\nVmHWMX:\t1 kB\nVmHWM:\t   2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(status_bytes(status, "VmHWM"), 2048 * 1024);
        assert_eq!(status_bytes(status, "VmRSS"), 1024 * 1024);
        assert_eq!(status_bytes(status, "RssAnon"), 0);
    }

    #[test]
    fn this_process_uses_memory() {
        let usage = Process::This.usage();
        assert!(usage.rss_bytes > 0 && usage.peak_rss_bytes >= usage.rss_bytes, "{usage:?}");
        assert!(Process::Pid(std::process::id()).status_bytes("VmHWM") > 0);
    }
}
