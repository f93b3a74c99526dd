//! Fake host roots for the collectors' unit tests.

use std::path::Path;

use super::exposition::HostMetrics;
use super::fs::HostFs;
use super::HostError;

/// A temporary directory laid out like a host's `/`.
pub(crate) struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    pub(crate) fn new() -> Self {
        FakeRoot { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub(crate) fn file(self, rel: &str, content: &str) -> Self {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write fixture");
        self
    }

    pub(crate) fn dir(self, rel: &str) -> Self {
        std::fs::create_dir_all(self.dir.path().join(rel)).expect("mkdir");
        self
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs one collector on `root` and renders only its families.
pub(crate) fn render_one(
    root: &FakeRoot,
    collector: impl FnOnce(&mut HostFs, &mut HostMetrics) -> Result<(), HostError>,
) -> String {
    let mut fs = HostFs::new(root.path());
    let mut m = HostMetrics::default();
    collector(&mut fs, &mut m).expect("collector succeeds on its fixture");
    m.finish();
    let mut out = String::new();
    m.render(&mut out);
    out
}

/// A root with every file every collector reads.
pub(crate) fn full_root() -> FakeRoot {
    FakeRoot::new()
        .file(
            "proc/stat",
            "cpu  20 0 10 40 0 0 0 0 0 0\ncpu0 10 0 5 20 0 0 0 0 0 0\n\
             cpu1 10 0 5 2000 0 0 0 0 0 0\nintr 1 0\nctxt 2\nbtime 3\nprocesses 4\n\
             procs_running 5\nprocs_blocked 6\n",
        )
        .file("proc/meminfo", "MemTotal:       16384 kB\nHugePages_Total:       0\n")
        .file("proc/loadavg", "0.50 0.25 0.10 1/100 4242\n")
        .file(
            "proc/diskstats",
            "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
        )
        .file(
            "proc/net/dev",
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n  \
             eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
        )
        .file("proc/1/mounts", "rootfs / rootfs rw 0 0\n")
        .dir("sys/devices/system/clocksource")
}
