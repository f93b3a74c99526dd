//! Behaviour of the queue, memory-only and on disk. The random model test is in [`model`].

mod model;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lgtm_config::WhenFull;

use super::{segment, DurableQueue, PushError, QueueOptions, Record};
use crate::ack::{Ack, Delivery};
use crate::metrics;

fn opts(name: &str, dir: Option<&Path>, max_memory: u64, max_disk: u64, when_full: WhenFull) -> QueueOptions {
    QueueOptions { name: name.into(), dir: dir.map(Path::to_path_buf), max_memory, max_disk, when_full }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn body(i: usize, len: usize) -> Bytes {
    (0..len).map(|j| (i * 7 + j) as u8).collect::<Vec<u8>>().into()
}

/// Pushes `n` records of `len` bytes, one item each, and returns their acknowledgements.
fn push_n(q: &DurableQueue, from: usize, n: usize, len: usize) -> Vec<Ack> {
    (from..from + n)
        .map(|i| {
            let (tx, ack) = Ack::pair();
            q.try_push(body(i, len), 1, Some(tx)).unwrap_or_else(|e| panic!("push {i}: {e:?}"));
            ack
        })
        .collect()
}

/// Up to `n` records, without waiting for more to arrive.
fn take(rt: &tokio::runtime::Runtime, q: &DurableQueue, n: usize) -> Vec<Record> {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), q.next(usize::MAX, n, Duration::ZERO)).await })
        .expect("records were available")
        .unwrap_or_default()
}

fn seg_files(dir: &Path) -> Vec<std::path::PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

#[test]
fn memory_only_queue_commits_the_contiguous_prefix_of_completions() {
    let rt = runtime();
    let q = DurableQueue::open(opts("mem-prefix", None, 1 << 20, 0, WhenFull::Block)).unwrap();
    let mut acks = push_n(&q, 0, 5, 10);
    let recs = take(&rt, &q, 5);
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(recs[3].payload, body(3, 10));
    q.complete(2, Delivery::Accepted);
    q.complete(1, Delivery::Rejected("bad".into()));
    assert_eq!(acks[1].try_outcome(), None, "1 waits for 0");
    q.complete(0, Delivery::Accepted);
    assert_eq!(acks[0].try_outcome(), Some(Delivery::Accepted));
    assert_eq!(acks[1].try_outcome(), Some(Delivery::Rejected("bad".into())));
    assert_eq!(acks[2].try_outcome(), Some(Delivery::Accepted));
    assert_eq!(q.stats().records, 2);
    assert_eq!(q.stats().disk_bytes, 0);
}

#[test]
fn paused_readers_get_nothing_while_pushes_go_on_and_the_next_reader_starts_at_the_first_unsettled() {
    let rt = runtime();
    let q = DurableQueue::open(opts("mem-pause", None, 1 << 20, 0, WhenFull::Block)).unwrap();
    let _acks = push_n(&q, 0, 3, 10);
    let held = take(&rt, &q, 2);
    assert_eq!(held.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
    // A reader waiting for more is woken with `None` by the pause.
    let woken = rt.block_on(async {
        let reader = {
            let q = q.clone();
            tokio::spawn(async move { q.next(usize::MAX, 100, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        q.pause_readers();
        tokio::time::timeout(Duration::from_secs(5), reader).await
    });
    assert!(matches!(woken, Ok(Ok(None))), "{woken:?}");
    let _more = push_n(&q, 3, 2, 10);
    assert!(rt.block_on(q.next(usize::MAX, 100, Duration::ZERO)).is_none(), "paused: nothing handed out");
    // The old reader settles what it held: one done, one handed back.
    q.complete(0, Delivery::Accepted);
    q.release(1);
    q.resume_readers();
    let next = take(&rt, &q, 100);
    assert_eq!(next.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn memory_only_drop_oldest_evicts_waiting_records_and_counts_them() {
    let rt = runtime();
    let q = DurableQueue::open(opts("mem-evict", None, 100, 0, WhenFull::DropOldest)).unwrap();
    let before = metrics::pipeline().dropped.with_label_values(&["mem-evict", "evicted"]).get();
    let mut acks = push_n(&q, 0, 4, 25);
    let first = take(&rt, &q, 1);
    assert_eq!(first[0].seq, 0);
    acks.extend(push_n(&q, 4, 2, 25));
    assert_eq!(acks[1].try_outcome(), Some(Delivery::Evicted));
    assert_eq!(acks[2].try_outcome(), Some(Delivery::Evicted));
    assert_eq!(acks[0].try_outcome(), None, "in flight is never evicted");
    assert_eq!(q.stats().evicted, 2);
    assert!(q.stats().memory_bytes <= 100);
    assert_eq!(metrics::pipeline().dropped.with_label_values(&["mem-evict", "evicted"]).get() - before, 2);
    assert_eq!(take(&rt, &q, 10).iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
}

#[test]
fn memory_only_block_reports_full() {
    let q = DurableQueue::open(opts("mem-block", None, 100, 0, WhenFull::Block)).unwrap();
    push_n(&q, 0, 4, 25);
    assert!(matches!(q.try_push(body(9, 1), 1, None), Err(PushError::Full(None))));
}

#[test]
fn record_larger_than_the_queue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("too-large", Some(dir.path()), 10, 1000, WhenFull::Block)).unwrap();
    assert!(matches!(q.try_push(body(0, 990), 1, None), Err(PushError::Other(super::QueueError::TooLarge { .. }))));
    q.try_push(body(0, 980), 1, None).unwrap();
}

#[test]
fn uncommitted_records_are_replayed_in_order_after_a_crash() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let o = opts("crash-replay", Some(dir.path()), 1 << 20, 1 << 20, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    push_n(&q, 0, 10, 100);
    for r in take(&rt, &q, 3).iter().take(2) {
        q.complete(r.seq, Delivery::Accepted);
    }
    drop(q); // kill -9: no persist
    let q = DurableQueue::open(o).unwrap();
    let replayed = take(&rt, &q, 100);
    let seqs: Vec<u64> = replayed.iter().map(|r| r.seq).collect();
    // The commit position is written lazily: the two delivered records may come back, the rest must.
    assert!(seqs == (0..10).collect::<Vec<_>>() || seqs == (2..10).collect::<Vec<_>>(), "{seqs:?}");
    for r in &replayed {
        assert_eq!(r.payload, body(r.seq as usize, 100));
    }
    assert_eq!(q.stats().corrupt, 0);
}

/// On the agent's (multi-thread) runtime the file work of a push does not hold up the worker:
/// with a single worker, a task that pushes (and persists, fsync) in a loop without ever
/// yielding still lets another task on that worker run meanwhile. Done on the worker itself, the
/// other task would not run once until the loop ended.
#[test]
fn disk_work_moves_off_the_async_worker() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("off-workers", Some(dir.path()), 1 << 20, 64 << 20, WhenFull::Block)).unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let during = rt.block_on(async {
        // Let the ticker start on the worker.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (q, ticks) = (q.clone(), ticks.clone());
        tokio::spawn(async move {
            let before = ticks.load(Ordering::Relaxed);
            let started = std::time::Instant::now();
            let mut i = 0;
            // No await in this loop: only the pushes' file work can let the ticker in.
            while started.elapsed() < Duration::from_millis(300) || i < 20 {
                q.try_push(body(i, 1000), 1, None).unwrap();
                q.persist().unwrap();
                i += 1;
            }
            ticks.load(Ordering::Relaxed) - before
        })
        .await
        .unwrap()
    });
    ticker.abort();
    assert!(during >= 10, "the other task ran {during} times during 300 ms of pushes");
    let records = take(&runtime(), &q, usize::MAX);
    assert!(records.iter().all(|r| r.payload == body(r.seq as usize, 1000)));
}

#[test]
fn after_persist_exactly_the_uncommitted_records_are_replayed_and_numbering_continues() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let o = opts("persist-replay", Some(dir.path()), 1 << 20, 1 << 20, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    push_n(&q, 0, 10, 100);
    for r in take(&rt, &q, 4) {
        q.complete(r.seq, Delivery::Accepted);
    }
    q.persist().unwrap();
    drop(q);
    let q = DurableQueue::open(o.clone()).unwrap();
    assert_eq!(q.stats().records, 6);
    push_n(&q, 10, 1, 100);
    let seqs: Vec<u64> = take(&rt, &q, 100).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (4..11).collect::<Vec<_>>());
}

#[test]
fn payloads_beyond_the_memory_bound_are_read_back_from_disk() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("spill", Some(dir.path()), 100, 1 << 20, WhenFull::Block)).unwrap();
    push_n(&q, 0, 10, 50);
    let s = q.stats();
    assert_eq!(s.memory_bytes, 100);
    assert_eq!(s.disk_bytes, 10 * segment::frame_len(50));
    let on_disk: u64 = seg_files(dir.path()).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert_eq!(s.disk_bytes, on_disk);
    let recs = take(&rt, &q, 10);
    assert_eq!(recs.len(), 10);
    for r in &recs {
        assert_eq!(r.payload, body(r.seq as usize, 50));
    }
}

#[test]
fn torn_tail_after_a_crash_is_cut_off_and_the_queue_carries_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let o = opts("torn", Some(dir.path()), 1 << 20, 1 << 20, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    push_n(&q, 0, 3, 40);
    drop(q);
    // A fourth append cut short by the crash.
    let last = seg_files(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&[0x55; 30]).unwrap();
    drop(f);
    let q = DurableQueue::open(o.clone()).unwrap();
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole);
    assert_eq!(q.stats().corrupt, 0);
    push_n(&q, 3, 2, 40);
    drop(q);
    let q = DurableQueue::open(o).unwrap();
    let recs = take(&rt, &q, 100);
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    for r in &recs {
        assert_eq!(r.payload, body(r.seq as usize, 40));
    }
}

#[test]
fn corruption_in_an_older_segment_skips_the_rest_of_it_and_is_counted() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Segments of at most 160 bytes: two 80-byte frames each.
    let o = opts("corrupt", Some(dir.path()), 1 << 20, 8 * 160, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    push_n(&q, 0, 6, 60);
    drop(q);
    let files = seg_files(dir.path());
    assert_eq!(files.len(), 3);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[80 + 30] ^= 0xff; // inside the second record's payload
    std::fs::write(&files[0], &bytes).unwrap();
    let q = DurableQueue::open(o).unwrap();
    assert_eq!(q.stats().corrupt, 1);
    assert_eq!(take(&rt, &q, 100).iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 2, 3, 4, 5]);
}

#[test]
fn block_at_the_disk_limit_makes_push_wait_for_a_commit() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // One 100-byte frame per segment, eight segments.
    let q = DurableQueue::open(opts("block-disk", Some(dir.path()), 0, 800, WhenFull::Block)).unwrap();
    push_n(&q, 0, 8, 80);
    assert_eq!(q.stats().disk_bytes, 800);
    assert_eq!(q.stats().memory_bytes, 0);
    assert!(matches!(q.try_push(body(8, 80), 1, None), Err(PushError::Full(None))));
    rt.block_on(async {
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.push(body(8, 80), 1, None).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let r = q.next(usize::MAX, 1, Duration::ZERO).await.unwrap();
        q.complete(r[0].seq, Delivery::Accepted);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    });
    assert_eq!(q.stats().disk_bytes, 800);
    assert_eq!(seg_files(dir.path()).len(), 8);
}

#[test]
fn drop_oldest_at_the_disk_limit_evicts_whole_segments_not_in_flight() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Two 100-byte frames per segment, four segments.
    let q = DurableQueue::open(opts("evict-disk", Some(dir.path()), 0, 1600, WhenFull::DropOldest)).unwrap();
    let before = metrics::pipeline().dropped.with_label_values(&["evict-disk", "evicted"]).get();
    let mut acks = push_n(&q, 0, 16, 80);
    assert_eq!(take(&rt, &q, 1)[0].seq, 0);
    acks.extend(push_n(&q, 16, 3, 80));
    // Segment [0, 1] holds a record in flight; [2, 3] and [4, 5] go to make room.
    let evicted: Vec<usize> = acks.iter_mut().enumerate().filter_map(|(i, a)| a.try_outcome().map(|_| i)).collect();
    assert_eq!(evicted, [2, 3, 4, 5]);
    assert_eq!(q.stats().evicted, 4);
    assert_eq!(metrics::pipeline().dropped.with_label_values(&["evict-disk", "evicted"]).get() - before, 4);
    assert!(q.stats().disk_bytes <= 1600);
    let seqs: Vec<u64> = take(&rt, &q, 100).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1].into_iter().chain(6..19).collect::<Vec<_>>());
}

#[test]
fn segments_are_deleted_once_every_record_in_them_is_done() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let o = opts("delete", Some(dir.path()), 1 << 20, 8 * 160, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    push_n(&q, 0, 6, 60);
    let recs = take(&rt, &q, 6);
    q.complete(recs[1].seq, Delivery::Accepted);
    assert_eq!(seg_files(dir.path()).len(), 3, "record 0 still pending");
    q.complete(recs[0].seq, Delivery::Accepted);
    assert_eq!(seg_files(dir.path()).len(), 2);
    for r in &recs[2..] {
        q.complete(r.seq, Delivery::Accepted);
    }
    assert!(seg_files(dir.path()).is_empty());
    assert_eq!(q.stats().disk_bytes, 0);
    q.persist().unwrap();
    drop(q);
    let q = DurableQueue::open(o).unwrap();
    assert_eq!(q.stats().records, 0);
    push_n(&q, 6, 1, 10);
    assert_eq!(take(&rt, &q, 1)[0].seq, 6, "numbering continues from the commit position");
}

#[test]
fn released_record_is_handed_out_again_before_later_ones() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("release", Some(dir.path()), 0, 1 << 20, WhenFull::Block)).unwrap();
    push_n(&q, 0, 4, 10);
    let recs = take(&rt, &q, 2);
    q.release(recs[0].seq);
    let again: Vec<u64> = take(&rt, &q, 10).iter().map(|r| r.seq).collect();
    assert_eq!(again, [0, 2, 3]);
}

#[test]
fn closed_queue_refuses_pushes_and_drains_what_is_left() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("close", Some(dir.path()), 1 << 20, 1 << 20, WhenFull::Block)).unwrap();
    push_n(&q, 0, 2, 10);
    q.close();
    assert!(matches!(q.try_push(body(2, 10), 1, None), Err(PushError::Other(super::QueueError::Closed(_)))));
    rt.block_on(async {
        assert_eq!(q.next(1 << 20, 1000, Duration::from_secs(60)).await.map(|r| r.len()), Some(2));
        assert!(q.next(1 << 20, 1000, Duration::from_secs(60)).await.is_none());
    });
}

/// Not a benchmark: shows the order of magnitude in the test output and catches gross slowness.
#[test]
fn throughput_sanity() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let q = DurableQueue::open(opts("throughput", Some(dir.path()), 1 << 20, 64 << 20, WhenFull::Block)).unwrap();
    let (n, len) = (20_000usize, 1024usize);
    let payload = body(1, len);
    let start = std::time::Instant::now();
    rt.block_on(async {
        let consumer = tokio::spawn({
            let q = q.clone();
            async move {
                let mut got = 0;
                while let Some(recs) = q.next(256 * 1024, 10_000, Duration::from_millis(1)).await {
                    for r in recs {
                        q.complete(r.seq, Delivery::Accepted);
                        got += 1;
                    }
                }
                got
            }
        });
        for _ in 0..n {
            q.push(payload.clone(), 1, None).await.unwrap();
        }
        q.close();
        assert_eq!(consumer.await.unwrap(), n);
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!("disk queue: {n} records of {len} B in {secs:.2}s, {:.1} MiB/s", (n * len) as f64 / secs / 1048576.0);
    assert_eq!(q.stats().records, 0);
}

/// A compressed record is held compressed (in memory and on disk, so it counts its compressed
/// size against the bounds) and handed out as it was, also after a restart; records pushed as they
/// are stay as they are; a compressed record that cannot be decompressed is dropped as corrupt.
#[test]
fn compressed_records_are_handed_out_as_they_were() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let o = opts("compressed", Some(dir.path()), 1 << 20, 1 << 20, WhenFull::Block);
    let q = DurableQueue::open(o.clone()).unwrap();
    let repetitive: Bytes = b"series with the same labels ".repeat(100).into();
    let packed = super::compressed(&repetitive).expect("smaller");
    assert!(packed.len() < repetitive.len() / 5, "{}", packed.len());
    assert_eq!(super::compressed(&body(1, 20)), None, "not smaller: None");
    q.try_push(packed.clone(), 1, None).unwrap();
    q.try_push(body(1, 20), 1, None).unwrap();
    let mut broken = packed.to_vec();
    broken.truncate(packed.len() / 2);
    q.try_push(broken.into(), 1, None).unwrap();
    assert_eq!(q.stats().memory_bytes as usize, packed.len() + 20 + packed.len() / 2);
    let out = take(&rt, &q, 10);
    assert_eq!(out.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), [repetitive.clone(), body(1, 20)]);
    assert_eq!(q.stats().corrupt, 1);
    drop(q);
    let q = DurableQueue::open(o).unwrap();
    let replayed = take(&rt, &q, 10);
    assert_eq!(replayed[0].payload, repetitive);
}

/// CPU time of the calling thread, in clock ticks (`utime + stime` of /proc/thread-self/stat).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold blanks.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Several consumers of one queue (the Tempo exporter's senders): each sets a deadline for the
/// records it sees; when another takes them first, the one left waits for the next push instead
/// of waking at once, over and over, on its passed deadline (it spun until then: `bench node`
/// showed the agent's CPU in `DurableQueue::next` and `clock_gettime`).
#[test]
fn a_consumer_whose_records_another_took_waits_without_spinning() {
    let rt = runtime();
    let q = DurableQueue::open(opts("two-consumers", None, 1 << 20, 0, WhenFull::Block)).unwrap();
    rt.block_on(async {
        let wait = Duration::from_millis(20);
        let consumer = |q: DurableQueue| tokio::spawn(async move { q.next(usize::MAX, 1000, wait).await });
        let (mut a, mut b) = (consumer(q.clone()), consumer(q.clone()));
        tokio::task::yield_now().await;
        let _acks = push_n(&q, 0, 1, 10);
        // Both see the record and its deadline passes; one of them takes it.
        let (first, other) = tokio::select! {
            r = &mut a => (r.unwrap(), b),
            r = &mut b => (r.unwrap(), a),
        };
        assert_eq!(first.map(|r| r.len()), Some(1));
        let before = thread_cpu_ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spent = thread_cpu_ticks() - before;
        assert!(spent <= 10, "the waiting consumer spent {spent} ticks of CPU in 500 ms");
        let _acks = push_n(&q, 1, 1, 10);
        let second =
            tokio::time::timeout(Duration::from_secs(5), other).await.expect("the second consumer got the next push");
        assert_eq!(second.unwrap().map(|r| r[0].seq), Some(1));
    });
}
