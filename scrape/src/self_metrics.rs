//! The scraper's own families on the agent's `/metrics`.

use std::sync::LazyLock;

use lgtm_pipeline::metrics::{counter_vec, int_gauge_vec};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};

pub(crate) struct ScrapeMetrics {
    /// Scrapes by job and result (`success` or the failure's reason).
    pub scrapes: IntCounterVec,
    /// Samples handed to the pipeline after metric relabeling.
    pub samples: IntCounterVec,
    /// Active targets per job.
    pub targets: IntGaugeVec,
    /// Scrapes that failed on a malformed body.
    pub parse_errors: IntCounterVec,
}

pub(crate) fn metrics() -> &'static ScrapeMetrics {
    static M: LazyLock<ScrapeMetrics> = LazyLock::new(|| ScrapeMetrics {
        scrapes: counter_vec("lgtm_agent_scrapes_total", "Scrapes by job and result.", &["job", "result"]),
        samples: counter_vec(
            "lgtm_agent_scrape_samples_total",
            "Samples scraped and kept after metric relabeling.",
            &["job"],
        ),
        targets: int_gauge_vec("lgtm_agent_scrape_targets", "Targets being scraped.", &["job"]),
        parse_errors: counter_vec(
            "lgtm_agent_scrape_parse_errors_total",
            "Scrapes that failed on a malformed body.",
            &["job"],
        ),
    });
    &M
}

/// The counters of one job, resolved once per loop. Scrapes are counted with
/// [`count_scrape`], by result.
#[derive(Clone)]
pub(crate) struct JobCounters {
    pub samples: IntCounter,
    pub parse_errors: IntCounter,
}

impl JobCounters {
    pub fn new(job: &str) -> JobCounters {
        let m = metrics();
        JobCounters {
            samples: m.samples.with_label_values(&[job]),
            parse_errors: m.parse_errors.with_label_values(&[job]),
        }
    }
}

/// Counts a scrape of `job` by its `result` (`success` or the failure's reason). Takes the job
/// rather than keeping a copy of its name in every loop.
pub(crate) fn count_scrape(job: &str, result: &str) {
    metrics().scrapes.with_label_values(&[job, result]).inc();
}
