//! Model-based test: the real tailer and a model of what was written go through the same random
//! sequence of writes, rotations, copytruncates, deletions and restarts (some with
//! acknowledgements withheld). Preconditions model what no tailer can do: a file is rotated or
//! deleted only after the tailer opened it (the kubelet rotates at 10 MiB), a deleted file's lines
//! are read before the agent stops, and a copytruncate happens once the tailer caught up.
//! Invariants: every line written is delivered at least once; within
//! one run of the tailer each file's lines arrive in order without duplicates; and when every
//! acknowledgement was granted, every line is delivered exactly once.
//!
//! CI runs 12 cases (`PROPTEST_CASES` overrides). The long mode, `LGTM_MODEL_CASES=2000 cargo
//! test -p lgtm-daemonset --test model -- --nocapture`, runs that many cases of up to 30 actions
//! and prints what they did every 100 cases.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Write { c: usize, n: u64 },
    Rotate { c: usize },
    Truncate { c: usize },
    Delete { c: usize },
    Restart { hold_acks: bool },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => (0..2usize, 1..40u64).prop_map(|(c, n)| Action::Write { c, n }),
        1 => (0..2usize).prop_map(|c| Action::Rotate { c }),
        1 => (0..2usize).prop_map(|c| Action::Truncate { c }),
        1 => (0..2usize).prop_map(|c| Action::Delete { c }),
        1 => any::<bool>().prop_map(|hold_acks| Action::Restart { hold_acks }),
    ]
}

/// What the model knows of one container: its generations of content (a rotation, truncation or
/// deletion starts a new one) and the lines written to each.
struct Container {
    dir: PathBuf,
    gen: u32,
    written: BTreeMap<u32, u64>,
}

impl Container {
    fn live(&self) -> PathBuf {
        self.dir.join("0.log")
    }
    fn line(c: usize, gen: u32, i: u64) -> String {
        format!("c{c}g{gen}-{i}")
    }
}

struct World {
    env: Env,
    containers: Vec<Container>,
    clock: u64,
    rotations: u64,
    held_any: bool,
    /// The last line of each deleted generation not yet known to be delivered.
    deleted_unread: Vec<String>,
}

impl World {
    fn write(&mut self, c: usize, n: u64) {
        let k = &mut self.containers[c];
        let from = *k.written.get(&k.gen).unwrap_or(&0);
        let mut text = String::new();
        for i in from..from + n {
            self.clock += 1;
            text.push_str(&cri(self.clock, &Container::line(c, k.gen, i)));
        }
        append(&k.live(), &text);
        k.written.insert(k.gen, from + n);
    }

    fn delivered(&self, line: &str) -> bool {
        self.env.sink.lines().iter().any(|l| l == line)
    }

    /// A deleted file lives on only in the tailer's descriptor: what it did not read before the
    /// agent stops is gone (inherent; a restart cannot find the file again). Wait for it.
    async fn settle_deleted(&mut self) {
        for l in std::mem::take(&mut self.deleted_unread) {
            eventually(10, &l, || self.delivered(&l)).await;
        }
    }

    async fn all_of_current_gen_delivered(&self, c: usize) {
        let k = &self.containers[c];
        let n = *k.written.get(&k.gen).unwrap_or(&0);
        if n > 0 {
            let last = Container::line(c, k.gen, n - 1);
            eventually(10, &last, || self.delivered(&last)).await;
        }
    }
}

/// Cases run and actions taken (writes, rotations, truncations, deletions, restarts), for the
/// long mode's report.
static DONE: [std::sync::atomic::AtomicU64; 6] = [const { std::sync::atomic::AtomicU64::new(0) }; 6];

fn long_mode_cases() -> Option<u32> {
    std::env::var("LGTM_MODEL_CASES").ok().and_then(|v| v.parse().ok())
}

fn count(actions: &[Action]) {
    use std::sync::atomic::Ordering::Relaxed;
    let cases = DONE[0].fetch_add(1, Relaxed) + 1;
    for a in actions {
        let i = match a {
            Action::Write { .. } => 1,
            Action::Rotate { .. } => 2,
            Action::Truncate { .. } => 3,
            Action::Delete { .. } => 4,
            Action::Restart { .. } => 5,
        };
        DONE[i].fetch_add(1, Relaxed);
    }
    if long_mode_cases().is_some() && cases.is_multiple_of(100) {
        let d: Vec<u64> = DONE.iter().map(|c| c.load(Relaxed)).collect();
        println!(
            "model: {} cases passed; actions: {} writes, {} rotations, {} copytruncates, {} deletions, {} restarts",
            d[0], d[1], d[2], d[3], d[4], d[5]
        );
    }
}

async fn run_case(actions: Vec<Action>) {
    let taken = actions.clone();
    let env = Env::new();
    let containers = (0..2)
        .map(|c| {
            let dir = env.container_dir("model", "pod", &format!("c{c}"));
            Container { dir, gen: 0, written: BTreeMap::new() }
        })
        .collect();
    let mut w = World { env, containers, clock: 0, rotations: 0, held_any: false, deleted_unread: Vec::new() };
    for c in 0..2 {
        w.write(c, 1);
    }
    let mut running = Some(w.env.start());
    for a in actions {
        match a {
            Action::Write { c, n } => w.write(c, n),
            Action::Rotate { c } => {
                // The kubelet rotates files the tailer has long opened (10 MiB by default).
                let live = w.containers[c].live();
                eventually(10, "file opened before rotation", || fd_open_on(&live)).await;
                w.rotations += 1;
                let rotated = w.containers[c].dir.join(format!("0.log.2024010100{:04}", w.rotations));
                std::fs::rename(&live, &rotated).unwrap();
                append(&live, "");
                w.containers[c].gen += 1;
            }
            Action::Truncate { c } => {
                // copytruncate loses what was not read before the truncation (inherent), and a
                // truncation is only visible while the file is shorter than the read offset: let
                // the tailer catch up before, and see one short line after.
                let k = &w.containers[c];
                if *k.written.get(&k.gen).unwrap_or(&0) < 3 {
                    continue;
                }
                w.all_of_current_gen_delivered(c).await;
                std::fs::OpenOptions::new().write(true).open(w.containers[c].live()).unwrap().set_len(0).unwrap();
                w.containers[c].gen += 1;
                w.write(c, 1);
                w.all_of_current_gen_delivered(c).await;
            }
            Action::Delete { c } => {
                let live = w.containers[c].live();
                eventually(10, "file opened before deletion", || fd_open_on(&live)).await;
                std::fs::remove_file(&live).unwrap();
                let k = &w.containers[c];
                if let Some(&n) = k.written.get(&k.gen) {
                    w.deleted_unread.push(Container::line(c, k.gen, n - 1));
                }
                w.containers[c].gen += 1;
                append(&live, "");
            }
            Action::Restart { hold_acks } => {
                w.settle_deleted().await;
                running.take().unwrap().stop().await;
                w.held_any |= hold_acks;
                w.env.sink.set_mode(if hold_acks { AckMode::Never } else { AckMode::All });
                running = Some(w.env.start());
            }
        }
    }
    // A last run with every acknowledgement granted, if the current one withholds them.
    if w.held_any {
        w.settle_deleted().await;
        running.take().unwrap().stop().await;
        w.env.sink.set_mode(AckMode::All);
        running = Some(w.env.start());
    }
    for c in 0..2 {
        w.all_of_current_gen_delivered(c).await;
    }
    let all: Vec<String> = w
        .containers
        .iter()
        .enumerate()
        .flat_map(|(c, k)| k.written.iter().flat_map(move |(&g, &n)| (0..n).map(move |i| Container::line(c, g, i))))
        .collect();
    eventually(15, "every line delivered", || {
        let got = multiplicity(&w.env.sink.lines());
        all.iter().all(|l| got.contains_key(l))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    running.take().unwrap().stop().await;

    let got = w.env.sink.got();
    // In order and without duplicates within each run, per file generation.
    let mut last: BTreeMap<(usize, String), i64> = BTreeMap::new();
    for g in &got {
        let (file, idx) = g.line.rsplit_once('-').expect("model lines only");
        let idx: i64 = idx.parse().unwrap();
        let prev = last.insert((g.run, file.to_string()), idx);
        assert!(prev.is_none_or(|p| p < idx), "run {}: {} after index {:?}", g.run, g.line, prev);
    }
    let m = multiplicity(&got.iter().map(|g| g.line.clone()).collect::<Vec<_>>());
    for l in &all {
        let n = m.get(l).copied().unwrap_or(0);
        assert!(n >= 1, "{l} lost");
        if !w.held_any {
            assert_eq!(n, 1, "{l} delivered {n} times with every ack granted");
        }
    }
    assert_eq!(m.len(), all.len(), "nothing delivered that was not written");
    count(&taken);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: long_mode_cases()
            .or_else(|| std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()))
            .unwrap_or(12),
        max_shrink_iters: 20,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nothing_written_is_lost_and_acked_lines_are_not_repeated(
        actions in proptest::collection::vec(action(), 1..if long_mode_cases().is_some() { 30 } else { 14 })
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(actions));
    }
}
