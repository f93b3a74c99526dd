//! CPU time of one full host metrics collection of this machine (`/`), rendered to text: the
//! target is under 5 ms per scrape.
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

criterion_group!(benches, host_collect);
criterion_main!(benches);
