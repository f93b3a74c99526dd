//! The remote-write exporter's walk over a queued record: routing each encoded series to its
//! shard (a hash of its labels) and counting its samples, on a record of 2,000 series shaped as
//! the scrape bench's (name, 4 labels, `instance`, `job`, `cluster`; one sample each). Against
//! the walk before (`before::route_series`: each label opened, its name and value hashed in four
//! streaming updates), kept here as the reference.
//!
//! ```text
//! cargo bench -p lgtm-pipeline --bench remote_write
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lgtm_pipeline::exporter::remote_write::wire::route_series;
use lgtm_pipeline::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;

const SERIES: usize = 2_000;

fn record() -> Vec<u8> {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let timeseries = (0..SERIES)
        .map(|i| TimeSeries {
            labels: vec![
                Label::new("__name__", format!("bench_app_family_{}_total", i / 50)),
                Label::new("cluster", "bench"),
                Label::new("code", ["200", "201", "404", "500", "503"][i % 5]),
                Label::new("handler", format!("/api/v1/items/{}", i % 13)),
                Label::new("instance", "127.0.0.1:40123"),
                Label::new("job", "lgtm"),
                Label::new("method", methods[i % 4]),
                Label::new("series", i.to_string()),
            ],
            samples: vec![Sample { value: i as f64, timestamp: 1_700_000_000_000 }],
        })
        .collect();
    WriteRequest { timeseries }.encode_to_vec()
}

fn route(c: &mut Criterion) {
    let record = record();
    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("route_2k_series_4_shards", |b| {
        let mut routed = Vec::with_capacity(SERIES);
        b.iter(|| {
            routed.clear();
            route_series(std::hint::black_box(&record), 4, &mut routed).expect("valid record");
            routed.len()
        })
    });
    group.bench_function("route_2k_series_4_shards_before", |b| {
        let mut routed = Vec::with_capacity(SERIES);
        b.iter(|| {
            routed.clear();
            before::route_series(std::hint::black_box(&record), 4, &mut routed);
            routed.len()
        })
    });
    group.finish();
}

/// The walk as it was, for comparison (valid input only: errors end it).
mod before {
    use xxhash_rust::xxh3::Xxh3;

    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }

    fn len_delimited(buf: &[u8], pos: &mut usize) -> std::ops::Range<usize> {
        let len = varint(buf, pos) as usize;
        let start = *pos;
        *pos += len;
        start..*pos
    }

    pub fn route_series(buf: &[u8], shards: usize, out: &mut Vec<(usize, std::ops::Range<usize>, u64)>) {
        let mut pos = 0;
        while pos < buf.len() {
            let entry_start = pos;
            varint(buf, &mut pos);
            let series = len_delimited(buf, &mut pos);
            let ts = &buf[series];
            let mut h = Xxh3::new();
            let mut samples = 0u64;
            let mut p = 0;
            while p < ts.len() {
                let field = varint(ts, &mut p) >> 3;
                let range = len_delimited(ts, &mut p);
                if field == 2 {
                    samples += 1;
                    continue;
                }
                let label = &ts[range];
                let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                let mut q = 0;
                while q < label.len() {
                    let f = varint(label, &mut q) >> 3;
                    let r = len_delimited(label, &mut q);
                    if f == 1 {
                        name = &label[r];
                    } else {
                        value = &label[r];
                    }
                }
                h.update(name);
                h.update(&[0xff]);
                h.update(value);
                h.update(&[0xff]);
            }
            out.push(((h.digest() % shards as u64) as usize, entry_start..pos, samples));
        }
    }
}

criterion_group!(benches, route);
criterion_main!(benches);
