//! Keeps one scrape loop running per target: [`TargetManager::sync`] takes the full set of
//! target groups, relabels them into targets, and starts, restarts or stops loops to match.
//! Several discoveries (static configs, the kubelet, monitor discovery) each own a share of the
//! set through [`TargetManager::sync_provider`]; the manager syncs their union.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use lgtm_config::RelabelConfig;
use lgtm_pipeline::proto::Label;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::labels::{CommonLabels, LabelSet};
use crate::relabel::{RelabelError, Relabeler, Rule};
use crate::scrape_loop::{Health, LoopStatus, LoopStop, ScrapeLoop};
use crate::self_metrics::JobMetrics;
use crate::sink::SeriesSink;
use crate::target::{discovered_labels, populate_with, Target, TargetError, TargetGroup};

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
    stop: Arc<LoopStop>,
    status: Arc<Mutex<LoopStatus>>,
    task: JoinHandle<()>,
}

impl RunningLoop {
    /// Stops the loop; `stale`: the target is gone, send staleness markers first.
    fn stop(self, stale: bool) -> JoinHandle<()> {
        self.stop.stop(stale);
        self.task
    }
}

#[derive(Default)]
struct State {
    loops: HashMap<u64, RunningLoop>,
    /// Targets scraped outside the manager (host metrics), listed with the others.
    shown: Vec<(Arc<Target>, Arc<Mutex<LoopStatus>>)>,
    /// The jobs of the running loops, as of the last sync.
    jobs: Vec<Arc<JobMetrics>>,
    stopping: Vec<JoinHandle<()>>,
}

/// One target a group asks for: its key ([`Target::key`]), the target, the fingerprint of its options.
struct Wanted {
    id: u64,
    target: Arc<Target>,
    options_fingerprint: u64,
}

/// What target relabeling made of one group, reused while the group is unchanged: relabeling
/// every target again on each change of one monitor was most of the time a change took to
/// apply (about half a second at 3,000 targets, measured with `bench discovery`).
struct RelabeledGroup {
    targets: Vec<Wanted>,
    errors: Vec<TargetError>,
}

impl RelabeledGroup {
    fn relabel(group: &TargetGroup, metric_relabelers: &MetricRelabelers) -> RelabeledGroup {
        let relabeler = match Relabeler::compile(&group.options.relabel_configs) {
            Ok(r) => r,
            Err(e) => {
                let error = TargetError { labels: group.source.clone(), message: format!("relabel_configs: {e}") };
                return RelabeledGroup { targets: Vec::new(), errors: vec![error] };
            }
        };
        let options_fingerprint = group.options.fingerprint();
        // Looked up once, when the first target needs them, and shared by the group's targets
        // (and by other groups with the same rules).
        let metric_relabel = std::cell::OnceCell::new();
        let metric_relabel =
            || metric_relabel.get_or_init(|| metric_relabelers.get(&group.options.metric_relabel_configs)).clone();
        // The discovered labels every target of the group has (most of a Kubernetes target's:
        // its namespace, Service, EndpointSlice, job...), packed once and shared by the
        // targets, which keep only their own. Each target's set is built twice (here, then to
        // relabel it) rather than all of them kept at once.
        let common =
            CommonLabels::of(group.targets.iter().map(|t| discovered_labels(t, &group.labels, &group.options)));
        let pack = |labels: &LabelSet| common.pack(labels);
        let source: Arc<str> = group.source.as_str().into();
        let mut out = RelabeledGroup { targets: Vec::with_capacity(group.targets.len()), errors: Vec::new() };
        for discovered in &group.targets {
            let (labels, options, source) = (&group.labels, &group.options, &source);
            match populate_with(discovered, labels, options, &relabeler, metric_relabel, pack, source) {
                Ok(Some(target)) => {
                    out.targets.push(Wanted { id: target.key(), target: Arc::new(target), options_fingerprint })
                }
                Ok(None) => {}
                Err(e) => out.errors.push(e),
            }
        }
        out
    }
}

/// Compiled `metric_relabel_configs`, shared by every group with the same ones (monitors made
/// from one chart often have the same): compiled rules cost kilobytes (see
/// [`populate_with`]), which each group kept a copy of. Held only while a target holds them.
#[derive(Default)]
struct MetricRelabelers(Mutex<RulesByConfigs>);

/// Compiled rules by a hash of their configs (and the configs, colliding hashes being possible).
type RulesByConfigs = HashMap<u64, Vec<(Vec<RelabelConfig>, Weak<[Rule]>)>>;

impl MetricRelabelers {
    fn lock(&self) -> std::sync::MutexGuard<'_, RulesByConfigs> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rules of `configs`: those a target already holds, or compiled now.
    fn get(&self, configs: &[RelabelConfig]) -> Result<Relabeler, RelabelError> {
        let key = xxhash_rust::xxh3::xxh3_64(format!("{configs:?}").as_bytes());
        let mut map = self.lock();
        let same = map.entry(key).or_default();
        same.retain(|(_, rules)| rules.strong_count() > 0);
        if let Some(rules) = same.iter().find(|(c, _)| c == configs).and_then(|(_, r)| Relabeler::upgrade(r)) {
            return Ok(rules);
        }
        let rules = Relabeler::compile(configs)?;
        same.push((configs.to_vec(), rules.downgrade()));
        Ok(rules)
    }

    /// Forgets the rules no target holds any more.
    fn prune(&self) {
        self.lock().retain(|_, same| {
            same.retain(|(_, rules)| rules.strong_count() > 0);
            !same.is_empty()
        });
    }
}

/// Each provider's groups as of its last sync, in its order, relabeled.
type Providers = BTreeMap<String, Vec<(u64, Arc<RelabeledGroup>)>>;

/// A provider's sync in progress ([`TargetManager::provider_sync`]).
pub struct ProviderSync<'a, S: SeriesSink> {
    manager: &'a TargetManager<S>,
    providers: std::sync::MutexGuard<'a, Providers>,
    provider: String,
    /// The provider's groups at its last sync, by fingerprint.
    previous: HashMap<u64, Arc<RelabeledGroup>>,
    relabeled: Vec<(u64, Arc<RelabeledGroup>)>,
}

impl<S: SeriesSink> ProviderSync<'_, S> {
    /// Adds a group, relabeled unless it is unchanged since the provider's last sync.
    pub fn add(&mut self, group: &TargetGroup) {
        let fingerprint = group.fingerprint();
        let done = match self.previous.get(&fingerprint) {
            Some(same) => same.clone(),
            None => {
                let fresh = RelabeledGroup::relabel(group, &self.manager.metric_relabelers);
                for e in &fresh.errors {
                    tracing::warn!(error = %e, "target not scraped");
                }
                Arc::new(fresh)
            }
        };
        self.relabeled.push((fingerprint, done));
    }

    /// Makes the added groups the provider's, then starts, restarts and stops loops to match
    /// the union of every provider's targets. Returns the errors of the whole union.
    pub fn finish(mut self) -> Vec<TargetError> {
        let relabeled = std::mem::take(&mut self.relabeled);
        self.providers.insert(std::mem::take(&mut self.provider), relabeled);
        // The groups not added again go now, so that `apply` forgets the metric relabeling
        // rules only they held.
        self.previous = HashMap::new();
        self.manager.apply(&self.providers)
    }
}

/// Owns the scrape loops. Clone-free: share it behind an `Arc`.
pub struct TargetManager<S: SeriesSink> {
    sink: S,
    /// The sink's external labels, asked once: one copy shared by every loop.
    external_labels: Arc<[Label]>,
    jitter_seed: u64,
    state: Mutex<State>,
    /// The latest groups of each provider; held across a whole provider sync so that two
    /// providers syncing at once cannot apply a stale union.
    providers: Mutex<Providers>,
    metric_relabelers: MetricRelabelers,
}

impl<S: SeriesSink> TargetManager<S> {
    /// `jitter_seed` (e.g. a hash of the node or pod name) shifts every target's scrape phase
    /// so that agents do not scrape in lockstep.
    pub fn new(sink: S, jitter_seed: u64) -> TargetManager<S> {
        let external_labels = sink.external_labels().into();
        TargetManager {
            sink,
            external_labels,
            jitter_seed,
            state: Mutex::default(),
            providers: Mutex::default(),
            metric_relabelers: MetricRelabelers::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn providers(&self) -> std::sync::MutexGuard<'_, Providers> {
        self.providers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces `provider`'s groups (e.g. `static_configs`, `kubelet`, `discovery`) and syncs the
    /// union of every provider's latest groups, so one discovery never drops another's targets.
    /// Only groups that changed since the provider's last sync are relabeled again. Returns the
    /// errors of the whole union, as [`TargetManager::sync`].
    pub fn sync_provider(&self, provider: &str, groups: Vec<TargetGroup>) -> Vec<TargetError> {
        let mut sync = self.provider_sync(provider);
        for group in &groups {
            sync.add(group);
        }
        sync.finish()
    }

    /// [`TargetManager::sync_provider`] one group at a time: each group can be dropped once
    /// added (only what relabeling made of it is kept), so that a discovery with thousands of
    /// targets never holds all their discovered labels at once. Other syncs wait until
    /// [`ProviderSync::finish`].
    pub fn provider_sync(&self, provider: &str) -> ProviderSync<'_, S> {
        let mut providers = self.providers();
        let previous = providers.remove(provider).unwrap_or_default().into_iter().collect();
        ProviderSync { manager: self, providers, provider: provider.to_string(), previous, relabeled: Vec::new() }
    }

    /// Replaces the set of targets with the ones in `groups` (and forgets every provider's):
    /// new targets start, targets no longer present stop after sending staleness markers,
    /// targets whose scrape options changed restart (without markers). Returns the targets
    /// (or groups) that could not be used. Must be called within a Tokio runtime.
    pub fn sync(&self, groups: Vec<TargetGroup>) -> Vec<TargetError> {
        self.providers().retain(|name, _| name.is_empty());
        self.sync_provider("", groups)
    }

    /// Starts, restarts and stops loops to match the union of `providers`' targets (the first
    /// group to name a key wins); returns every group's errors.
    fn apply(&self, providers: &Providers) -> Vec<TargetError> {
        let groups = || providers.values().flatten().map(|(_, g)| g);
        let errors: Vec<TargetError> = groups().flat_map(|g| g.errors.iter().cloned()).collect();
        let mut wanted: HashMap<u64, &Wanted> = HashMap::new();
        for w in groups().flat_map(|g| &g.targets) {
            wanted.entry(w.id).or_insert(w);
        }

        let mut state = self.state();
        let mut stopping = Vec::new();
        let running: Vec<u64> = state.loops.keys().copied().collect();
        for id in running {
            let keep = wanted.get(&id).is_some_and(|w| state.loops[&id].options_fingerprint == w.options_fingerprint);
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
        for (id, w) in wanted {
            let running = self.start(w.target.clone(), w.options_fingerprint);
            state.loops.insert(id, running);
        }
        state.stopping.retain(|t| !t.is_finished());
        state.stopping.extend(stopping);
        self.update_target_gauges(&mut state);
        drop(state);
        self.metric_relabelers.prune();
        errors
    }

    fn start(&self, target: Arc<Target>, options_fingerprint: u64) -> RunningLoop {
        let scrape_loop = ScrapeLoop::new(target.clone(), self.external_labels.clone());
        let status = scrape_loop.status();
        let stop = Arc::new(LoopStop::default());
        crate::buffer_pool::start_expiry(&crate::encode::POOLS);
        let task = tokio::spawn(scrape_loop.run(self.sink.clone(), self.jitter_seed, stop.clone()));
        RunningLoop { target, options_fingerprint, stop, status, task }
    }

    fn update_target_gauges(&self, state: &mut State) {
        let mut per_job: HashMap<&str, i64> = HashMap::new();
        for l in state.loops.values() {
            *per_job.entry(l.target.job()).or_default() += 1;
        }
        for job in &state.jobs {
            if !per_job.contains_key(job.job()) {
                job.set_targets(0);
            }
        }
        let jobs = per_job.into_iter().map(|(job, n)| JobMetrics::targets_of(job, n)).collect();
        state.jobs = jobs;
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
                    source: t.source.to_string(),
                    scrape_url: t.url.to_string(),
                    labels: to_map(t.labels.clone()),
                    discovered_labels: to_map(t.discovered_labels.unpack()),
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

fn to_map(labels: LabelSet) -> BTreeMap<String, String> {
    labels.into_vec().into_iter().map(|l| (l.name, l.value)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use lgtm_config::RelabelConfig;

    use super::*;
    use crate::target::ScrapeOptions;

    #[derive(Clone)]
    struct NullSink;

    impl SeriesSink for NullSink {
        async fn send(&self, _batch: crate::sink::Batch) -> Result<(), lgtm_pipeline::SendError> {
            Ok(())
        }
    }

    impl<S: SeriesSink> TargetManager<S> {
        /// The URL of every running loop and its task (a restarted loop is a new task).
        fn loop_tasks(&self) -> BTreeMap<String, tokio::task::Id> {
            self.state().loops.values().map(|l| (l.target.url.to_string(), l.task.id())).collect()
        }
    }

    /// A group of `ports` on 127.0.0.1 (nothing listens: the loops fail and retry in an hour).
    fn group(source: &str, ports: &[u16], job: &str) -> TargetGroup {
        TargetGroup {
            source: source.into(),
            targets: ports.iter().map(|p| BTreeMap::from([("__address__".into(), format!("127.0.0.1:{p}"))])).collect(),
            labels: BTreeMap::new(),
            options: Arc::new(ScrapeOptions {
                job: job.into(),
                interval: Duration::from_secs(3600),
                ..ScrapeOptions::default()
            }),
        }
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/metrics")
    }

    #[tokio::test]
    async fn incremental_sync_keeps_restarts_and_stops_exactly_the_changed_groups_loops() {
        let manager = TargetManager::new(NullSink, 7);
        let a = group("a", &[1001, 1002], "a");
        let b = group("b", &[2001], "b");
        let c = group("c", &[3001, 3002], "c");
        assert!(manager.sync_provider("discovery", vec![a.clone(), b.clone(), c.clone()]).is_empty());
        let first = manager.loop_tasks();
        assert_eq!(first.len(), 5);

        // Unchanged: every loop kept.
        manager.sync_provider("discovery", vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(manager.loop_tasks(), first);

        // `a` gains a target, `b`'s options change, `c` is gone.
        let a2 = group("a", &[1001, 1002, 1003], "a");
        let mut b2 = group("b", &[2001], "b");
        b2.options = Arc::new(ScrapeOptions { sample_limit: 10, ..(*b.options).clone() });
        manager.sync_provider("discovery", vec![a2.clone(), b2.clone()]);
        let second = manager.loop_tasks();
        assert_eq!(second.keys().cloned().collect::<Vec<_>>(), [url(1001), url(1002), url(1003), url(2001)]);
        assert_eq!(second[&url(1001)], first[&url(1001)], "unchanged target of a changed group kept");
        assert_eq!(second[&url(1002)], first[&url(1002)]);
        assert!(second[&url(1003)] > first.values().copied().max().unwrap(), "new target started");
        assert_ne!(second[&url(2001)], first[&url(2001)], "options changed: restarted");

        // A relabeling that rewrites the address of `a`'s targets: old ones stop, new ones start.
        let mut a3 = a2.clone();
        a3.options = Arc::new(ScrapeOptions {
            relabel_configs: vec![RelabelConfig {
                source_labels: vec!["__address__".into()],
                regex: Some("127.0.0.1:(1.*)".into()),
                replacement: Some("127.0.0.2:$1".into()),
                target_label: Some("__address__".into()),
                ..RelabelConfig::default()
            }],
            ..(*a2.options).clone()
        });
        manager.sync_provider("discovery", vec![a3, b2.clone()]);
        let third = manager.loop_tasks();
        let urls: Vec<&str> = third.keys().map(String::as_str).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:2001/metrics",
                "http://127.0.0.2:1001/metrics",
                "http://127.0.0.2:1002/metrics",
                "http://127.0.0.2:1003/metrics"
            ]
        );
        assert_eq!(third[&url(2001)], second[&url(2001)], "untouched group kept");

        // Another provider's targets are left alone by a discovery sync, and the reverse.
        manager.sync_provider("static_configs", vec![group("static/0", &[4001], "s")]);
        let with_static = manager.loop_tasks();
        manager.sync_provider("discovery", vec![b2]);
        let after = manager.loop_tasks();
        assert_eq!(after.keys().cloned().collect::<Vec<_>>(), [url(2001), url(4001)]);
        assert_eq!(after[&url(4001)], with_static[&url(4001)]);
        assert_eq!(after[&url(2001)], with_static[&url(2001)]);
        manager.shutdown().await;
        assert!(manager.loop_tasks().is_empty());
    }

    #[test]
    fn a_groups_targets_share_its_compiled_metric_relabeling() {
        let mut g = group("a", &[7001, 7002], "a");
        Arc::make_mut(&mut g.options).metric_relabel_configs = vec![RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: Some("go_.*".into()),
            action: Some("drop".into()),
            ..Default::default()
        }];
        let relabeled = RelabeledGroup::relabel(&g, &MetricRelabelers::default());
        let [a, b] = &relabeled.targets[..] else { panic!("two targets") };
        assert_eq!(a.target.metric_relabel.rules().len(), 1);
        assert!(std::ptr::eq(a.target.metric_relabel.rules(), b.target.metric_relabel.rules()));
    }

    #[tokio::test]
    async fn groups_with_the_same_metric_relabeling_share_its_compiled_rules() {
        let manager = TargetManager::new(NullSink, 7);
        let rule = |regex: &str| RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: Some(regex.into()),
            action: Some("drop".into()),
            ..Default::default()
        };
        let with = |source: &str, port: u16, job: &str, regex: &str| {
            let mut g = group(source, &[port], job);
            Arc::make_mut(&mut g.options).metric_relabel_configs = vec![rule(regex)];
            g
        };
        let groups = vec![with("a", 8001, "a", "go_.*"), with("b", 8002, "b", "go_.*"), with("c", 8003, "c", "x_.*")];
        manager.sync_provider("discovery", groups);
        let rules = |port: u16| {
            let state = manager.state();
            let l = state.loops.values().find(|l| l.target.url.port() == Some(port)).expect("a loop");
            l.target.metric_relabel.rules().as_ptr()
        };
        assert_eq!(rules(8001), rules(8002));
        assert_ne!(rules(8001), rules(8003));
        assert_eq!(manager.metric_relabelers.lock().values().flatten().count(), 2);
        // Gone with the last target holding them.
        manager.sync_provider("discovery", vec![with("a", 8001, "a", "go_.*")]);
        manager.shutdown().await;
        manager.sync_provider("discovery", vec![]);
        assert_eq!(manager.metric_relabelers.lock().len(), 0);
    }

    /// Discovered labels from a few names and values, so that a group's targets share some.
    fn discovered_sets() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, String>> {
        use proptest::prelude::*;
        let name = prop_oneof![
            "__meta_[a-c]",
            Just("job".to_string()),
            Just("env".to_string()),
            Just("__scrape_interval__".to_string()),
            Just("__param_module".to_string()),
        ];
        let value = prop_oneof!["[a-b]{0,1}", Just("1m".to_string())];
        proptest::collection::btree_map(name, value, 0..6)
    }

    proptest::proptest! {
        /// The targets page shows each target's discovered labels as they were, though the
        /// group's targets share the labels they have in common.
        #[test]
        fn each_target_of_a_group_unpacks_its_own_discovered_labels(
            targets in proptest::collection::vec((0u16..4, discovered_sets()), 0..8),
            group_labels in discovered_sets(),
        ) {
            let mut g = group("p", &[], "p");
            Arc::make_mut(&mut g.options).params.insert("module".into(), "x".into());
            g.labels = group_labels;
            g.targets = targets
                .into_iter()
                .enumerate()
                .map(|(i, (host, mut labels))| {
                    labels.insert("__address__".into(), format!("10.0.0.{host}:{}", 9000 + i));
                    labels
                })
                .collect();
            let relabeled = RelabeledGroup::relabel(&g, &MetricRelabelers::default());
            let relabeler = Relabeler::default();
            let alone = |t| crate::target::populate(t, &g.labels, &g.options, &relabeler, &g.source);
            let mut targets = relabeled.targets.iter();
            let mut errors = relabeled.errors.iter();
            for discovered in &g.targets {
                match alone(discovered) {
                    Ok(Some(want)) => {
                        let got = &targets.next().expect("a target").target;
                        proptest::prop_assert_eq!(got.discovered_labels.unpack(), want.discovered_labels.unpack());
                    }
                    Ok(None) => {}
                    Err(want) => proptest::prop_assert_eq!(errors.next(), Some(&want)),
                }
            }
            proptest::prop_assert!(targets.next().is_none() && errors.next().is_none());
        }
    }

    #[tokio::test]
    async fn errors_of_unchanged_groups_are_still_reported() {
        let manager = TargetManager::new(NullSink, 7);
        let mut bad = group("bad", &[5001], "bad");
        bad.targets.push(BTreeMap::from([("__address__".into(), "host/with/path".into())]));
        let errors = manager.sync_provider("discovery", vec![bad.clone()]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let again = manager.sync_provider("discovery", vec![bad]);
        assert_eq!(again, errors);
        assert_eq!(manager.loop_tasks().len(), 1);
        manager.shutdown().await;
    }

    #[tokio::test]
    async fn the_same_target_runs_one_loop_per_source() {
        let manager = TargetManager::new(NullSink, 7);
        let loops = |m: &TargetManager<NullSink>| m.state().loops.len();
        // Twice in one source: one target.
        manager.sync_provider("discovery", vec![group("x", &[6001, 6001], "j")]);
        assert_eq!(loops(&manager), 1);
        // In two sources (two monitors selecting one Service): each its own job, as in Prometheus.
        manager.sync_provider("discovery", vec![group("x", &[6001], "j"), group("y", &[6001], "j")]);
        assert_eq!(loops(&manager), 2);
        let sources: Vec<String> = manager.targets().into_iter().map(|t| t.source).collect();
        assert_eq!(sources.len(), 2);
        assert!(sources.contains(&"x".to_string()) && sources.contains(&"y".to_string()), "{sources:?}");
        // Dropping one of the two keeps the loop of the other running.
        let tasks = |m: &TargetManager<NullSink>| -> BTreeMap<String, tokio::task::Id> {
            m.state().loops.values().map(|l| (l.target.source.to_string(), l.task.id())).collect()
        };
        let mut before = tasks(&manager);
        manager.sync_provider("discovery", vec![group("x", &[6001], "j")]);
        before.remove("y");
        assert_eq!(tasks(&manager), before);
        manager.shutdown().await;
    }
}
