//! The scraper's own families on the agent's `/metrics`: scrapes by job and result, samples,
//! parse errors and targets by job.
//!
//! Kept per job in a [`JobMetrics`] of our own, shared by the job's loops, and rendered by a
//! collector registered on the agent's registry, rather than as children of the `prometheus`
//! crate's vectors: each child keeps a copy of its family's description (name, help, label
//! names) and its label pairs, about 400 bytes, and a job had up to a dozen of them (one per
//! family and scrape result), kilobytes per job where cluster mode has a job per
//! ServiceMonitor endpoint. What `/metrics` shows is unchanged: the same families, and the
//! same series from the same moment (a job's `samples` and `parse_errors` from its first loop,
//! `scrapes` by result from the first scrape with that result, `targets` from the first time
//! the manager counted the job's targets).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The results a scrape is counted by: `success`, then every [`crate::ScrapeError::reason`].
const RESULTS: [&str; 9] = [
    "success",
    "request_error",
    "tls_config",
    "http_status",
    "timeout",
    "body_too_large",
    "parse_error",
    "sample_limit",
    "label_limit",
];

/// The counters and gauge of one job, one per job for the process's life (as the children of
/// a metric vector were), shared by the job's loops.
pub(crate) struct JobMetrics {
    job: Arc<str>,
    /// Scrapes by result, in the order of [`RESULTS`]; a result is shown once counted.
    scrapes: [AtomicU64; RESULTS.len()],
    /// Samples handed to the pipeline after metric relabeling.
    samples: AtomicU64,
    /// Scrapes that failed on a malformed body.
    parse_errors: AtomicU64,
    /// Samples of a series already seen in the same scrape (counted, not sent).
    duplicates: AtomicU64,
    /// A repeated series was logged for the job (once per job).
    warned_duplicates: AtomicBool,
    /// `samples` and `parse_errors` are shown (a loop of the job was made).
    counted: AtomicBool,
    /// Active targets of the job.
    targets: AtomicI64,
    /// `targets` is shown (the manager counted the job's targets).
    gauged: AtomicBool,
}

/// Every job's metrics, by job.
static JOBS: LazyLock<Mutex<BTreeMap<Arc<str>, Arc<JobMetrics>>>> = LazyLock::new(|| {
    lgtm_pipeline::metrics::register(Families::new());
    Mutex::default()
});

fn jobs() -> std::sync::MutexGuard<'static, BTreeMap<Arc<str>, Arc<JobMetrics>>> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobMetrics {
    /// The metrics of `job`, made on first use.
    fn of(job: &str) -> Arc<JobMetrics> {
        let mut jobs = jobs();
        if let Some(m) = jobs.get(job) {
            return m.clone();
        }
        let job: Arc<str> = job.into();
        let m = Arc::new(JobMetrics {
            job: job.clone(),
            scrapes: Default::default(),
            samples: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            warned_duplicates: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            targets: AtomicI64::new(0),
            gauged: AtomicBool::new(false),
        });
        jobs.insert(job, m.clone());
        m
    }

    /// The counters a loop of `job` counts its scrapes with; from now on `/metrics` shows the
    /// job's samples and parse errors, if only as 0.
    pub fn for_loop(job: &str) -> Arc<JobMetrics> {
        let m = JobMetrics::of(job);
        m.counted.store(true, Ordering::Relaxed);
        m
    }

    /// Sets the number of targets of `job` (shown from the first call on); returns the job's
    /// metrics, for a later call to [`JobMetrics::set_targets`].
    pub fn targets_of(job: &str, n: i64) -> Arc<JobMetrics> {
        let m = JobMetrics::of(job);
        m.set_targets(n);
        m
    }

    pub fn set_targets(&self, n: i64) {
        self.targets.store(n, Ordering::Relaxed);
        self.gauged.store(true, Ordering::Relaxed);
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// Counts a successful scrape that kept `samples`.
    pub fn success(&self, samples: usize) {
        self.samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.scrapes[0].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` samples of series repeated within one scrape of `target`; the first time for
    /// the job, says so in the log.
    pub fn duplicates(&self, n: usize, target: &str) {
        self.duplicates.fetch_add(n as u64, Ordering::Relaxed);
        if !self.warned_duplicates.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                job = %self.job,
                target,
                samples = n,
                "a scrape repeats series: the first sample of each is sent, the others counted in \
                 lgtm_agent_scrape_duplicate_samples_total (logged once per job)"
            );
        }
    }

    /// Counts a failed scrape by its `reason` ([`crate::ScrapeError::reason`]).
    pub fn failure(&self, reason: &str) {
        let i = RESULTS.iter().position(|r| *r == reason);
        debug_assert!(i.is_some(), "{reason} is missing from RESULTS");
        if let Some(i) = i {
            self.scrapes[i].fetch_add(1, Ordering::Relaxed);
        }
        if reason == "parse_error" {
            self.parse_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The five families, rendered from [`JOBS`].
#[derive(Clone)]
struct Families {
    scrapes: Desc,
    samples: Desc,
    targets: Desc,
    parse_errors: Desc,
    duplicates: Desc,
}

impl Families {
    fn new() -> Families {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            let labels = labels.iter().map(|l| l.to_string()).collect();
            Desc::new(name.into(), help.into(), labels, Default::default()).expect("valid metric definition")
        };
        Families {
            scrapes: desc("lgtm_agent_scrapes_total", "Scrapes by job and result.", &["job", "result"]),
            samples: desc(
                "lgtm_agent_scrape_samples_total",
                "Samples scraped and kept after metric relabeling.",
                &["job"],
            ),
            targets: desc("lgtm_agent_scrape_targets", "Targets being scraped.", &["job"]),
            parse_errors: desc(
                "lgtm_agent_scrape_parse_errors_total",
                "Scrapes that failed on a malformed body.",
                &["job"],
            ),
            duplicates: desc(
                "lgtm_agent_scrape_duplicate_samples_total",
                "Samples of a series already in the same scrape: counted in scrape_samples_post_metric_relabeling \
                 as Prometheus does, not sent (the first is).",
                &["job"],
            ),
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.into());
    pair.set_value(value.into());
    pair
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for Families {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.scrapes, &self.samples, &self.targets, &self.parse_errors, &self.duplicates]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (mut scrapes, mut samples, mut targets, mut parse_errors, mut duplicates) =
            (vec![], vec![], vec![], vec![], vec![]);
        for m in jobs().values() {
            let job = || label("job", &m.job);
            for (result, n) in RESULTS.iter().zip(&m.scrapes) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    scrapes.push(counter(vec![job(), label("result", result)], n));
                }
            }
            if m.counted.load(Ordering::Relaxed) {
                samples.push(counter(vec![job()], m.samples.load(Ordering::Relaxed)));
                parse_errors.push(counter(vec![job()], m.parse_errors.load(Ordering::Relaxed)));
                duplicates.push(counter(vec![job()], m.duplicates.load(Ordering::Relaxed)));
            }
            if m.gauged.load(Ordering::Relaxed) {
                let mut g = Gauge::default();
                g.set_value(m.targets.load(Ordering::Relaxed) as f64);
                let mut metric = Metric::from_label(vec![job()]);
                metric.set_gauge(g);
                targets.push(metric);
            }
        }
        vec![
            family(&self.scrapes, MetricType::COUNTER, scrapes),
            family(&self.samples, MetricType::COUNTER, samples),
            family(&self.targets, MetricType::GAUGE, targets),
            family(&self.parse_errors, MetricType::COUNTER, parse_errors),
            family(&self.duplicates, MetricType::COUNTER, duplicates),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(job: &str) -> Vec<String> {
        lgtm_pipeline::metrics::render()
            .lines()
            .filter(|l| l.contains(&format!("job=\"{job}")) || (l.starts_with('#') && l.contains("_scrape")))
            .map(String::from)
            .collect()
    }

    /// The text `/metrics` showed when these were children of the `prometheus` crate's vectors.
    #[test]
    fn metrics_render_as_the_prometheus_vectors_did() {
        let m = JobMetrics::for_loop("zz_self");
        m.success(40);
        m.success(2);
        m.failure("parse_error");
        JobMetrics::for_loop("zz_self2");
        JobMetrics::targets_of("zz_self", 3);
        JobMetrics::targets_of("zz_self3", 0);
        JobMetrics::of("zz_self4");
        // The duplicates family is new (issue 18); the rest as before.
        let want = r#"# HELP lgtm_agent_scrape_duplicate_samples_total Samples of a series already in the same scrape: counted in scrape_samples_post_metric_relabeling as Prometheus does, not sent (the first is).
# TYPE lgtm_agent_scrape_duplicate_samples_total counter
lgtm_agent_scrape_duplicate_samples_total{job="zz_self"} 0
lgtm_agent_scrape_duplicate_samples_total{job="zz_self2"} 0
# HELP lgtm_agent_scrape_parse_errors_total Scrapes that failed on a malformed body.
# TYPE lgtm_agent_scrape_parse_errors_total counter
lgtm_agent_scrape_parse_errors_total{job="zz_self"} 1
lgtm_agent_scrape_parse_errors_total{job="zz_self2"} 0
# HELP lgtm_agent_scrape_samples_total Samples scraped and kept after metric relabeling.
# TYPE lgtm_agent_scrape_samples_total counter
lgtm_agent_scrape_samples_total{job="zz_self"} 42
lgtm_agent_scrape_samples_total{job="zz_self2"} 0
# HELP lgtm_agent_scrape_targets Targets being scraped.
# TYPE lgtm_agent_scrape_targets gauge
lgtm_agent_scrape_targets{job="zz_self"} 3
lgtm_agent_scrape_targets{job="zz_self3"} 0
# HELP lgtm_agent_scrapes_total Scrapes by job and result.
# TYPE lgtm_agent_scrapes_total counter
lgtm_agent_scrapes_total{job="zz_self",result="parse_error"} 1
lgtm_agent_scrapes_total{job="zz_self",result="success"} 2"#;
        assert_eq!(rendered("zz_self").join("\n"), want);
    }

    #[test]
    fn every_scrape_error_reason_is_a_result() {
        use crate::ScrapeError;
        let s = String::new;
        let errors = [
            ScrapeError::Request(s()),
            ScrapeError::Status(500),
            ScrapeError::Redirect { status: 302, location: s() },
            ScrapeError::Timeout(std::time::Duration::from_secs(1)),
            ScrapeError::BodyTooLarge(1),
            ScrapeError::Credentials(s()),
            ScrapeError::Tls(s()),
            ScrapeError::DuplicateLabel { line: 1, name: s() },
            ScrapeError::SampleLimit { samples: 2, limit: 1 },
            ScrapeError::LabelLimit(s()),
            ScrapeError::InvalidLabelName { name: s(), series: s() },
        ];
        let reasons: std::collections::BTreeSet<&str> = errors.iter().map(ScrapeError::reason).collect();
        assert_eq!(reasons.len(), RESULTS.len() - 1, "every reason: {reasons:?}");
        assert!(reasons.iter().all(|r| RESULTS[1..].contains(r)), "{reasons:?}");
    }
}
