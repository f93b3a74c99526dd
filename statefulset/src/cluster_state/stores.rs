//! The watchers: the Pods are the compact ones of [`lgtm_k8s::objects::PodInfo`], from the
//! watch discovery reads too ([`SharedWatch`]: one list and one copy of every Pod in the
//! process); every other kind is watched into a store of its compact type
//! ([`lgtm_k8s::objects`]: only the fields the series read, deserialized straight from the API
//! server's JSON; a Node's image list, a workload's pod template are never held).

use kube::Client;
use tokio_util::sync::CancellationToken;

use super::Snapshot;
use lgtm_k8s::objects::{
    Compact, DaemonSetInfo, DeploymentInfo, JobInfo, NamespaceInfo, NodeInfo, PodInfo, ReplicaSetInfo, StatefulSetInfo,
};
use lgtm_k8s::store::{spawn_compact_watch, CompactStore, SharedWatch, Subscription};

/// The stores of every kind the series come from.
pub struct Stores {
    pub pods: Subscription<PodInfo>,
    pub nodes: CompactStore<NodeInfo>,
    pub namespaces: CompactStore<NamespaceInfo>,
    pub deployments: CompactStore<DeploymentInfo>,
    pub replicasets: CompactStore<ReplicaSetInfo>,
    pub daemonsets: CompactStore<DaemonSetInfo>,
    pub statefulsets: CompactStore<StatefulSetInfo>,
    pub jobs: CompactStore<JobInfo>,
}

impl Stores {
    /// Starts the watchers; they stop with `stop` (the Pod watch when no one else reads it).
    pub fn start(client: &Client, pods: &SharedWatch<PodInfo>, stop: &CancellationToken) -> Stores {
        Stores {
            pods: pods.subscribe(None),
            nodes: watch(client, stop),
            namespaces: watch(client, stop),
            deployments: watch(client, stop),
            replicasets: watch(client, stop),
            daemonsets: watch(client, stop),
            statefulsets: watch(client, stop),
            jobs: watch(client, stop),
        }
    }

    /// Waits until every watcher has listed once (or was refused: 403, 404).
    pub async fn wait_until_ready(&self) {
        futures::join!(
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

/// A store of every object of `T`'s kind, read at each interval (no wake-up on changes).
fn watch<T>(client: &Client, stop: &CancellationToken) -> CompactStore<T>
where
    T: Compact + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    spawn_compact_watch(client, || {}, stop.clone()).0
}
