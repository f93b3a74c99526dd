//! Cost per series of the scrape hot path on a 10k-series body: parsing alone (both formats),
//! and parse + cache + output for an unchanged body (cache hit) and a new target (cache miss).

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lgtm_scrape::parser::{Entry, Format, Parser};
use lgtm_scrape::relabel::Relabeler;
use lgtm_scrape::target::populate;
use lgtm_scrape::{BodyIngester, ScrapeOptions};

const SERIES: usize = 10_000;

fn body(format: Format) -> Vec<u8> {
    let mut out = String::from("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
    for i in 0..SERIES {
        out.push_str(&format!(
            "http_requests_total{{method=\"GET\",code=\"{}\",handler=\"/api/v1/query\",pod=\"app-{}\"}} {}.5\n",
            200 + i % 5,
            i,
            i
        ));
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out.into_bytes()
}

fn ingester() -> BodyIngester {
    let discovered = BTreeMap::from([("__address__".to_string(), "bench:9100".to_string())]);
    let options = Arc::new(ScrapeOptions::default());
    let target = populate(&discovered, &BTreeMap::new(), &options, &Relabeler::default(), "bench")
        .expect("valid target")
        .expect("kept");
    BodyIngester::new(Arc::new(target), vec![lgtm_pipeline::proto::Label::new("cluster", "bench")])
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(SERIES as u64));
    for (name, format) in [("text_10k", Format::Text), ("openmetrics_10k", Format::OpenMetrics)] {
        let body = body(format);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for entry in Parser::new(black_box(&body), format) {
                    if let Ok(Entry::Series(s)) = entry {
                        sum += s.value;
                    }
                }
                sum
            })
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(SERIES as u64));
    let body = body(Format::Text);
    group.bench_function("cache_hit_10k", |b| {
        let mut ingester = ingester();
        ingester.ingest(&body, Format::Text, 0).expect("valid body");
        let mut ts = 0;
        b.iter(|| {
            ts += 1;
            ingester.ingest(black_box(&body), Format::Text, ts).expect("valid body").samples()
        })
    });
    group.bench_function("cache_miss_10k", |b| {
        b.iter_batched(
            ingester,
            |mut ingester| ingester.ingest(black_box(&body), Format::Text, 0).expect("valid body").samples(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse, ingest);
criterion_main!(benches);
