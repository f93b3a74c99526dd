//! CRI parsing throughput: the bare line parser, and the whole per-file path (reader split,
//! decode, protobuf encoding into a batch).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lgtm_daemonset::logs::batch::{BatchBuilder, StreamRef};
use lgtm_daemonset::logs::cri;
use lgtm_daemonset::logs::format::{Decoder, PhysicalLine};

fn sample() -> Vec<u8> {
    let mut text = String::new();
    for i in 0..10_000u32 {
        let msg = match i % 4 {
            0 => format!("GET /api/v1/items/{i} 200 {}us user-agent=\"curl/8.5\"", i * 7),
            1 => format!("{{\"level\":\"info\",\"msg\":\"processed batch\",\"n\":{i},\"took_ms\":{}}}", i % 97),
            2 => format!("level=warn ts=2024-01-01T00:00:00Z caller=main.go:{i} msg=\"slow request\""),
            _ => "short".to_string(),
        };
        let tag = if i % 50 == 0 { "P" } else { "F" };
        let stream = if i % 3 == 0 { "stderr" } else { "stdout" };
        text.push_str(&format!("2024-01-01T00:00:{:02}.{:09}Z {stream} {tag} {msg}\n", i % 60, i));
    }
    text.into_bytes()
}

fn bench(c: &mut Criterion) {
    let data = sample();
    let mut g = c.benchmark_group("cri");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("parse_lines", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for line in memchr::memchr_iter(b'\n', &data).scan(0usize, |start, nl| {
                let l = &data[*start..nl];
                *start = nl + 1;
                Some(l)
            }) {
                if let Ok(l) = cri::parse(line) {
                    n += l.message.len();
                }
            }
            black_box(n)
        })
    });
    let stream = StreamRef {
        id: 1,
        labels: Arc::from(r#"{cluster="c", container="app", job="ns/app", namespace="ns", node="n", pod="p"}"#),
    };
    let mut batch = BatchBuilder::new();
    g.bench_function("decode_and_encode", |b| {
        b.iter(|| {
            let mut dec = Decoder::new(256 * 1024);
            let mut start = 0usize;
            for nl in memchr::memchr_iter(b'\n', &data) {
                let line = PhysicalLine { bytes: &data[start..nl], start: start as u64, complete: true };
                dec.push(line, || 0, &mut |e| batch.push(&stream, &e));
                start = nl + 1;
            }
            black_box(batch.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
