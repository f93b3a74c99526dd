//! CPU time of one full host metrics collection, rendered to text, of this machine (`/`) and of
//! a fake root shaped like a busy Kubernetes node: the target is under 5 ms per scrape.
//!
//! Besides criterion's wall-clock timing, a fixed loop measures the thread's own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) and fails the bench if a collection costs 5 ms or more.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

const BUDGET: Duration = Duration::from_millis(5);

fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime writes into the timespec we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn host_collect(c: &mut Criterion) {
    let root = Path::new("/");
    let mut out = String::new();

    let rounds = 200u32;
    lgtm_daemonset::host::render_text(root, &mut out).expect("collect /");
    let start = thread_cpu_time();
    for _ in 0..rounds {
        lgtm_daemonset::host::render_text(root, &mut out).expect("collect /");
        black_box(&out);
    }
    let per_collection = (thread_cpu_time() - start) / rounds;
    let series = out.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "host metrics: {:.3} ms CPU per collection ({series} series, {} bytes of text; budget {} ms)",
        per_collection.as_secs_f64() * 1e3,
        out.len(),
        BUDGET.as_millis()
    );
    assert!(
        per_collection < BUDGET,
        "a host metrics collection costs {per_collection:?} of CPU, over the {BUDGET:?} budget"
    );

    c.bench_function("host_render_text_root", |b| {
        b.iter(|| {
            lgtm_daemonset::host::render_text(root, &mut out).expect("collect /");
            black_box(out.len())
        })
    });
}

/// A fake root shaped like a busy Kubernetes node: 128 CPUs, 300 mounts (kubelet's per-pod
/// tmpfs volumes), 150 network devices (veths) and 24 disks.
fn large_node() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    let mut stat = String::from("cpu  1 2 3 4 5 6 7 8 9 10\n");
    for n in 0..128 {
        stat.push_str(&format!("cpu{n} 123456 789 34567 9876543 1234 0 567 89 0 0\n"));
    }
    stat.push_str(&format!("intr 123456789{}\n", " 0".repeat(2000)));
    stat.push_str("ctxt 987654321\nbtime 1700000000\nprocesses 123456\nprocs_running 3\nprocs_blocked 0\n");
    write("proc/stat", &stat);
    write("proc/meminfo", &std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    write("proc/loadavg", "1.00 2.00 3.00 4/500 12345\n");
    let mut mounts = String::from("/dev/nvme0n1p1 / ext4 rw 0 0\n");
    for n in 0..300 {
        let mp = format!("/var/lib/kubelet/pods/{n:08}/volumes/kubernetes.io~projected/token");
        std::fs::create_dir_all(dir.path().join(&mp[1..])).expect("mkdir");
        mounts.push_str(&format!("tmpfs {mp} tmpfs rw,relatime 0 0\n"));
    }
    write("proc/1/mounts", &mounts);
    let mut disks = String::new();
    for n in 0..24 {
        disks.push_str(&format!("259 {n} nvme{n}n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n"));
        disks.push_str(&format!("259 {} nvme{n}n1p1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n", n + 100));
    }
    write("proc/diskstats", &disks);
    let mut net = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    for n in 0..150 {
        net.push_str(&format!("veth{n:04}: 123456789 12345 0 0 0 0 0 0 987654321 54321 0 0 0 0 0 0\n"));
        write(&format!("sys/class/net/veth{n:04}/statistics/rx_nohandler"), "0\n");
    }
    write("proc/net/dev", &net);
    dir
}

fn large_node_collect(c: &mut Criterion) {
    let root = large_node();
    let mut out = String::new();
    lgtm_daemonset::host::render_text(root.path(), &mut out).expect("collect fixture");
    let rounds = 50u32;
    let start = thread_cpu_time();
    for _ in 0..rounds {
        lgtm_daemonset::host::render_text(root.path(), &mut out).expect("collect fixture");
        black_box(&out);
    }
    let per_collection = (thread_cpu_time() - start) / rounds;
    let series = out.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "host metrics, large node fixture: {:.3} ms CPU per collection ({series} series, {} bytes)",
        per_collection.as_secs_f64() * 1e3,
        out.len()
    );
    assert!(per_collection < BUDGET, "large node: {per_collection:?} over {BUDGET:?}");
    c.bench_function("host_render_text_large_node", |b| {
        b.iter(|| {
            lgtm_daemonset::host::render_text(root.path(), &mut out).expect("collect fixture");
            black_box(out.len())
        })
    });
}

criterion_group!(benches, host_collect, large_node_collect);
criterion_main!(benches);
