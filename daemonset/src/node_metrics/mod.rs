//! Host metrics as a scrape target that needs no HTTP: every scrape interval, [`host::render_text`]
//! runs on a blocking thread and its text goes through the scrape crate's [`BodyIngester`], so
//! the series get the target's labels, the sink's external labels, staleness markers and
//! synthetic series exactly as if the agent had scraped a node_exporter.
//!
//! The target is labelled as kube-prometheus labels its node_exporter: `job="node-exporter"`,
//! `instance=<node name>`. Each scrape also yields the five synthetic series of any target
//! (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, `scrape_series_added`), built by the ingester as for
//! HTTP targets. A collection that fails
//! (the host root is unreadable) or outlives the scrape timeout gives `up 0` and staleness
//! markers for the series of the previous scrape. A collection still stuck from an earlier
//! interval (a hung `statfs`) is not started again until it returns.
//!
//! The source keeps a [`LoopStatus`] like a scrape loop's; [`run_host_metrics`] hands it to the
//! caller (the agent lists it on `/targets` through `TargetManager::show`).
//!
//! What it does not: apply relabeling (the config has none for host metrics).
//!
//! [`host::render_text`]: crate::host::render_text

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lgtm_scrape::parser::Format;
use lgtm_scrape::relabel::Relabeler;
use lgtm_scrape::scrape_loop::LoopStatus;
use lgtm_scrape::target::{populate, TargetError};
use lgtm_scrape::{BodyIngester, ScrapeOptions, SeriesSink, Target};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::host;

/// The `job` label of host metrics (kube-prometheus's node_exporter job).
pub const JOB: &str = "node-exporter";

/// How the host is collected and labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSourceOptions {
    /// The host's `/` as mounted here (`scrape.host_metrics.root`).
    pub root: PathBuf,
    /// `instance` label: the node name. Empty: the host's own hostname.
    pub instance: String,
    pub interval: Duration,
    /// A collection taking longer fails the scrape (`up 0`).
    pub timeout: Duration,
    /// Shifts the scrape phase (as the `TargetManager`'s seed does for HTTP targets).
    pub jitter_seed: u64,
}

impl HostSourceOptions {
    /// From the config: `scrape.host_metrics.root`, the global scrape interval and timeout.
    pub fn new(scrape: &lgtm_config::ScrapeConfig, node_name: &str) -> HostSourceOptions {
        let interval = scrape.interval.get();
        HostSourceOptions {
            root: scrape.host_metrics.root.clone(),
            instance: node_name.to_string(),
            interval,
            timeout: scrape.timeout.get().min(interval),
            jitter_seed: 0,
        }
    }

    /// The target the series are labelled with.
    pub fn target(&self) -> Result<Target, TargetError> {
        let instance = if self.instance.is_empty() { hostname(&self.root) } else { self.instance.clone() };
        let options = ScrapeOptions {
            job: JOB.to_string(),
            interval: self.interval,
            timeout: self.timeout,
            ..ScrapeOptions::default()
        };
        let discovered = BTreeMap::from([("__address__".to_string(), instance)]);
        let target =
            populate(&discovered, &BTreeMap::new(), &Arc::new(options), &Relabeler::default(), "host_metrics")?;
        target.ok_or_else(|| TargetError { labels: "host_metrics".into(), message: "dropped".into() })
    }
}

/// The host's name as its kernel knows it, for `instance` when no node name is configured.
fn hostname(root: &Path) -> String {
    std::fs::read_to_string(root.join("proc/sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| "localhost".to_string())
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// One collection on a blocking thread: the text, or why there is none.
type Collection = JoinHandle<(String, Result<(), host::HostError>)>;

/// Scrapes the host every interval into `sink` until `stop` is cancelled. Returns at once if
/// the target cannot be built (a bad `instance`), after logging why. `show` gets the target and
/// its status once, before the first scrape (for the targets page).
pub async fn run_host_metrics<S: SeriesSink>(
    options: HostSourceOptions,
    sink: S,
    show: impl FnOnce(Arc<Target>, Arc<Mutex<LoopStatus>>) + Send,
    stop: CancellationToken,
) {
    let target = match options.target() {
        Ok(t) => Arc::new(t),
        Err(e) => {
            tracing::error!(error = %e, "host metrics not collected");
            return;
        }
    };
    let mut source = HostSource::new(options, target, sink.external_labels());
    show(source.ingester.target().clone(), source.status());
    let offset = source.ingester.target().offset(source.options.jitter_seed, unix_now().as_nanos());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, source.options.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let batch = tokio::select! {
            _ = stop.cancelled() => break,
            batch = source.scrape_once() => batch,
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            sent = sink.send(batch) => if let Err(e) = sent {
                tracing::warn!(error = %e, "the pipeline refused host metrics");
            },
        }
    }
}

/// The state of the host target between scrapes.
pub struct HostSource {
    options: HostSourceOptions,
    ingester: BodyIngester,
    /// The text buffer, reused between collections (absent while a collection holds it).
    text: Option<String>,
    /// A collection that outlived its scrape's timeout and still runs.
    stuck: Option<Collection>,
    status: Arc<Mutex<LoopStatus>>,
}

impl HostSource {
    pub fn new(
        options: HostSourceOptions,
        target: Arc<Target>,
        external_labels: Vec<lgtm_pipeline::proto::Label>,
    ) -> HostSource {
        let ingester = BodyIngester::new(target, external_labels);
        HostSource { options, ingester, text: Some(String::new()), stuck: None, status: Arc::default() }
    }

    /// The outcome of the last scrape, as a scrape loop keeps it.
    pub fn status(&self) -> Arc<Mutex<LoopStatus>> {
        self.status.clone()
    }

    /// Collects the host once and returns the batch to send: the host's series, the synthetic
    /// series, and staleness markers for series gone since the last scrape.
    pub async fn scrape_once(&mut self) -> lgtm_scrape::Batch {
        let started = Instant::now();
        let ts_ms = unix_now().as_millis() as i64;
        match self.collect().await {
            Ok(text) => {
                let (scraped, outcome) = self.ingester.scrape(text.as_bytes(), Format::Text, ts_ms, started);
                self.text = Some(text);
                if let Err(e) = &outcome {
                    // Our own rendering did not parse: a bug, reported as a failed scrape.
                    tracing::error!(error = %e, "host metrics text did not parse");
                }
                let shown = outcome.as_ref().map(|n| *n).map_err(|e| e as &dyn std::fmt::Display);
                self.status.lock().unwrap_or_else(|p| p.into_inner()).record(shown, ts_ms, scraped.duration_seconds);
                scraped.batch
            }
            Err(e) => {
                tracing::warn!(root = %self.options.root.display(), error = %e, "host metrics collection failed");
                let scraped = self.ingester.scrape_failed(ts_ms, started);
                let error = format!("collecting host metrics: {e}");
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.record(Err(&error), ts_ms, scraped.duration_seconds);
                scraped.batch
            }
        }
    }

    async fn collect(&mut self) -> Result<String, CollectError> {
        if let Some(stuck) = &self.stuck {
            if !stuck.is_finished() {
                return Err(CollectError::StillRunning);
            }
            if let Some(stuck) = self.stuck.take() {
                if let Ok((text, _)) = stuck.await {
                    self.text = Some(text);
                }
            }
        }
        let mut text = self.text.take().unwrap_or_default();
        let root = self.options.root.clone();
        let mut task: Collection = tokio::task::spawn_blocking(move || {
            let outcome = host::render_text(&root, &mut text);
            (text, outcome)
        });
        match tokio::time::timeout(self.options.timeout, &mut task).await {
            Ok(Ok((text, Ok(())))) => Ok(text),
            Ok(Ok((text, Err(e)))) => {
                self.text = Some(text);
                Err(CollectError::Host(e))
            }
            Ok(Err(join)) => Err(CollectError::Panicked(join.to_string())),
            Err(_) => {
                self.stuck = Some(task);
                Err(CollectError::Timeout(self.options.timeout))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CollectError {
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("collection took longer than the scrape timeout {0:?}")]
    Timeout(Duration),
    #[error("the previous collection is still running (a hung filesystem?)")]
    StillRunning,
    #[error("collection panicked: {0}")]
    Panicked(String),
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use lgtm_pipeline::proto::{Label, TimeSeries};
    use lgtm_pipeline::SendError;
    use lgtm_scrape::Batch;

    use super::*;
    use crate::host::testing::full_root;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<Vec<TimeSeries>>>>);

    impl SeriesSink for Collect {
        fn external_labels(&self) -> Vec<Label> {
            vec![Label::new("cluster", "c1")]
        }

        async fn send(&self, batch: Batch) -> Result<(), SendError> {
            self.0.lock().unwrap().push(batch.decode().unwrap());
            Ok(())
        }
    }

    fn label<'a>(ts: &'a TimeSeries, name: &str) -> &'a str {
        ts.labels.iter().find(|l| l.name == name).map_or("", |l| l.value.as_str())
    }

    fn find<'a>(batch: &'a [TimeSeries], name: &str) -> Option<&'a TimeSeries> {
        batch.iter().find(|s| label(s, "__name__") == name)
    }

    fn source(root: &Path, sink: &Collect) -> HostSource {
        let options = HostSourceOptions {
            root: root.to_path_buf(),
            instance: "node-a".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            jitter_seed: 0,
        };
        let target = Arc::new(options.target().unwrap());
        HostSource::new(options, target, sink.external_labels())
    }

    #[tokio::test]
    async fn host_series_carry_the_node_exporter_job_and_synthetic_series() {
        let root = full_root();
        let sink = Collect::default();
        let mut s = source(root.path(), &sink);
        let first = s.scrape_once().await.decode().unwrap();
        let mem = find(&first, "node_memory_MemTotal_bytes").expect("MemTotal");
        assert_eq!(mem.samples[0].value, 16777216.0);
        for ts in &first {
            assert_eq!(label(ts, "job"), "node-exporter");
            assert_eq!(label(ts, "instance"), "node-a");
            assert_eq!(label(ts, "cluster"), "c1");
        }
        assert_eq!(find(&first, "up").unwrap().samples[0].value, 1.0);
        let scraped = find(&first, "scrape_samples_scraped").unwrap().samples[0].value;
        assert_eq!(scraped as usize, first.len() - 5);
        assert_eq!(find(&first, "scrape_series_added").unwrap().samples[0].value, scraped);
        let second = s.scrape_once().await.decode().unwrap();
        assert_eq!(find(&second, "scrape_series_added").unwrap().samples[0].value, 0.0);
    }

    #[tokio::test]
    async fn unreadable_root_gives_up_zero_and_staleness_markers() {
        let root = full_root();
        let sink = Collect::default();
        let mut s = source(root.path(), &sink);
        let first = s.scrape_once().await.decode().unwrap();
        s.options.root = root.path().join("gone");
        let second = s.scrape_once().await.decode().unwrap();
        assert_eq!(find(&second, "up").unwrap().samples[0].value, 0.0);
        assert_eq!(find(&second, "scrape_samples_scraped").unwrap().samples[0].value, 0.0);
        assert_eq!(find(&second, "scrape_samples_post_metric_relabeling").unwrap().samples[0].value, 0.0);
        let mem = find(&second, "node_memory_MemTotal_bytes").expect("a staleness marker");
        assert_eq!(mem.samples[0].value.to_bits(), lgtm_pipeline::proto::STALE_NAN_BITS);
        assert_eq!(second.len(), first.len(), "every host series is marked stale");
        let status = s.status().lock().unwrap().clone();
        assert_eq!(status.health, lgtm_scrape::Health::Down);
        assert!(status.last_error.unwrap().starts_with("collecting host metrics: "));
    }

    #[tokio::test]
    async fn run_sends_every_interval_and_stops_on_the_token() {
        let root = full_root();
        let sink = Collect::default();
        let options = HostSourceOptions {
            root: root.path().to_path_buf(),
            instance: "node-a".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            jitter_seed: 0,
        };
        let stop = CancellationToken::new();
        let shown = Arc::new(Mutex::new(None));
        let show = {
            let shown = shown.clone();
            move |t: Arc<Target>, s: Arc<Mutex<LoopStatus>>| *shown.lock().unwrap() = Some((t, s))
        };
        let task = tokio::spawn(run_host_metrics(options, sink.clone(), show, stop.clone()));
        tokio::time::sleep(Duration::from_millis(450)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        let n = sink.0.lock().unwrap().len();
        assert!((3..=5).contains(&n), "{n} scrapes in 450 ms at 100 ms");
        let (target, status) = shown.lock().unwrap().take().expect("the target was shown");
        assert_eq!(target.labels.to_string(), r#"{instance="node-a", job="node-exporter"}"#);
        let status = status.lock().unwrap().clone();
        assert_eq!((status.health, status.last_error), (lgtm_scrape::Health::Up, None));
        assert!(status.last_samples > 50, "{} samples", status.last_samples);
    }
}
