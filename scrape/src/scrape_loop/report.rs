//! The synthetic series of every scrape: `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`, `scrape_series_added`,
//! each with the target's labels.

use std::sync::LazyLock;

use lgtm_pipeline::proto::{stale_nan, Label};

use crate::encode::{put_label, with_external, BatchBuilder};
use crate::labels::LabelSet;

const NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// What one scrape reports about itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    pub up: bool,
    pub duration_seconds: f64,
    pub samples_scraped: usize,
    pub samples_post_relabel: usize,
    pub series_added: usize,
}

/// The `__name__` labels of the five series, encoded once per process.
fn encoded_names() -> &'static [Box<[u8]>; 5] {
    static ENCODED: LazyLock<[Box<[u8]>; 5]> = LazyLock::new(|| {
        NAMES.map(|name| {
            let mut buf = Vec::new();
            put_label(&mut buf, "__name__", name);
            buf.into_boxed_slice()
        })
    });
    &ENCODED
}

/// The labels of the five series: the target's labels (with the external labels) encoded
/// once, and where `__name__` goes among them. Built for each scrape: kept, they were memory
/// every target held between scrapes (five encoded copies, one per name, were 1.3 KiB for a
/// typical Kubernetes target; one is a fifth of it, as the
/// `the_five_series_are_encoded_as_whole_label_sets_would_be` test measures), for an encoding
/// of a few labels that costs far less than the scrape it ends.
pub(crate) struct ReportSeries {
    labels: Vec<u8>,
    /// Bytes of `labels` that sort before `__name__`.
    name_at: usize,
}

impl ReportSeries {
    pub fn new(target_labels: &LabelSet, external_labels: &[Label]) -> ReportSeries {
        let mut set = with_external(target_labels, external_labels).into_owned();
        set.remove("__name__");
        let (before, after) = set.as_slice().split_at(set.as_slice().partition_point(|l| l.name.as_str() < "__name__"));
        let mut labels = Vec::new();
        for l in before {
            put_label(&mut labels, &l.name, &l.value);
        }
        let name_at = labels.len();
        for l in after {
            put_label(&mut labels, &l.name, &l.value);
        }
        ReportSeries { labels, name_at }
    }

    fn push(&self, values: [f64; 5], ts_ms: i64, out: &mut BatchBuilder) {
        let (before, after) = self.labels.split_at(self.name_at);
        for (name, value) in encoded_names().iter().zip(values) {
            out.push_parts(&[before, name, after], value, ts_ms);
        }
    }

    pub fn samples(&self, report: &Report, ts_ms: i64, out: &mut BatchBuilder) {
        let values = [
            if report.up { 1.0 } else { 0.0 },
            report.duration_seconds,
            report.samples_scraped as f64,
            report.samples_post_relabel as f64,
            report.series_added as f64,
        ];
        self.push(values, ts_ms, out);
    }

    /// Staleness markers for the five series (the target went away).
    pub fn stale(&self, ts_ms: i64, out: &mut BatchBuilder) {
        self.push([stale_nan(); 5], ts_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_labels;

    /// The five series one by one, each label set encoded whole (what `ReportSeries` held).
    fn encoded_whole(target_labels: &LabelSet, external: &[Label], values: [f64; 5]) -> Vec<u8> {
        let mut out = BatchBuilder::default();
        for (name, value) in NAMES.iter().zip(values) {
            let mut set = target_labels.clone();
            set.set("__name__", *name);
            out.push(&encode_labels(&set, external), value, 1_700_000_000_000);
        }
        out.finish().bytes().to_vec()
    }

    #[test]
    fn the_five_series_are_encoded_as_whole_label_sets_would_be() {
        let pod = LabelSet::from_pairs([
            ("container", "checkout-api"),
            ("endpoint", "http-metrics"),
            ("instance", "10.42.3.17:8080"),
            ("job", "serviceMonitor/shop/checkout-api/0"),
            ("namespace", "shop"),
            ("pod", "checkout-api-7d9f8b6c5-x2x9q"),
            ("service", "checkout-api"),
        ]);
        let cluster = [Label::new("cluster", "prod-eu-west-1")];
        let cases: [(LabelSet, &[Label]); 5] = [
            (pod.clone(), &cluster),
            (LabelSet::new(), &[]),
            // Upper-case names sort before `__name__`, others after.
            (LabelSet::from_pairs([("Zone", "a"), ("AZ", "b"), ("job", "j")]), &[]),
            (LabelSet::from_pairs([("Zone", "a")]), &[]),
            // A `__name__` among the target's or the external labels is replaced.
            (
                LabelSet::from_pairs([("__name__", "x"), ("job", "j")]),
                &[Label::new("__name__", "e"), Label::new("job", "e")],
            ),
        ];
        let values = [1.0, 0.25, 100.0, 90.0, 3.0];
        for (labels, external) in cases {
            let report = ReportSeries::new(&labels, external);
            let mut out = BatchBuilder::default();
            report.push(values, 1_700_000_000_000, &mut out);
            assert_eq!(out.finish().bytes().to_vec(), encoded_whole(&labels, external, values), "{labels}");
        }

        let five: usize = NAMES
            .iter()
            .map(|name| {
                let mut set = pod.clone();
                set.set("__name__", *name);
                encode_labels(&set, &cluster).len()
            })
            .sum();
        let one = ReportSeries::new(&pod, &cluster).labels.len();
        // Measured: 1,338 bytes in five allocations before, 233 in one after.
        assert!(one < five / 5, "one encoding is {one} bytes, five were {five}");
    }
}
