//! The queue against a model, driven by random actions: push, hand out, complete (in any order),
//! release, crash (drop without persist, as `kill -9`), crash in the middle of an append (a torn
//! frame left at the end of the newest segment), and clean restart (persist, then reopen), with
//! small memory and disk limits so that spilling, blocking and eviction all happen.
//!
//! What must hold:
//! - every record handed out was pushed, with exactly that payload and item count;
//! - records are handed out in push order: a record is never skipped unless it was evicted (its
//!   acknowledgement says so, or for a replayed record without one, the eviction counter covers it)
//!   or it may already have been committed before a crash (at-least-once);
//! - an acknowledgement resolves `Accepted`/`Rejected` only for a record that was handed out and
//!   completed with that outcome, after every earlier record in flight; `Evicted` only for a record
//!   not in flight;
//! - after a crash or restart every record pushed and not completed is replayed (unless evicted);
//!   after a clean restart no committed record is;
//! - disk bytes never exceed the disk limit and match the files; memory bytes stay under the
//!   memory limit; no damage is reported (a torn tail is not damage).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lgtm_config::WhenFull;
use proptest::prelude::*;

use super::super::{segment, DurableQueue, PushError, QueueOptions, Record};
use crate::ack::{Ack, Delivery};

#[derive(Debug, Clone)]
enum Action {
    Push { size: usize },
    Next { max_items: usize },
    Complete { pick: usize, accept: bool },
    Release { pick: usize },
    Crash,
    CrashMidAppend { cut: usize },
    Restart,
}

#[derive(Debug, Clone)]
struct Setup {
    disk: bool,
    max_memory: u64,
    max_disk: u64,
    drop_oldest: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (prop::bool::weighted(0.8), prop_oneof![Just(0u64), Just(300), Just(2000)], 1200u64..4000, any::<bool>())
        .prop_map(|(disk, max_memory, max_disk, drop_oldest)| Setup { disk, max_memory, max_disk, drop_oldest })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (8usize..300).prop_map(|size| Action::Push { size }),
        6 => (1usize..5).prop_map(|max_items| Action::Next { max_items }),
        6 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(pick, accept)| Action::Complete { pick, accept }),
        1 => any::<usize>().prop_map(|pick| Action::Release { pick }),
        1 => Just(Action::Crash),
        1 => (1usize..400).prop_map(|cut| Action::CrashMidAppend { cut }),
        1 => Just(Action::Restart),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// In the queue, waiting to be handed out.
    Queued,
    InFlight,
    /// Completed in this run.
    Done,
    /// Completed before a crash or restart: it may or may not come back.
    Maybe,
    /// Evicted, committed and persisted, lost with a memory-only queue, or skipped: never again.
    Gone,
}

struct Item {
    size: usize,
    status: Status,
    /// Only for records pushed in this run.
    ack: Option<Ack>,
    /// The outcome passed to `complete` in this run.
    outcome: Option<Delivery>,
    /// The acknowledgement resolved with that outcome (the record was committed).
    committed: bool,
}

fn payload(id: usize, size: usize) -> Bytes {
    let mut v = (id as u64).to_le_bytes().to_vec();
    v.extend((8..size).map(|i| (id.wrapping_mul(31).wrapping_add(i)) as u8));
    v.into()
}

fn items_of(id: usize) -> u32 {
    1 + (id % 3) as u32
}

struct Model {
    setup: Setup,
    items: Vec<Item>,
    /// Handed out in this run and not completed: (seq, id).
    in_flight: Vec<(u64, usize)>,
    /// Evictions the acknowledgements showed in this run.
    acked_evictions: u64,
    /// Evictions in earlier runs that no acknowledgement showed.
    silent_evictions_before: u64,
    /// Records without acknowledgement seen skipped (so evicted), over all runs.
    silent_skips: u64,
}

impl Model {
    fn opts(&self, dir: &Path) -> QueueOptions {
        let s = &self.setup;
        QueueOptions {
            name: "model".into(),
            dir: s.disk.then(|| dir.to_path_buf()),
            max_memory: if s.disk { s.max_memory } else { s.max_disk },
            max_disk: if s.disk { s.max_disk } else { 0 },
            when_full: if s.drop_oldest { WhenFull::DropOldest } else { WhenFull::Block },
        }
    }

    /// Evictions that no acknowledgement showed and no skip accounted for yet.
    fn silent_budget(&self, q: &DurableQueue) -> u64 {
        (self.silent_evictions_before + q.stats().evicted - self.acked_evictions)
            .checked_sub(self.silent_skips)
            .expect("more records skipped than evicted")
    }

    fn ready_for_sure(&self) -> bool {
        self.items.iter().any(|i| i.status == Status::Queued && i.ack.is_some())
    }

    fn maybe_ready(&self) -> bool {
        self.items.iter().any(|i| matches!(i.status, Status::Queued | Status::Maybe))
    }

    /// Checks records handed out and marks them in flight.
    fn delivered(&mut self, q: &DurableQueue, records: Vec<Record>) {
        let mut floor = 0usize;
        for r in records {
            let id_bytes: [u8; 8] = r.payload.get(..8).and_then(|b| b.try_into().ok()).expect("payload has an id");
            let id = u64::from_le_bytes(id_bytes) as usize;
            assert!(id < self.items.len(), "record {} was never pushed", r.seq);
            let item = &self.items[id];
            assert_eq!(r.payload, payload(id, item.size), "payload of {id}");
            assert_eq!(r.items, items_of(id), "items of {id}");
            assert!(matches!(item.status, Status::Queued | Status::Maybe), "{id} handed out while {:?}", item.status);
            assert!(self.in_flight.iter().all(|(seq, _)| *seq != r.seq), "seq {} handed out twice", r.seq);
            for skipped in floor..id {
                let s = &mut self.items[skipped];
                match s.status {
                    Status::Maybe => s.status = Status::Gone,
                    Status::Queued if s.ack.is_none() => {
                        s.status = Status::Gone;
                        self.silent_skips += 1;
                    }
                    Status::Queued => panic!("{skipped} skipped, {id} handed out before it"),
                    _ => {}
                }
            }
            let _ = self.silent_budget(q);
            floor = id + 1;
            let item = &mut self.items[id];
            item.status = Status::InFlight;
            item.outcome = None;
            self.in_flight.push((r.seq, id));
        }
    }

    /// Takes in every acknowledgement that resolved.
    fn poll_acks(&mut self) {
        for id in 0..self.items.len() {
            let Some(outcome) = self.items[id].ack.as_mut().and_then(Ack::try_outcome) else { continue };
            self.items[id].ack = None;
            if outcome == Delivery::Evicted {
                assert_eq!(self.items[id].status, Status::Queued, "{id} evicted while not waiting");
                self.items[id].status = Status::Gone;
                self.acked_evictions += 1;
                continue;
            }
            let item = &self.items[id];
            assert_eq!(item.status, Status::Done, "{id} acknowledged without being completed");
            assert_eq!(item.outcome.as_ref(), Some(&outcome), "{id} acknowledged with another outcome");
            assert!(
                self.in_flight.iter().all(|(_, earlier)| *earlier > id),
                "{id} committed while an earlier record is in flight"
            );
            self.items[id].committed = true;
        }
    }

    fn check_bounds(&self, q: &DurableQueue, dir: &Path) {
        let s = q.stats();
        assert_eq!(s.corrupt, 0);
        if self.setup.disk {
            assert!(s.disk_bytes <= self.setup.max_disk, "disk {} > {}", s.disk_bytes, self.setup.max_disk);
            assert!(s.memory_bytes <= self.setup.max_memory, "memory {}", s.memory_bytes);
            let files: u64 =
                segment::list(dir).unwrap().iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
            assert_eq!(s.disk_bytes, files, "disk bytes match the files");
        } else {
            assert!(s.memory_bytes <= self.setup.max_disk);
            assert_eq!(s.disk_bytes, 0);
        }
    }

    /// The queue goes away (with or without persist); what it held is replayed, or lost without a disk.
    fn reopened(&mut self, evicted_in_run: u64, clean: bool) {
        self.silent_evictions_before += evicted_in_run - self.acked_evictions;
        self.acked_evictions = 0;
        self.in_flight.clear();
        for item in &mut self.items {
            item.status = match item.status {
                _ if !self.setup.disk => Status::Gone,
                Status::Queued | Status::InFlight => Status::Queued,
                Status::Done if clean && item.committed => Status::Gone,
                Status::Done | Status::Maybe => Status::Maybe,
                Status::Gone => Status::Gone,
            };
            item.ack = None;
            item.outcome = None;
            item.committed = false;
        }
    }
}

/// Leaves the first `cut` bytes of one more frame at the end of the newest segment.
fn tear_newest_segment(dir: &Path, cut: usize) {
    use std::io::Write;
    let Some((_, last)) = segment::list(dir).unwrap().pop() else { return };
    let scratch = tempfile::NamedTempFile::new().unwrap();
    segment::append(scratch.as_file(), u64::MAX / 2, 1, &payload(0, 200)).unwrap();
    let frame = std::fs::read(scratch.path()).unwrap();
    let len = frame.len();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&frame[..cut.min(len - 1)]).unwrap();
}

fn run(setup: Setup, actions: Vec<Action>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model {
        setup,
        items: Vec::new(),
        in_flight: Vec::new(),
        acked_evictions: 0,
        silent_evictions_before: 0,
        silent_skips: 0,
    };
    let opts = m.opts(dir.path());
    let mut q = DurableQueue::open(opts.clone()).unwrap();
    for action in actions {
        match action {
            Action::Push { size } => {
                let id = m.items.len();
                let (tx, ack) = Ack::pair();
                match q.try_push(payload(id, size), items_of(id), Some(tx)) {
                    Ok(()) => m.items.push(Item {
                        size,
                        status: Status::Queued,
                        ack: Some(ack),
                        outcome: None,
                        committed: false,
                    }),
                    Err(PushError::Full(_)) => {}
                    Err(PushError::Other(e)) => panic!("push: {e}"),
                }
            }
            Action::Next { max_items } => {
                if !m.maybe_ready() {
                    continue;
                }
                let wait = if m.ready_for_sure() { Duration::from_secs(10) } else { Duration::from_millis(5) };
                let next = rt.block_on(async {
                    tokio::time::timeout(wait, q.next(usize::MAX, max_items, Duration::ZERO)).await
                });
                match next {
                    Ok(Some(records)) => m.delivered(&q, records),
                    Ok(None) => panic!("next returned None on an open queue"),
                    Err(_) => assert!(!m.ready_for_sure(), "records were waiting but none was handed out"),
                }
            }
            Action::Complete { pick, accept } => {
                if m.in_flight.is_empty() {
                    continue;
                }
                let (seq, id) = m.in_flight.remove(pick % m.in_flight.len());
                let outcome = if accept { Delivery::Accepted } else { Delivery::Rejected("refused".into()) };
                m.items[id].status = Status::Done;
                m.items[id].outcome = Some(outcome.clone());
                q.complete(seq, outcome);
            }
            Action::Release { pick } => {
                if m.in_flight.is_empty() {
                    continue;
                }
                let (seq, id) = m.in_flight.remove(pick % m.in_flight.len());
                m.items[id].status = Status::Queued;
                q.release(seq);
            }
            Action::Crash | Action::CrashMidAppend { .. } | Action::Restart => {
                let clean = matches!(action, Action::Restart);
                if clean {
                    q.persist().unwrap();
                }
                m.poll_acks();
                let evicted = q.stats().evicted;
                drop(q);
                if let (Action::CrashMidAppend { cut }, true) = (&action, m.setup.disk) {
                    tear_newest_segment(dir.path(), *cut);
                }
                m.reopened(evicted, clean);
                q = DurableQueue::open(opts.clone()).unwrap();
            }
        }
        m.poll_acks();
        m.check_bounds(&q, dir.path());
    }
    // Everything not evicted or committed must still come out, in order.
    q.persist().unwrap();
    m.poll_acks();
    let evicted = q.stats().evicted;
    drop(q);
    m.reopened(evicted, true);
    let q = DurableQueue::open(opts).unwrap();
    q.close();
    while let Some(records) = rt.block_on(q.next(usize::MAX, 16, Duration::ZERO)) {
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        m.delivered(&q, records);
        for seq in seqs {
            q.complete(seq, Delivery::Accepted);
        }
    }
    let left = m.items.iter().filter(|i| i.status == Status::Queued).count() as u64;
    assert!(left <= m.silent_budget(&q), "{left} records were never replayed");
    assert_eq!(q.stats().records, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn nothing_acknowledged_is_lost_and_nothing_unpushed_is_delivered(
        setup in setup(),
        actions in prop::collection::vec(action(), 1..150),
    ) {
        run(setup, actions);
    }
}
