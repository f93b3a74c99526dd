//! The real tailer on a temporary log root, delivering to a recording sink.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn expected(prefix: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_counted_exactly_and_labelled_from_the_path() {
    let env = Env::new();
    let a = env.container_dir("shop", "cart-1", "app").join("0.log");
    let b = env.container_dir("shop", "cart-1", "sidecar").join("0.log");
    write_lines(&a, "a", 0..700);
    write_lines(&b, "b", 0..300);
    let run = env.start();
    eventually(10, "1000 lines", || env.sink.count() >= 1000).await;
    write_lines(&a, "a", 700..1200);
    eventually(10, "1500 lines", || env.sink.count() >= 1500).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;

    let got = env.sink.got();
    assert_eq!(got.len(), 1500);
    let a_lines: Vec<String> =
        got.iter().filter(|g| g.labels.contains("container=\"app\"")).map(|g| g.line.clone()).collect();
    assert_eq!(a_lines, expected("a", 0..1200), "in file order, no loss, no duplicate");
    let g = &got[0];
    assert!(g.labels.contains(r#"cluster="test-cluster""#), "{}", g.labels);
    assert!(g.labels.contains(r#"namespace="shop""#) && g.labels.contains(r#"pod="cart-1""#));
    assert!(g.labels.contains(r#"node="node-1""#) && g.labels.contains(r#"job="shop/"#));
    assert!(!g.labels.contains("uid"), "no pod uid in labels");
    // `stream` is a stream label by default (`logs.stream: label`), not structured metadata.
    assert!(g.labels.contains(r#"stream="stdout""#), "{}", g.labels);
    assert_eq!(g.meta, vec![]);
    // Timestamps come from the CRI lines.
    let first_a = got.iter().find(|g| g.line == "a-61").unwrap();
    assert_eq!(first_a.ts, 1_704_067_200_000_000_000 + 61_000_000_000 + 61);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_file_is_read_to_end_before_switching() {
    let env = Env::new();
    let dir = env.container_dir("ns", "p", "c");
    let live = dir.join("0.log");
    write_lines(&live, "l", 0..100);
    let run = env.start();
    eventually(10, "file open", || fd_open_on(&live)).await;
    // The kubelet renames; the runtime writes a little more to the old descriptor, then reopens.
    let rotated = dir.join("0.log.20240101-000000");
    std::fs::rename(&live, &rotated).unwrap();
    write_lines(&rotated, "l", 100..150);
    write_lines(&live, "l", 150..250);
    eventually(10, "250 lines", || env.sink.count() >= 250).await;
    write_lines(&live, "l", 250..300);
    eventually(10, "300 lines", || env.sink.count() >= 300).await;
    eventually(10, "rotated file closed", || !fd_open_on(&rotated)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), expected("l", 0..300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_restarts_at_zero() {
    let env = Env::new();
    let live = env.container_dir("ns", "p", "c").join("0.log");
    write_lines(&live, "before", 0..100);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(0).unwrap();
    write_lines(&live, "after", 0..20);
    eventually(10, "120 lines", || env.sink.count() >= 120).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let mut want = expected("before", 0..100);
    want.extend(expected("after", 0..20));
    assert_eq!(env.sink.lines(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_file_is_read_to_its_end_and_its_descriptor_closed() {
    let env = Env::new();
    let dir = env.container_dir("ns", "gone", "c");
    let live = dir.join("0.log");
    write_lines(&live, "x", 0..10);
    let run = env.start();
    eventually(10, "file open", || fd_open_on(&live)).await;
    eventually(10, "10 lines", || env.sink.count() >= 10).await;
    // Written and deleted before the tailer could look: still read from the open descriptor.
    write_lines(&live, "x", 10..60);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    eventually(10, "60 lines", || env.sink.count() >= 60).await;
    eventually(10, "descriptor closed", || !fd_open_on(&live)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), expected("x", 0..60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_loss_or_duplicates() {
    let env = Env::new();
    let live = env.container_dir("ns", "p", "c").join("0.log");
    write_lines(&live, "r", 0..100);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let cp = env.checkpoints();
    assert_eq!(cp["files"][0]["offset"].as_u64(), Some(std::fs::metadata(&live).unwrap().len()));

    write_lines(&live, "r", 100..150);
    let run = env.start();
    eventually(10, "150 lines", || env.sink.count() >= 150).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), expected("r", 0..150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_never_comes_keeps_the_checkpoint_back() {
    let env = Env::new();
    let live = env.container_dir("ns", "p", "c").join("0.log");
    write_lines(&live, "n", 0..50);
    env.sink.set_mode(AckMode::Never);
    let run = env.start();
    eventually(10, "50 lines", || env.sink.count() >= 50).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.stop().await;
    assert_eq!(env.checkpoints()["files"][0]["offset"].as_u64(), Some(0));

    // Everything unacknowledged comes again.
    env.sink.set_mode(AckMode::All);
    let run = env.start();
    eventually(10, "50 more lines", || env.sink.count() >= 100).await;
    run.stop().await;
    let got = env.sink.got();
    let second: Vec<String> = got.iter().filter(|g| g.run == 2).map(|g| g.line.clone()).collect();
    assert_eq!(second, expected("n", 0..50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_duplicates_only_the_unacknowledged_tail() {
    let env = Env::new();
    let live = env.container_dir("ns", "p", "c").join("0.log");
    // One batch of 20 lines, acknowledged; then 30 more in batches that are not.
    write_lines(&live, "t", 0..20);
    env.sink.set_mode(AckMode::First(1));
    let run = env.start();
    eventually(10, "20 lines", || env.sink.count() >= 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_lines(&live, "t", 20..50);
    eventually(10, "50 lines", || env.sink.count() >= 50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let first_batch = env.sink.got().iter().filter(|g| g.run == 1).count();
    assert_eq!(first_batch, 50);

    env.sink.set_mode(AckMode::All);
    let run = env.start();
    eventually(10, "the tail again", || env.sink.count() >= 80).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.stop().await;
    let second: Vec<String> = env.sink.got().iter().filter(|g| g.run == 2).map(|g| g.line.clone()).collect();
    assert_eq!(second, expected("t", 20..50), "only what was not acknowledged is sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inode_reuse_with_different_content_is_read_from_the_start() {
    let env = Env::new();
    let live = env.container_dir("ns", "p", "c").join("0.log");
    write_lines(&live, "old", 0..100);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;

    // While the agent is down the same inode gets other, longer content (as when a deleted
    // file's inode is reused): the checkpoint must not apply to it.
    let ino_before = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&live).unwrap());
    let mut text = String::new();
    for i in 0..150u64 {
        text.push_str(&cri(1000 + i, &format!("new-{i}")));
    }
    std::fs::write(&live, text).unwrap();
    assert_eq!(ino_before, std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&live).unwrap()));
    let run = env.start();
    eventually(10, "150 new lines", || env.sink.count() >= 250).await;
    run.stop().await;
    let second: Vec<String> = env.sink.got().iter().filter(|g| g.run == 2).map(|g| g.line.clone()).collect();
    assert_eq!(second, expected("new", 0..150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_end_skips_existing_content_on_the_very_first_start_only() {
    let mut env = Env::new();
    env.cfg.start_at = lgtm_config::StartAt::End;
    let live = env.container_dir("ns", "p", "c").join("0.log");
    write_lines(&live, "e", 0..10);
    let run = env.start();
    eventually(10, "file open", || fd_open_on(&live)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_lines(&live, "e", 10..15);
    // A file appearing while running is read from its start.
    let other = env.container_dir("ns", "p", "d").join("0.log");
    write_lines(&other, "o", 0..5);
    eventually(10, "10 lines", || env.sink.count() >= 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let lines: BTreeSet<String> = env.sink.lines().into_iter().collect();
    let want: BTreeSet<String> = expected("e", 10..15).into_iter().chain(expected("o", 0..5)).collect();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_finds_files_when_the_root_appears_late_and_filters_apply() {
    let mut env = Env::new();
    let root = env.root.path().join("late");
    env.cfg.path = root.clone();
    let run = env.start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = lgtm_daemonset::logs::metrics::logs().rescan_recoveries.get();
    let d = root.join("ns_p_uid").join("app");
    std::fs::create_dir_all(&d).unwrap();
    write_lines(&d.join("0.log"), "late", 0..5);
    let proxy = root.join("ns_p_uid").join("istio-proxy");
    std::fs::create_dir_all(&proxy).unwrap();
    write_lines(&proxy.join("0.log"), "proxy", 0..5);
    eventually(10, "5 lines", || env.sink.count() >= 5).await;
    assert!(lgtm_daemonset::logs::metrics::logs().rescan_recoveries.get() > before);
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), expected("late", 0..5), "excluded container not shipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_json_and_long_cri_lines_end_to_end() {
    let mut env = Env::new();
    env.cfg.max_line_size = lgtm_config::ByteSize::from_bytes(1000);
    let docker = env.container_dir("ns", "p", "docker").join("0.log");
    append(
        &docker,
        concat!(
            r#"{"log":"one\n","stream":"stdout","time":"2024-01-01T00:00:00.000000001Z"}"#,
            "\n",
            r#"{"log":"two ","stream":"stderr","time":"2024-01-01T00:00:00.000000002Z"}"#,
            "\n",
            r#"{"log":"halves\n","stream":"stderr","time":"2024-01-01T00:00:00.000000003Z"}"#,
            "\n",
        ),
    );
    let cri_file = env.container_dir("ns", "p", "cri").join("0.log");
    let long = "y".repeat(2500);
    append(&cri_file, &format!("2024-01-01T00:00:00Z stdout P {}\n", &long[..1500]));
    append(&cri_file, &format!("2024-01-01T00:00:01Z stdout F {}\n", &long[1500..]));
    append(&cri_file, "2024-01-01T00:00:02Z stderr F bad \u{0}\u{0}\n");
    append(&cri_file, "garbage line\n");
    let run = env.start();
    eventually(10, "all entries", || env.sink.count() >= 7).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let got = env.sink.got();
    // The output is a stream label (`logs.stream: label`, the default): nothing in metadata.
    let output = |labels: &str| ["stdout", "stderr"].into_iter().find(|o| labels.contains(&format!("stream=\"{o}\"")));
    let docker_lines: Vec<(String, Option<&str>, usize)> = got
        .iter()
        .filter(|g| g.labels.contains("docker"))
        .map(|g| (g.line.clone(), output(&g.labels), g.meta.len()))
        .collect();
    assert_eq!(docker_lines, vec![("one".into(), Some("stdout"), 0), ("two halves".into(), Some("stderr"), 0)]);
    let cri_lines: Vec<&common::Got> = got.iter().filter(|g| g.labels.contains("\"cri\"")).collect();
    assert_eq!(cri_lines.len(), 5);
    let joined: String = cri_lines[..3].iter().map(|g| g.line.as_str()).collect();
    assert_eq!(joined, long, "split, never dropped");
    for (i, g) in cri_lines[..3].iter().enumerate() {
        assert!(g.meta.contains(&("part".to_string(), (i + 1).to_string())), "{:?}", g.meta);
        assert_eq!(g.ts, 1_704_067_200_000_000_000);
    }
    assert_eq!(cri_lines[4].line, "garbage line");
    assert!(cri_lines[4].meta.is_empty(), "raw lines carry no stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_compressed_while_the_agent_was_down_is_read_from_its_checkpoint_once() {
    use std::io::Write;
    let env = Env::new();
    let dir = env.container_dir("ns", "p", "c");
    let live = dir.join("0.log");
    write_lines(&live, "g", 0..100);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.stop().await;

    // While the agent is down: more lines, a rotation, the kubelet compresses the rotated file
    // (through `.tmp`, then deletes it) and the new file gets lines too.
    write_lines(&live, "g", 100..150);
    let rotated = dir.join("0.log.20240101-000000");
    std::fs::rename(&live, &rotated).unwrap();
    let gz = dir.join("0.log.20240101-000000.gz");
    let tmp = dir.join("0.log.20240101-000000.gz.tmp");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&tmp).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&rotated).unwrap()).unwrap();
    enc.finish().unwrap();
    std::fs::rename(&tmp, &gz).unwrap();
    std::fs::remove_file(&rotated).unwrap();
    write_lines(&live, "g", 150..200);

    let run = env.start();
    eventually(10, "200 lines", || env.sink.count() >= 200).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    run.stop().await;
    let second: Vec<String> = env.sink.got().iter().filter(|g| g.run == 2).map(|g| g.line.clone()).collect();
    assert_eq!(second, expected("g", 100..200), "the rest of the compressed file first, then the new one");
    assert_eq!(env.checkpoints()["files"].as_array().map(Vec::len), Some(1), "the compressed file is let go");
    assert_eq!(std::fs::read_dir(env.data.path().join("logs")).unwrap().count(), 1, "no temporary file left");

    // Another restart reads neither again.
    write_lines(&live, "g", 200..210);
    let run = env.start();
    eventually(10, "210 lines", || env.sink.count() >= 210).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), expected("g", 0..210), "every line once");
}

/// Descriptors this process holds on files under `root`.
fn fds_under(root: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(root))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_files_than_max_open_files_every_line_once_through_growth_and_rotation() {
    let mut env = Env::new();
    env.cfg.max_open_files = 16;
    let files: Vec<_> = (0..120).map(|i| env.container_dir("ns", &format!("p{i}"), "c").join("0.log")).collect();
    for (i, f) in files.iter().enumerate() {
        write_lines(f, &format!("f{i}"), 0..20);
    }
    let run = env.start();
    let mut peak = 0;
    let total = files.len() * 20;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.sink.count() < total {
        peak = peak.max(fds_under(env.root.path()));
        assert!(std::time::Instant::now() < deadline, "{} of {total} lines", env.sink.count());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(peak <= 17, "descriptors on log files peaked at {peak} (cap 16, one more while a file is looked at)");
    let first_peak = peak;
    // Closed files grow (reopened by path and identity) and are rotated while closed (found by
    // inode beside their path and read to their end before the new file).
    for (i, f) in files.iter().enumerate() {
        write_lines(f, &format!("f{i}"), 20..30);
        if i % 3 == 0 {
            std::fs::rename(f, f.with_file_name("0.log.20240101-000000")).unwrap();
            write_lines(&f.with_file_name("0.log.20240101-000000"), &format!("f{i}"), 30..35);
        }
        write_lines(f, &format!("f{i}"), if i % 3 == 0 { 35..40 } else { 30..40 });
    }
    let total = files.len() * 40;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.sink.count() < total {
        peak = peak.max(fds_under(env.root.path()));
        assert!(std::time::Instant::now() < deadline, "{} of {total} lines", env.sink.count());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let got = env.sink.got();
    assert_eq!(got.len(), total, "nothing twice");
    for i in 0..files.len() {
        let pod = format!("pod=\"p{i}\"");
        let lines: Vec<String> = got.iter().filter(|g| g.labels.contains(&pod)).map(|g| g.line.clone()).collect();
        assert_eq!(lines, expected(&format!("f{i}"), 0..40), "file {i} in order, once");
    }
    // The cap plus the 40 rotated files being read to their end (never closed early).
    assert!(peak <= 16 + 40 + 1, "descriptors on log files peaked at {peak}");
    println!(
        "120 files, max_open_files 16: {total} lines once; peak descriptors on log files {first_peak} while reading, {peak} with 40 rotations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_line_alone_is_shipped_after_the_timeout_and_its_rest_is_a_line_of_its_own() {
    let mut env = Env::new();
    env.cfg.partial_flush_timeout = lgtm_config::Duration::from_millis(400);
    let live = env.container_dir("ns", "p", "c").join("0.log");
    append(&live, "2024-01-01T00:00:00.000000001Z stdout F before\n2024-01-01T00:00:01Z stdout P dangling piece\n");
    let run = env.start();
    eventually(10, "the whole line", || env.sink.count() >= 1).await;
    let started = std::time::Instant::now();
    eventually(10, "the piece", || env.sink.count() >= 2).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "not before the timeout: {waited:?}");
    append(&live, "2024-01-01T00:00:02Z stdout F and its end\n");
    eventually(10, "the end", || env.sink.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), vec!["before", "dangling piece", "and its end"]);
    assert_eq!(env.checkpoints()["files"][0]["offset"].as_u64(), Some(std::fs::metadata(&live).unwrap().len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_partial_is_shipped_at_shutdown_and_not_again_after_a_restart() {
    let mut env = Env::new();
    env.cfg.partial_flush_timeout = lgtm_config::Duration::from_secs(60);
    let live = env.container_dir("ns", "p", "c").join("0.log");
    append(&live, "2024-01-01T00:00:00Z stdout F one\n2024-01-01T00:00:01Z stdout P piece\n");
    let run = env.start();
    eventually(10, "the whole line", || env.sink.count() >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.sink.count(), 1, "the piece waits for its end");
    run.stop().await;
    assert_eq!(env.sink.lines(), vec!["one", "piece"], "shipped at shutdown");
    // A restart reads on after the piece: the end is a line of its own, nothing twice.
    append(&live, "2024-01-01T00:00:02Z stdout F end\n");
    let run = env.start();
    eventually(10, "the end", || env.sink.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_eq!(env.sink.lines(), vec!["one", "piece", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_reads_the_unread_tail_of_the_copy() {
    let env = Env::new();
    let dir = env.container_dir("ns", "p", "c");
    let live = dir.join("0.log");
    write_lines(&live, "g1", 0..100);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    // Lines written after the tailer's last read went into the copy only (logrotate copied
    // them, then truncated): the copy holds exactly what the truncation took.
    let mut copy = std::fs::read(&live).unwrap();
    for i in 100..150 {
        copy.extend_from_slice(cri(i, &format!("g1-{i}")).as_bytes());
    }
    std::fs::write(dir.join("0.log.1"), &copy).unwrap();
    std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(0).unwrap();
    write_lines(&live, "g2", 0..10);
    eventually(10, "160 lines", || env.sink.count() >= 160).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    let mut want = expected("g1", 0..150);
    want.extend(expected("g2", 0..10));
    assert_eq!(env.sink.lines(), want);
}

/// Without the periodic pass and the rescan (both an hour apart), inotify's events alone bring
/// appends, a rotation, a copytruncate and a pod created while running, each line once and in
/// order. (With the defaults a file at its end is read only when an event names it, or at the
/// pass every `poll_interval`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_alone_bring_appends_rotations_truncations_and_new_pods() {
    let mut env = Env::new();
    env.tuning.poll_interval = Duration::from_secs(3600);
    env.cfg.rescan_interval = lgtm_config::Duration::from_millis(3_600_000);
    let a = env.container_dir("ns", "a", "c").join("0.log");
    let b_dir = env.container_dir("ns", "b", "c");
    let b = b_dir.join("0.log");
    write_lines(&a, "a", 0..50);
    write_lines(&b, "b", 0..50);
    let run = env.start();
    eventually(10, "100 lines", || env.sink.count() >= 100).await;
    // Appends, in several writes.
    for k in 0..5 {
        write_lines(&a, "a", 50 + k * 10..60 + k * 10);
        write_lines(&b, "b", 50 + k * 10..60 + k * 10);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(10, "200 lines", || env.sink.count() >= 200).await;
    // A rotation: renamed, written once more, a new file.
    let rotated = b_dir.join("0.log.20240101-000000");
    std::fs::rename(&b, &rotated).unwrap();
    write_lines(&rotated, "b", 100..110);
    write_lines(&b, "b", 110..130);
    eventually(10, "230 lines", || env.sink.count() >= 230).await;
    eventually(10, "rotated file closed", || !fd_open_on(&rotated)).await;
    // A truncation, then new lines.
    std::fs::OpenOptions::new().write(true).open(&a).unwrap().set_len(0).unwrap();
    write_lines(&a, "a", 100..120);
    eventually(10, "250 lines", || env.sink.count() >= 250).await;
    // A pod created while running.
    let n = env.container_dir("ns", "new", "c").join("0.log");
    write_lines(&n, "n", 0..30);
    eventually(10, "280 lines", || env.sink.count() >= 280).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let got = env.sink.got();
    let of = |c: &str| -> Vec<String> {
        got.iter().filter(|g| g.labels.contains(&format!("pod=\"{c}\""))).map(|g| g.line.clone()).collect()
    };
    assert_eq!(of("a"), expected("a", 0..120));
    assert_eq!(of("b"), expected("b", 0..130));
    assert_eq!(of("new"), expected("n", 0..30));
    assert_eq!(got.len(), 280);
}

/// A file written to all the time gets its directory's write events muted (one event per write
/// otherwise) and is read at every turn instead, through a rotation and a truncation; a
/// restarted container's new file in that directory too; once quiet, the events come back. Without the periodic pass and the rescan,
/// every line arrives once and in order. The files stay open for writing, as a runtime keeps
/// them (closing one sends an event of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_file_is_read_without_its_write_events_until_it_goes_quiet() {
    let mut env = Env::new();
    env.tuning.poll_interval = Duration::from_secs(3600);
    env.cfg.rescan_interval = lgtm_config::Duration::from_millis(3_600_000);
    let dir = env.container_dir("ns", "busy", "c");
    let live = dir.join("0.log");
    write_lines(&live, "a", 0..10);
    let run = env.start();
    eventually(10, "the first lines", || env.sink.count() >= 10).await;
    let open = |p: &std::path::Path| std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
    let write = |f: &mut std::fs::File, prefix: &str, range: std::ops::Range<u64>| {
        use std::io::Write;
        let text: String = range.map(|i| cri(i, &format!("{prefix}-{i}"))).collect();
        f.write_all(text.as_bytes()).unwrap();
    };
    let mut live_w = open(&live);
    assert!(watch_mask(&dir).is_some_and(|m| m & IN_MODIFY != 0), "watched for writes at first");
    // Written every 20 ms: muted within a few writes.
    let mut next = 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watch_mask(&dir).is_some_and(|m| m & IN_MODIFY != 0) {
        assert!(std::time::Instant::now() < deadline, "the busy directory's write events were not muted");
        write(&mut live_w, "a", next..next + 5);
        next += 5;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Muted: writes come with no event, yet arrive while the file stays busy, through a rotation;
    // so do those of a file the restarted container starts beside it.
    let mut restarted = open(&dir.join("1.log"));
    for k in 0..20 {
        write(&mut live_w, "a", next..next + 5);
        next += 5;
        if k == 5 {
            write(&mut restarted, "r", 0..5);
        }
        if k == 10 {
            write(&mut restarted, "r", 5..10);
        }
        if k == 12 {
            // A rotation: renamed, written once more through the old descriptor, a new file.
            std::fs::rename(&live, dir.join("0.log.20240101-000000")).unwrap();
            write(&mut live_w, "a", next..next + 5);
            next += 5;
            live_w = open(&live);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(watch_mask(&dir).map(|m| m & IN_MODIFY), Some(0), "still muted while written to");
    // Muted for every event of the files (closes, attribute changes too): a directory watched
    // for any of them makes the kernel look it up at every read and write of its files.
    let muted = watch_mask(&dir).unwrap_or(0);
    assert_eq!(muted & IN_FILE_EVENTS, 0, "muted mask {muted:#x}: no event of the files themselves");
    let total = next as usize + 10;
    eventually(5, "every line of the muted directory", || env.sink.count() >= total).await;
    // A truncation while muted (no copy beside it, nothing unread): read again from the start.
    live_w.set_len(0).unwrap();
    write(&mut live_w, "a", next..next + 5);
    next += 5;
    eventually(5, "the lines after the truncation", || env.sink.count() >= total + 5).await;
    let total = total + 5;
    // Quiet: the write events come back, and bring the next line.
    eventually(10, "write events back", || watch_mask(&dir).is_some_and(|m| m & IN_MODIFY != 0)).await;
    write(&mut live_w, "a", next..next + 1);
    eventually(5, "a line written after the events came back", || env.sink.count() > total).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let got = env.sink.got();
    let of = |p: &str| -> Vec<String> {
        got.iter().filter(|g| g.line.starts_with(&format!("{p}-"))).map(|g| g.line.clone()).collect()
    };
    assert_eq!(of("a"), expected("a", 0..next + 1), "in order, none lost or twice");
    assert_eq!(of("r"), expected("r", 0..10));
    assert_eq!(got.len(), total + 1);
}
