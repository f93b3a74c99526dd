//! Cluster-state metrics (cluster mode): the series kube-state-metrics gives, with its metric
//! names and labels, so the kubernetes-mixin dashboards and alerts work unchanged.
//!
//! Data flow: [`stores`] reads the compact Pods of the watch discovery shares
//! ([`lgtm_k8s::store::SharedWatch`]) and watches Nodes, Namespaces, Deployments, ReplicaSets,
//! DaemonSets, StatefulSets and Jobs into stores of their compact types
//! ([`lgtm_k8s::objects`]: the fields the series read, nothing else). Every `scrape.interval` the emitter takes a [`Snapshot`] of the stores (`Arc`s, no
//! copies) and [`render_interval`]s it (no API calls) into a [`frame::Frame`], which encodes
//! the series into remote-write requests as they come and hands each full one to the
//! pipeline's `MetricsSink`; then one staleness marker for every series the previous interval
//! had and this one has not (a deleted object, a container no longer waiting), found by
//! rendering again the previous versions of the objects changed since. No interval's series
//! are held.
//!
//! Labels: those of kube-state-metrics per metric (`namespace`, `pod`, `uid`, `container`,
//! `node`, `deployment`, `daemonset`, `statefulset`, `job_name`, ...), plus
//! `job="kube-state-metrics"` — the mixin's selectors are `{job="kube-state-metrics"}`, the job
//! kube-state-metrics is scraped as — and `cluster`, which the sink adds.
//!
//! Which replica: only the holder of a `coordination.k8s.io/v1` Lease
//! (`<events.lease_name minus -events>-cluster-state`, `lgtm-agent-cluster-state` by default, in
//! the events lease's namespace and with its duration) watches and emits. One writer per series
//! means no duplicate samples and no out-of-order rejections when replicas come and go; sharding
//! objects by rendezvous would not save the watching (every replica would still list every
//! Pod to know its share) and would hand series between replicas on every scale change. The
//! followers keep no stores of their own (the Pods of discovery's watch are there anyway); a
//! new holder lists the other kinds once (seconds) and continues the same series. The Lease is separate from the events Lease so either source can be off.
//!
//! What it does not do: kube-state-metrics' other families (Services, PVCs, HPAs, CronJobs,
//! labels/annotations as `kube_*_labels`), `--metric-allowlist` style filtering, or staleness
//! markers for series that disappeared while no replica held the Lease (those end after
//! Prometheus' 5-minute lookback).

pub mod frame;
mod nodes;
mod pods;
pub mod resources;
mod stores;
mod workloads;

#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use lgtm_config::Config;
use lgtm_k8s::objects::{
    DaemonSetInfo, DeploymentInfo, JobInfo, NamespaceInfo, NodeInfo, PodInfo, ReplicaSetInfo, StatefulSetInfo,
};
use lgtm_k8s::store::SharedWatch;
use lgtm_pipeline::{Ack, MetricsSink};
use tokio_util::sync::CancellationToken;

use crate::events::lease::{LeaderElection, LeaseConfig};
use frame::Frame;
pub use stores::Stores;

/// The `job` label of every series: what kube-state-metrics is scraped as.
pub const JOB: &str = "kube-state-metrics";

/// How the cluster-state source runs; [`ClusterStateOptions::from_config`] reads the config.
#[derive(Debug, Clone)]
pub struct ClusterStateOptions {
    pub lease: LeaseConfig,
    /// How often the holder renews and a candidate retries: a third of the lease duration.
    pub retry_period: Duration,
    /// How often series are emitted (`scrape.interval`).
    pub interval: Duration,
    /// How long a new holder waits for the first lists before emitting what it has.
    pub initial_sync_timeout: Duration,
    /// Series per remote-write request.
    pub max_series_per_request: usize,
    /// On every series: `job`; [`run`] adds the sink's external labels (`cluster`).
    pub common_labels: Vec<(String, String)>,
}

impl ClusterStateOptions {
    pub fn from_config(cfg: &Config) -> ClusterStateOptions {
        let events = crate::events::EventsOptions::from_config(cfg);
        let base = cfg.events.lease_name.trim_end_matches("-events");
        let base = if base.is_empty() { "lgtm-agent" } else { base };
        ClusterStateOptions {
            lease: LeaseConfig { name: format!("{base}-cluster-state"), ..events.lease },
            retry_period: events.retry_period,
            interval: cfg.scrape.interval.get().max(Duration::from_millis(100)),
            initial_sync_timeout: Duration::from_secs(30),
            max_series_per_request: 2000,
            common_labels: vec![("job".into(), JOB.into())],
        }
    }
}

/// The objects of one interval.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<Arc<PodInfo>>,
    pub nodes: Vec<Arc<NodeInfo>>,
    pub namespaces: Vec<Arc<NamespaceInfo>>,
    pub deployments: Vec<Arc<DeploymentInfo>>,
    pub replicasets: Vec<Arc<ReplicaSetInfo>>,
    pub daemonsets: Vec<Arc<DaemonSetInfo>>,
    pub statefulsets: Vec<Arc<StatefulSetInfo>>,
    pub jobs: Vec<Arc<JobInfo>>,
}

impl Snapshot {
    /// The objects of `self` (an earlier snapshot) that `current` no longer holds the same
    /// `Arc` of: changed or deleted since. The others render the same series in both.
    pub fn changed_since(&self, current: &Snapshot) -> Snapshot {
        fn gone<T>(previous: &[Arc<T>], current: &[Arc<T>]) -> Vec<Arc<T>> {
            let now: HashSet<*const T> = current.iter().map(Arc::as_ptr).collect();
            previous.iter().filter(|o| !now.contains(&Arc::as_ptr(o))).cloned().collect()
        }
        Snapshot {
            pods: gone(&self.pods, &current.pods),
            nodes: gone(&self.nodes, &current.nodes),
            namespaces: gone(&self.namespaces, &current.namespaces),
            deployments: gone(&self.deployments, &current.deployments),
            replicasets: gone(&self.replicasets, &current.replicasets),
            daemonsets: gone(&self.daemonsets, &current.daemonsets),
            statefulsets: gone(&self.statefulsets, &current.statefulsets),
            jobs: gone(&self.jobs, &current.jobs),
        }
    }
}

/// One interval into `frame`: every series of `current`, then a staleness marker for each
/// series `previous` had and `current` has not.
pub fn render_interval(current: &Snapshot, previous: Option<&Snapshot>, frame: &mut Frame) {
    render(current, frame);
    if let Some(previous) = previous {
        frame.start_stale();
        render(&previous.changed_since(current), frame);
    }
}

/// Every series of `snapshot` into `frame`.
pub fn render(snapshot: &Snapshot, frame: &mut Frame) {
    for o in &snapshot.namespaces {
        nodes::namespace(o, frame);
    }
    for o in &snapshot.nodes {
        nodes::node(o, frame);
    }
    for o in &snapshot.deployments {
        workloads::deployment(o, frame);
    }
    for o in &snapshot.replicasets {
        workloads::replicaset(o, frame);
    }
    for o in &snapshot.daemonsets {
        workloads::daemonset(o, frame);
    }
    for o in &snapshot.statefulsets {
        workloads::statefulset(o, frame);
    }
    for o in &snapshot.jobs {
        workloads::job(o, frame);
    }
    for o in &snapshot.pods {
        pods::pod(o, frame);
    }
}

/// Competes for the Lease until `stop`; while holding it, watches the objects and emits their
/// series every interval into `sink`. On `stop` the holder releases the Lease (no staleness
/// markers: the next holder continues the same series). The Pods come from `pods`, the watch
/// discovery reads too (started while holding the Lease if discovery is off).
pub async fn run(
    client: Client,
    pods: Arc<SharedWatch<PodInfo>>,
    mut options: ClusterStateOptions,
    sink: MetricsSink,
    stop: CancellationToken,
) {
    // The frames are shipped encoded, so the sink's external labels (`cluster`) go in here.
    for l in sink.external_labels() {
        if !options.common_labels.iter().any(|(name, _)| *name == l.name) {
            options.common_labels.push((l.name.clone(), l.value.clone()));
        }
    }
    let mut election = LeaderElection::new(client.clone(), options.lease.clone());
    loop {
        loop {
            match election.try_acquire_or_renew(None).await {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, lease = %options.lease.name, "cluster-state lease not reachable"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(options.retry_period) => {}
            }
        }
        tracing::info!(identity = %election.identity(), lease = %options.lease.name, "holding the cluster-state lease; emitting cluster-state series");
        let lost = lead(&client, &pods, &options, &sink, &mut election, &stop).await;
        if lost {
            tracing::warn!(identity = %election.identity(), "lost the cluster-state lease; stopped emitting");
            continue;
        }
        if let Err(e) = election.release(None).await {
            tracing::warn!(error = %e, "releasing the cluster-state lease failed; another replica takes over when it expires");
        }
        return;
    }
}

/// Watches and emits until `stop` (returns false) or the Lease is lost (true).
async fn lead(
    client: &Client,
    pods: &SharedWatch<PodInfo>,
    options: &ClusterStateOptions,
    sink: &MetricsSink,
    election: &mut LeaderElection,
    stop: &CancellationToken,
) -> bool {
    let watch_stop = stop.child_token();
    let _guard = watch_stop.clone().drop_guard();
    let stores = Arc::new(Stores::start(client, pods, &watch_stop));
    let mut renewed = Instant::now();
    let renew_deadline = options.lease.duration * 2 / 3;
    // The first lists; the Lease is renewed meanwhile.
    {
        let ready = stores.wait_until_ready();
        let mut ready = std::pin::pin!(ready);
        let deadline = tokio::time::sleep(options.initial_sync_timeout);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut ready => break,
                _ = &mut deadline => {
                    tracing::warn!(timeout = ?options.initial_sync_timeout, "not every watch listed its objects in time; emitting what is known");
                    break;
                }
                _ = tokio::time::sleep(options.retry_period) => {
                    if let Some(true) = renew(election, &mut renewed, renew_deadline).await {
                        return true;
                    }
                }
            }
        }
    }
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewals = tokio::time::interval(options.retry_period);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renewals.reset();
    let mut previous: Option<(Snapshot, usize)> = None;
    // An interval is sent by a task of its own, so a slow backend holds up the next interval
    // (its tick waits), not the Lease renewals. Aborted when leading ends.
    let mut sending: Option<AbortOnDrop<Option<(Snapshot, usize)>>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = ticks.tick(), if sending.is_none() => {
                let (stores, options, sink) = (stores.clone(), options.clone(), sink.clone());
                sending = Some(AbortOnDrop(tokio::spawn(emit(stores, options, sink, previous.take()))));
            }
            done = async { (&mut sending.as_mut().expect("sending").0).await }, if sending.is_some() => {
                sending = None;
                previous = done.ok().flatten();
            }
            _ = renewals.tick() => {
                if let Some(true) = renew(election, &mut renewed, renew_deadline).await {
                    return true;
                }
            }
        }
    }
}

/// Renews the Lease. `Some(true)`: lost; `Some(false)`: renewed; `None`: failed, still ours.
async fn renew(election: &mut LeaderElection, renewed: &mut Instant, deadline: Duration) -> Option<bool> {
    match election.try_acquire_or_renew(None).await {
        Ok(Some(_)) => {
            *renewed = Instant::now();
            Some(false)
        }
        Ok(None) => Some(true),
        Err(e) if renewed.elapsed() > deadline => {
            tracing::warn!(error = %e, "cluster-state lease not renewed in time");
            Some(true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "renewing the cluster-state lease failed; retrying");
            None
        }
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Requests rendered ahead of the sink: the rest wait to be rendered.
const REQUESTS_AHEAD: usize = 2;

/// Requests handed to the sink and not yet delivered: the next waits (at most an interval)
/// for the oldest. Without this the whole interval (about 20 MiB of requests at 100,000
/// series) sat in the queue at once, which was the peak resident size.
const IN_FLIGHT: usize = 4;

/// One interval: snapshot, then render off the async threads while the requests are sent as
/// they fill. Returns the snapshot and its series count, for the next interval's staleness
/// markers (`None`: rendering failed; the next interval sends none).
async fn emit(
    stores: Arc<Stores>,
    options: ClusterStateOptions,
    sink: MetricsSink,
    previous: Option<(Snapshot, usize)>,
) -> Option<(Snapshot, usize)> {
    let started = Instant::now();
    let snapshot = stores.snapshot();
    let (tx, mut rx) = tokio::sync::mpsc::channel(REQUESTS_AHEAD);
    let expected = previous.as_ref().map(|p| p.1).unwrap_or(0);
    let frame = Frame::new(options.common_labels.clone(), unix_ms(), options.max_series_per_request);
    let mut frame = frame.sending(tx, expected);
    let work = tokio::task::spawn_blocking(move || {
        render_interval(&snapshot, previous.as_ref().map(|p| &p.0), &mut frame);
        drop(previous);
        let (_, written) = frame.finish();
        (snapshot, written)
    });
    let mut in_flight: VecDeque<Ack> = VecDeque::with_capacity(IN_FLIGHT);
    while let Some((bytes, samples)) = rx.recv().await {
        while in_flight.len() >= IN_FLIGHT {
            let Some(oldest) = in_flight.pop_front() else { break };
            let _ = tokio::time::timeout(options.interval, oldest.outcome()).await;
        }
        match sink.send_encoded(bytes, samples).await {
            Ok(ack) => in_flight.push_back(ack),
            Err(e) => tracing::warn!(error = %e, "cluster-state series not queued"),
        }
    }
    drop(in_flight);
    let done = work.await;
    // The strings only replaced objects held, and the pages an interval's requests took.
    let _ = tokio::task::spawn_blocking(crate::discovery::give_back_freed_memory).await;
    match done {
        Ok((snapshot, written)) => {
            tracing::debug!(series = written.series, stale = written.stale, took = ?started.elapsed(), "cluster-state series emitted");
            Some((snapshot, written.series))
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering cluster-state series panicked");
            None
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
