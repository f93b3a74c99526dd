//! The watchers: the Pods are the compact ones of [`lgtm_k8s::objects::PodInfo`], from the
//! watch discovery reads too ([`SharedWatch`]: one list and one copy of every Pod in the
//! process); the other kinds one `kube` watcher -> reflector each, each object slimmed on
//! arrival to the fields the series read (a Node's image list, a workload's pod template are
//! dropped).

use std::fmt::Debug;
use std::hash::Hash;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::Snapshot;
use lgtm_k8s::objects::{PodInfo, ReplicaSetInfo};
use lgtm_k8s::reflect::spawn_watch;
use lgtm_k8s::store::{spawn_compact_watch, CompactStore, SharedWatch, Subscription};

/// The reflector stores of every kind the series come from.
pub struct Stores {
    pub pods: Subscription<PodInfo>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    pub deployments: Store<Deployment>,
    pub replicasets: CompactStore<ReplicaSetInfo>,
    pub daemonsets: Store<DaemonSet>,
    pub statefulsets: Store<StatefulSet>,
    pub jobs: Store<Job>,
}

impl Stores {
    /// Starts the watchers; they stop with `stop` (the Pod watch when no one else reads it).
    pub fn start(client: &Client, pods: &SharedWatch<PodInfo>, stop: &CancellationToken) -> Stores {
        Stores {
            pods: pods.subscribe(None),
            nodes: reflect("Node", client, slim_node, stop),
            namespaces: reflect("Namespace", client, slim_meta, stop),
            deployments: reflect("Deployment", client, slim_deployment, stop),
            replicasets: spawn_compact_watch(client, || {}, stop.clone()).0,
            daemonsets: reflect("DaemonSet", client, slim_daemonset, stop),
            statefulsets: reflect("StatefulSet", client, slim_statefulset, stop),
            jobs: reflect("Job", client, slim_job, stop),
        }
    }

    /// Waits until every watcher has listed once.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.replicasets.wait_until_ready(),
            self.daemonsets.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.jobs.wait_until_ready(),
        );
    }

    /// The objects now (shared with the stores: `Arc`s, no copies).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pods: self.pods.state(),
            nodes: self.nodes.state(),
            namespaces: self.namespaces.state(),
            deployments: self.deployments.state(),
            replicasets: self.replicasets.state(),
            daemonsets: self.daemonsets.state(),
            statefulsets: self.statefulsets.state(),
            jobs: self.jobs.state(),
        }
    }
}

fn reflect<K>(kind: &'static str, client: &Client, slim: fn(&mut K), stop: &CancellationToken) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    let (store, writer) = reflector::store();
    let span = tracing::info_span!("cluster_state_watch", kind);
    spawn_watch(span, Api::all(client.clone()), watcher::Config::default(), writer, slim, || {}, stop.clone());
    store
}

fn slim_meta<K: Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.finalizers = None;
}

pub(crate) fn slim_node(n: &mut Node) {
    slim_meta(n);
    if let Some(status) = n.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.daemon_endpoints = None;
        status.config = None;
        for c in status.conditions.iter_mut().flatten() {
            c.message = None;
        }
    }
}

fn slim_deployment(d: &mut Deployment) {
    slim_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
    }
}

fn slim_daemonset(d: &mut DaemonSet) {
    slim_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
    }
}

fn slim_statefulset(s: &mut StatefulSet) {
    slim_meta(s);
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
        spec.volume_claim_templates = None;
    }
}

fn slim_job(j: &mut Job) {
    slim_meta(j);
    if let Some(spec) = j.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = None;
    }
}
