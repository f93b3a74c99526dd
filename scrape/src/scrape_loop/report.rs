//! The synthetic series of every scrape: `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`, `scrape_series_added`,
//! each with the target's labels.

use lgtm_pipeline::proto::{stale_nan, Label};

use crate::encode::{encode_labels, BatchBuilder};
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

/// The encoded label sets of the five series, built once per target.
pub(crate) struct ReportSeries {
    labels: [Box<[u8]>; 5],
}

impl ReportSeries {
    pub fn new(target_labels: &LabelSet, external_labels: &[Label]) -> ReportSeries {
        let labels = NAMES.map(|name| {
            let mut set = target_labels.clone();
            set.set("__name__", name);
            encode_labels(&set, external_labels)
        });
        ReportSeries { labels }
    }

    fn push(&self, values: [f64; 5], ts_ms: i64, out: &mut BatchBuilder) {
        for (labels, value) in self.labels.iter().zip(values) {
            out.push(labels, value, ts_ms);
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
