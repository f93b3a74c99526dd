//! Monitor discovery: ServiceMonitors, PodMonitors and `prometheus.io/*` annotations turned into
//! scrape targets, sharded across the replicas.
//!
//! Data flow, as kube-runtime reads: watches ([`lgtm_k8s::reflect`], [`watch`] for the
//! referenced Secrets and ConfigMaps) feed reflector stores (monitors, Secrets, ConfigMaps, this
//! pod's StatefulSet) and [`lgtm_k8s::store`]s of compact types holding what discovery reads of
//! Services, EndpointSlices and Pods ([`objects`]); any change wakes the fold loop ([`run`]),
//! which snapshots the stores, [`build`]s every target
//! group (Prometheus's Kubernetes SD labels in [`sd_labels`], the Prometheus Operator's
//! relabelings and options in [`operator`], annotations in [`annotations`]), keeps this
//! replica's share ([`crate::shard`]) and hands the whole set to
//! [`lgtm_scrape::TargetManager::sync`], which diffs it against the running scrape loops.
//!
//! What it does not do: scrape (the scrape crate does), read the deprecated Endpoints API,
//! Probes or ScrapeConfigs, or the Prometheus CR's monitor selectors (every monitor the
//! agent can see is used). Fields it does not act on are reported (log and `/targets`).

pub mod annotations;
pub mod build;
pub mod crds;
pub mod credentials;
pub mod monitor;
pub mod operator;
pub mod sd_labels;
mod status;
pub mod watch;

/// The compact objects discovery reads, from the Kubernetes crate.
pub use lgtm_k8s::objects;

pub use build::{build, build_each, BuildOptions, Built, MonitorStatus, Snapshot};
pub use status::{DiscoveryStatus, StatusBoard};

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use lgtm_config::Config;
use lgtm_scrape::target::TargetError;
use lgtm_scrape::{SeriesSink, TargetManager};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::shard::{parse_pod_name, Shard, ShardCache};
use crds::{spawn_monitor_watches, MonitorStore};
use credentials::{remove_unused_files, CredentialFiles};
use lgtm_k8s::reflect::spawn_reflector;
use lgtm_k8s::store::{spawn_compact_watch, CompactStore, SharedWatch, Subscription};
use objects::{PodInfo, ServiceInfo, SliceInfo};
use operator::Defaults;
use watch::RefWatchers;

/// How discovery runs; [`DiscoveryOptions::from_config`] reads `scrape.monitors`.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    pub build: BuildOptions,
    /// `None`: `spec.replicas` of this pod's StatefulSet.
    pub replicas: Option<u32>,
    /// The StatefulSet pod name (index = ordinal suffix); empty: one replica.
    pub pod_name: String,
    pub pod_namespace: String,
    /// Where referenced credentials are written for the scrape loops.
    pub credentials_dir: PathBuf,
    /// Changes arriving within this window after the first are folded into one rebuild. A
    /// rebuild also waits until the agent has been idle as long as the previous one took.
    pub debounce: Duration,
    /// How long the first build waits for the watchers' initial lists.
    pub initial_sync_timeout: Duration,
}

impl DiscoveryOptions {
    pub fn from_config(cfg: &Config) -> DiscoveryOptions {
        let m = &cfg.scrape.monitors;
        DiscoveryOptions {
            build: BuildOptions {
                service_monitors: m.service_monitors,
                pod_monitors: m.pod_monitors,
                annotations: m.annotations,
                defaults: Defaults::from_config(&cfg.scrape),
            },
            replicas: m.replicas,
            pod_name: m.pod_name.clone(),
            pod_namespace: if m.pod_namespace.is_empty() { "default".into() } else { m.pod_namespace.clone() },
            credentials_dir: cfg.data_dir.join("monitor-credentials"),
            debounce: Duration::from_millis(20),
            initial_sync_timeout: Duration::from_secs(10),
        }
    }
}

struct Stores {
    service_monitors: Option<MonitorStore>,
    pod_monitors: Option<MonitorStore>,
    services: CompactStore<ServiceInfo>,
    endpoint_slices: CompactStore<SliceInfo>,
    /// The Pod watch shared with cluster state.
    pods: Subscription<PodInfo>,
    statefulset: Option<Store<StatefulSet>>,
}

impl Stores {
    fn start(
        client: &Client,
        pods: &SharedWatch<PodInfo>,
        options: &DiscoveryOptions,
        changed: &Arc<Notify>,
        stop: &CancellationToken,
    ) -> Stores {
        let cfg = watcher::Config::default;
        let b = &options.build;
        // The monitor kinds are watched once API discovery shows them ([`crds`]).
        let mut wanted = Vec::new();
        if b.service_monitors {
            wanted.push(("ServiceMonitor", "servicemonitors"));
        }
        if b.pod_monitors {
            wanted.push(("PodMonitor", "podmonitors"));
        }
        let mut monitors = spawn_monitor_watches(client, &wanted, changed, stop).into_iter();
        let service_monitors = b.service_monitors.then(|| monitors.next()).flatten();
        let pod_monitors = b.pod_monitors.then(|| monitors.next()).flatten();
        // Services, EndpointSlices and Pods are deserialized into discovery's compact types.
        let wake = || {
            let changed = changed.clone();
            move || changed.notify_one()
        };
        let (services, _) = spawn_compact_watch(client, wake(), stop.clone());
        let (endpoint_slices, _) = spawn_compact_watch(client, wake(), stop.clone());
        let pods = pods.subscribe(Some(changed));
        let statefulset = match (options.replicas, parse_pod_name(&options.pod_name)) {
            (None, Some(p)) => {
                let (store, w) = reflector::store();
                let api = Api::namespaced(client.clone(), &options.pod_namespace);
                let config = cfg().fields(&format!("metadata.name={}", p.statefulset));
                spawn_reflector(
                    format!("StatefulSet {}", p.statefulset),
                    api,
                    config,
                    w,
                    changed.clone(),
                    stop.clone(),
                );
                Some(store)
            }
            _ => None,
        };
        Stores { service_monitors, pod_monitors, services, endpoint_slices, pods, statefulset }
    }

    async fn wait_until_ready(&self) {
        let mut waits: Vec<futures::future::BoxFuture<'_, ()>> = vec![
            Box::pin(self.services.wait_until_ready()),
            Box::pin(self.endpoint_slices.wait_until_ready()),
            Box::pin(self.pods.wait_until_ready()),
        ];
        for s in [&self.service_monitors, &self.pod_monitors].into_iter().flatten() {
            waits.push(Box::pin(s.wait_until_ready()));
        }
        if let Some(s) = &self.statefulset {
            waits.push(Box::pin(async { s.wait_until_ready().await.ok().unwrap_or_default() }));
        }
        futures::future::join_all(waits).await;
    }
}

/// This replica's shard: the index from the pod name, the count from the options or the
/// StatefulSet.
fn current_shard(options: &DiscoveryOptions, statefulset: Option<&Store<StatefulSet>>) -> Shard {
    let Some(pod) = parse_pod_name(&options.pod_name) else {
        return Shard::ALL;
    };
    let replicas = options.replicas.unwrap_or_else(|| {
        let sts = statefulset.and_then(|s| s.state().into_iter().next());
        sts.and_then(|s| s.spec.as_ref().and_then(|spec| spec.replicas)).map(|r| r.max(0) as u32).unwrap_or(1)
    });
    Shard::new(pod.ordinal, replicas)
}

/// Runs discovery until `stop`: every change of the watched objects replaces the `discovery`
/// provider's groups (this replica's share) with [`TargetManager::sync_provider`]; other
/// providers' targets (static configs, ...) are left alone. Status goes to `board` for `/targets`.
/// The Pods come from `pods`, the watch cluster state reads too.
pub async fn run<S: SeriesSink>(
    client: Client,
    pods: Arc<SharedWatch<PodInfo>>,
    options: DiscoveryOptions,
    manager: Arc<TargetManager<S>>,
    board: Arc<StatusBoard>,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let watchers_stop = stop.child_token();
    let stores = Stores::start(&client, &pods, &options, &changed, &watchers_stop);
    let mut refs = RefWatchers::new(client, changed.clone(), watchers_stop.clone());
    tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(options.initial_sync_timeout, stores.wait_until_ready()) => if r.is_err() {
            tracing::warn!(timeout = ?options.initial_sync_timeout, "not every watch listed its objects in time; starting with what is known");
        },
    }
    let mut logged = HashSet::new();
    let mut cache = ShardCache::default();
    loop {
        let started = tokio::time::Instant::now();
        rebuild(&options, &stores, &mut refs, &manager, &board, &mut logged, &mut cache).await;
        let _ = tokio::task::spawn_blocking(give_back_freed_memory).await;
        // As long idle as busy: a stream of changes costs at most half a core.
        let idle_until = tokio::time::Instant::now() + started.elapsed();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed.notified() => {}
        }
        // Fold a burst of changes (a rollout, a relist) into one rebuild.
        let until = idle_until.max(tokio::time::Instant::now() + options.debounce);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(until) => {}
        }
    }
    watchers_stop.cancel();
}

async fn rebuild<S: SeriesSink>(
    options: &DiscoveryOptions,
    stores: &Stores,
    refs: &mut RefWatchers,
    manager: &Arc<TargetManager<S>>,
    board: &StatusBoard,
    logged: &mut HashSet<String>,
    cache: &mut ShardCache,
) {
    let started = std::time::Instant::now();
    let snapshot = Snapshot {
        service_monitors: stores.service_monitors.as_ref().map(MonitorStore::state).unwrap_or_default(),
        pod_monitors: stores.pod_monitors.as_ref().map(MonitorStore::state).unwrap_or_default(),
        services: stores.services.state(),
        endpoint_slices: stores.endpoint_slices.state(),
        pods: stores.pods.state(),
        secrets: refs.secrets(),
        config_maps: refs.config_maps(),
    };
    let shard = current_shard(options, stores.statefulset.as_ref());
    let build_options = options.build;
    let dir = options.credentials_dir.clone();
    let mut shard_cache = std::mem::take(cache);
    let manager_ = Arc::clone(manager);
    // Relabeling thousands of targets and writing credential files: off the async threads. Each
    // group goes from the build to the shard and to the manager before the next is built, so
    // that only what the manager keeps of it stays.
    let work = tokio::task::spawn_blocking(move || {
        let mut creds = CredentialFiles::new(&dir, &snapshot.secrets, &snapshot.config_maps);
        let mut sync = manager_.provider_sync("discovery");
        let mut outcome = Outcome::default();
        let mut per_group = Vec::new();
        let mut monitors = build_each(&snapshot, &build_options, &mut creds, &mut |group, origin| {
            let mut one = shard_cache.keep_owned_one(group, shard);
            outcome.total += one.total;
            outcome.owned += one.here;
            outcome.errors.append(&mut one.errors);
            let limited = origin.target_limit.filter(|l| one.here > *l).map(|limit| {
                one.group.targets.clear();
                format!(
                    "spec.targetLimit: {} targets of {} exceed the limit of {limit}; none scraped",
                    one.here, one.group.source
                )
            });
            if !one.group.targets.is_empty() {
                sync.add(&one.group);
            }
            per_group.push((origin, one.total, one.here, limited));
        });
        shard_cache.finish();
        let synced_at = std::time::Instant::now();
        outcome.errors.extend(sync.finish());
        outcome.synced_in = synced_at.elapsed();
        for (origin, total, here, limited) in per_group {
            let Some(mi) = origin.monitor else { continue };
            monitors[mi].targets_total += total;
            monitors[mi].targets_here += here;
            if let Some(error) = limited {
                monitors[mi].errors.push(error);
                monitors[mi].targets_here -= here;
            }
        }
        let (referenced, written) = creds.into_parts();
        (outcome, monitors, referenced, written, shard_cache)
    });
    let Ok((outcome, monitors, referenced, written, shard_cache)) = work.await else {
        tracing::error!("target discovery panicked; keeping the previous targets");
        return;
    };
    *cache = shard_cache;
    remove_unused_files(&options.credentials_dir, &written);
    refs.reconcile(&referenced);

    let mut target_errors: Vec<String> = outcome.errors.iter().map(|e| e.to_string()).collect();
    target_errors.sort();
    target_errors.dedup();
    let mut now_logged = HashSet::new();
    for m in &monitors {
        let what = format!("{} {}/{}", m.kind, m.namespace, m.name);
        for u in &m.unsupported {
            let line = format!("{what}: {u}");
            if !logged.contains(&line) {
                tracing::warn!(monitor = %what, field = %u, "monitor field not supported");
            }
            now_logged.insert(line);
        }
        for e in &m.errors {
            let line = format!("{what}: error {e}");
            if !logged.contains(&line) {
                tracing::warn!(monitor = %what, error = %e, "monitor endpoint not scraped");
            }
            now_logged.insert(line);
        }
    }
    for e in &target_errors {
        if !logged.contains(e) {
            tracing::warn!(error = %e, "discovered target not scraped");
        }
        now_logged.insert(e.clone());
    }
    *logged = now_logged;
    tracing::debug!(
        targets_total = outcome.total,
        targets_here = outcome.owned,
        replica = shard.index,
        replicas = shard.replicas,
        took = ?started.elapsed(),
        apply = ?outcome.synced_in,
        "targets rebuilt"
    );
    board.set(DiscoveryStatus {
        replica: shard.index,
        replicas: shard.replicas,
        targets_total: outcome.total,
        targets_here: outcome.owned,
        monitors,
        target_errors,
        referenced: referenced.len(),
        updated_unix_ms: unix_ms(),
    });
}

/// What a rebuild found, over all groups.
#[derive(Default)]
struct Outcome {
    /// Targets after relabeling, over all replicas.
    total: usize,
    /// Of those, this replica's.
    owned: usize,
    /// Targets (or groups) that could not be used.
    errors: Vec<TargetError>,
    /// How long starting, restarting and stopping loops took.
    synced_in: std::time::Duration,
}

/// Returns to the system the pages a rebuild freed. A rebuild allocates and frees the labels of
/// every target (tens of MiB at thousands of targets), interleaved with what stays (new
/// targets, loops, watch events); glibc keeps freed pages that are not at the top of its heaps,
/// so without this the resident size grew with every change (about 110 MiB over 80 changes
/// of `bench discovery`).
pub(crate) fn give_back_freed_memory() {
    objects::forget_unused_strings();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
        let info = libc::mallinfo2();
        tracing::debug!(in_use = info.uordblks, free = info.fordblks, mmapped = info.hblkhd, "heap after trim");
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
