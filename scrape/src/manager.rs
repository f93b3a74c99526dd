//! Keeps one scrape loop running per target: [`TargetManager::sync`] takes the full set of
//! target groups, relabels them into targets, and starts, restarts or stops loops to match.
//! Several discoveries (static configs, the kubelet, monitor discovery) each own a share of the
//! set through [`TargetManager::sync_provider`]; the manager syncs their union.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::labels::LabelSet;
use crate::relabel::Relabeler;
use crate::scrape_loop::{Health, LoopStatus, ScrapeLoop};
use crate::self_metrics::metrics;
use crate::sink::SeriesSink;
use crate::target::{populate, Target, TargetError, TargetGroup};

/// A target as the `/targets` page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    pub job: String,
    /// The discovery that produced it (`static_configs/0`, `kubelet`, ...).
    pub source: String,
    pub scrape_url: String,
    pub labels: BTreeMap<String, String>,
    pub discovered_labels: BTreeMap<String, String>,
    pub scrape_interval: String,
    pub scrape_timeout: String,
    pub health: Health,
    pub last_error: Option<String>,
    pub last_scrape_unix_ms: Option<i64>,
    pub last_scrape_duration_seconds: Option<f64>,
    pub last_samples: usize,
}

struct RunningLoop {
    target: Arc<Target>,
    options_fingerprint: u64,
    stop: CancellationToken,
    end_of_target: Arc<AtomicBool>,
    status: Arc<Mutex<LoopStatus>>,
    task: JoinHandle<()>,
}

impl RunningLoop {
    /// Stops the loop; `stale`: the target is gone, send staleness markers first.
    fn stop(self, stale: bool) -> JoinHandle<()> {
        self.end_of_target.store(stale, Ordering::Release);
        self.stop.cancel();
        self.task
    }
}

#[derive(Default)]
struct State {
    loops: HashMap<u64, RunningLoop>,
    /// Targets scraped outside the manager (host metrics), listed with the others.
    shown: Vec<(Arc<Target>, Arc<Mutex<LoopStatus>>)>,
    jobs: BTreeSet<String>,
    stopping: Vec<JoinHandle<()>>,
}

/// Owns the scrape loops. Clone-free: share it behind an `Arc`.
pub struct TargetManager<S: SeriesSink> {
    sink: S,
    jitter_seed: u64,
    state: Mutex<State>,
    /// The latest groups of each provider; held across a whole provider sync so that two
    /// providers syncing at once cannot apply a stale union.
    providers: Mutex<BTreeMap<String, Vec<TargetGroup>>>,
}

impl<S: SeriesSink> TargetManager<S> {
    /// `jitter_seed` (e.g. a hash of the node or pod name) shifts every target's scrape phase
    /// so that agents do not scrape in lockstep.
    pub fn new(sink: S, jitter_seed: u64) -> TargetManager<S> {
        TargetManager { sink, jitter_seed, state: Mutex::default(), providers: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces `provider`'s groups (e.g. `static_configs`, `kubelet`, `discovery`) and syncs the
    /// union of every provider's latest groups, so one discovery never drops another's targets.
    /// Returns the errors of the whole union, as [`TargetManager::sync`].
    pub fn sync_provider(&self, provider: &str, groups: Vec<TargetGroup>) -> Vec<TargetError> {
        let mut providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        providers.insert(provider.to_string(), groups);
        let union: Vec<TargetGroup> = providers.values().flatten().cloned().collect();
        self.sync(union)
    }

    /// Replaces the set of targets with the ones in `groups`: new targets start, targets no
    /// longer present stop after sending staleness markers, targets whose scrape options
    /// changed restart (without markers). Returns the targets (or groups) that could not be
    /// used. Must be called within a Tokio runtime.
    pub fn sync(&self, groups: Vec<TargetGroup>) -> Vec<TargetError> {
        let mut errors = Vec::new();
        let mut wanted: HashMap<u64, (Arc<Target>, u64)> = HashMap::new();
        for group in &groups {
            let relabeler = match Relabeler::compile(&group.options.relabel_configs) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(TargetError { labels: group.source.clone(), message: format!("relabel_configs: {e}") });
                    continue;
                }
            };
            let fingerprint = group.options.fingerprint();
            for discovered in &group.targets {
                match populate(discovered, &group.labels, &group.options, &relabeler, &group.source) {
                    Ok(Some(target)) => {
                        wanted.entry(target.identity()).or_insert((Arc::new(target), fingerprint));
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        for e in &errors {
            tracing::warn!(error = %e, "target not scraped");
        }

        let mut state = self.state();
        let mut stopping = Vec::new();
        let running: Vec<u64> = state.loops.keys().copied().collect();
        for id in running {
            let keep = wanted.get(&id).is_some_and(|(_, fp)| state.loops[&id].options_fingerprint == *fp);
            if keep {
                wanted.remove(&id);
            } else if let Some(old) = state.loops.remove(&id) {
                let gone = !wanted.contains_key(&id);
                if gone {
                    tracing::info!(target_url = %old.target.url, "target gone; sending staleness markers");
                }
                stopping.push(old.stop(gone));
            }
        }
        for (id, (target, fingerprint)) in wanted {
            let running = self.start(target, fingerprint);
            state.loops.insert(id, running);
        }
        state.stopping.retain(|t| !t.is_finished());
        state.stopping.extend(stopping);
        self.update_target_gauges(&mut state);
        errors
    }

    fn start(&self, target: Arc<Target>, options_fingerprint: u64) -> RunningLoop {
        let scrape_loop = ScrapeLoop::new(target.clone(), self.sink.external_labels());
        let status = scrape_loop.status();
        let stop = CancellationToken::new();
        let end_of_target = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("scrape", job = %target.job(), target_url = %target.url);
        let task = tokio::spawn(
            scrape_loop.run(self.sink.clone(), self.jitter_seed, stop.clone(), end_of_target.clone()).instrument(span),
        );
        RunningLoop { target, options_fingerprint, stop, end_of_target, status, task }
    }

    fn update_target_gauges(&self, state: &mut State) {
        let mut per_job: BTreeMap<String, i64> = BTreeMap::new();
        for l in state.loops.values() {
            *per_job.entry(l.target.job().to_string()).or_default() += 1;
        }
        let gauge = &metrics().targets;
        for job in &state.jobs {
            if !per_job.contains_key(job) {
                gauge.with_label_values(&[job.as_str()]).set(0);
            }
        }
        for (job, n) in &per_job {
            gauge.with_label_values(&[job.as_str()]).set(*n);
        }
        state.jobs = per_job.into_keys().collect();
    }

    /// A snapshot of every target, sorted by job and URL.
    pub fn targets(&self) -> Vec<TargetStatus> {
        let state = self.state();
        let mut out: Vec<TargetStatus> = state
            .loops
            .values()
            .map(|l| (&l.target, &l.status))
            .chain(state.shown.iter().map(|(t, s)| (t, s)))
            .map(|(t, status)| {
                let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                TargetStatus {
                    job: t.job().to_string(),
                    source: t.source.clone(),
                    scrape_url: t.url.to_string(),
                    labels: to_map(&t.labels),
                    discovered_labels: to_map(&t.discovered_labels),
                    scrape_interval: lgtm_config::Duration::from_millis(t.interval.as_millis() as u64).to_string(),
                    scrape_timeout: lgtm_config::Duration::from_millis(t.timeout.as_millis() as u64).to_string(),
                    health: s.health,
                    last_error: s.last_error,
                    last_scrape_unix_ms: s.last_scrape_unix_ms,
                    last_scrape_duration_seconds: s.last_scrape_duration_seconds,
                    last_samples: s.last_samples,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.job, &a.scrape_url).cmp(&(&b.job, &b.scrape_url)));
        out
    }

    /// Lists `target`, scraped by its own source rather than by a loop of the manager (host
    /// metrics), among [`TargetManager::targets`] with the status that source keeps.
    pub fn show(&self, target: Arc<Target>, status: Arc<Mutex<LoopStatus>>) {
        self.state().shown.push((target, status));
    }

    /// Stops every loop without staleness markers (the agent is shutting down, and the next
    /// one continues the series) and waits for them, including loops still sending the
    /// markers of removed targets.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.state();
            let loops: Vec<RunningLoop> = state.loops.drain().map(|(_, l)| l).collect();
            let mut tasks: Vec<JoinHandle<()>> = loops.into_iter().map(|l| l.stop(false)).collect();
            tasks.append(&mut state.stopping);
            self.update_target_gauges(&mut state);
            tasks
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn to_map(labels: &LabelSet) -> BTreeMap<String, String> {
    labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}
