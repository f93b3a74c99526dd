//! Files written to all the time: how often the tailer reads them, counted by the kernel (the
//! read syscalls of the `logs-tailer` thread, `/proc/self/task/<tid>/io`), and how soon what it
//! read goes out. A test binary of its own, so that its tailer is the only thread of that name
//! in the process (the tests run one after another).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// One test at a time: [`tailer_reads`] counts the reads of the process's only tailer thread.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The read syscalls (`syscr`) of this process's `logs-tailer` thread so far.
fn tailer_reads() -> u64 {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "logs-tailer" {
            continue;
        }
        assert!(found.is_none(), "one logs-tailer thread in this process");
        let io = std::fs::read_to_string(task.path().join("io")).unwrap();
        found = io.lines().find_map(|l| l.strip_prefix("syscr:")).map(|v| v.trim().parse::<u64>().unwrap());
    }
    found.expect("a logs-tailer thread")
}

/// Ten files written every 10 ms each (their directories' write events muted) are read every
/// `hot_interval` (twice `batch_max_wait`: 200 ms here) rather than every 50 ms, and not again by
/// the once-a-second pass over every file: a read costs a
/// syscall and page-cache lookups whatever it brings, and at 5 MiB/s over 100 files those were a
/// fifth of the agent's CPU. Every line still arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_files_are_read_a_few_times_a_second_not_at_every_wake_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    const FILES: usize = 10;
    const WINDOW: Duration = Duration::from_secs(3);
    let mut env = Env::new();
    // The agent's defaults (a test's shorter waits would read more often).
    env.tuning.batch_max_wait = Duration::from_millis(100);
    env.tuning.poll_interval = Duration::from_secs(1);
    env.cfg.rescan_interval = lgtm_config::Duration::from_millis(3_600_000);
    let dirs: Vec<_> = (0..FILES).map(|i| env.container_dir("ns", &format!("busy{i}"), "c")).collect();
    let mut files: Vec<std::fs::File> = dirs
        .iter()
        .map(|d| std::fs::OpenOptions::new().create(true).append(true).open(d.join("0.log")).unwrap())
        .collect();
    let run = env.start();
    let mut next = 0u64;
    let mut write_round = |files: &mut Vec<std::fs::File>| {
        for (k, f) in files.iter_mut().enumerate() {
            f.write_all(cri(next, &format!("f{k}-{next}")).as_bytes()).unwrap();
        }
        next += 1;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs.iter().any(|d| watch_mask(d).is_none_or(|m| m & IN_MODIFY != 0)) {
        assert!(Instant::now() < deadline, "the busy directories' write events were not muted");
        write_round(&mut files);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = tailer_reads();
    let started = Instant::now();
    while started.elapsed() < WINDOW {
        write_round(&mut files);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads = tailer_reads() - before;
    let elapsed = started.elapsed();
    let total = next as usize * FILES;
    eventually(10, "every line", || env.sink.count() >= total).await;
    run.stop().await;
    // One read per file every 200 ms: 5 a second (the once-a-second pass over every file leaves
    // them out: 6 a second when it did not). Every 50 ms, as before, made 21 a second.
    let per_file_per_second = reads as f64 / FILES as f64 / elapsed.as_secs_f64();
    assert!(
        per_file_per_second <= 5.8,
        "{reads} reads of {FILES} busy files in {elapsed:?}: {per_file_per_second:.1} per file and second"
    );
    let got = env.sink.lines();
    assert_eq!(got.len(), total, "none lost or twice");
    for k in 0..FILES {
        let mine: Vec<&String> = got.iter().filter(|l| l.starts_with(&format!("f{k}-"))).collect();
        let want: Vec<String> = (0..next).map(|i| format!("f{k}-{i}")).collect();
        assert!(mine.iter().copied().eq(want.iter()), "file {k}: in order");
    }
}

/// What a pass over a busy file reads goes out when the pass ends, not `batch_max_wait` after
/// it: nothing more comes from the file before the next pass, so waiting would only add to the
/// lines' latency. Here `batch_max_wait` is 500 ms and the busy file is read every 800 ms
/// (`poll_interval`): holding a pass's lines for `batch_max_wait` kept every one at least 500 ms
/// (900 ms at the median); sent at once, half of them go within 400 ms or so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_pass_over_busy_files_reads_goes_out_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut env = Env::new();
    env.tuning.batch_max_wait = Duration::from_millis(500);
    env.tuning.poll_interval = Duration::from_millis(800);
    env.cfg.rescan_interval = lgtm_config::Duration::from_millis(3_600_000);
    let dir = env.container_dir("ns", "busy", "c");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    let run = env.start();
    let mut written: Vec<Instant> = Vec::new();
    let write = |file: &mut std::fs::File, written: &mut Vec<Instant>| {
        let i = written.len() as u64;
        file.write_all(cri(i, &format!("l-{i}")).as_bytes()).unwrap();
        written.push(Instant::now());
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch_mask(&dir).is_none_or(|m| m & IN_MODIFY != 0) {
        assert!(Instant::now() < deadline, "the busy directory's write events were not muted");
        write(&mut file, &mut written);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let first_muted = written.len();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        write(&mut file, &mut written);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let total = written.len();
    eventually(10, "every line", || env.sink.count() >= total).await;
    run.stop().await;
    let got = env.sink.lines_with_arrival();
    assert_eq!(got.len(), total, "none lost or twice");
    let mut latencies: Vec<Duration> = got
        .iter()
        .enumerate()
        .map(|(i, (line, at))| {
            assert_eq!(line, &format!("l-{i}"), "in order");
            at.saturating_duration_since(written[i])
        })
        .skip(first_muted)
        .collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(650),
        "median write -> sink {median:?} over {} lines (max {:?})",
        latencies.len(),
        latencies.last().unwrap()
    );
}
