//! This node's pods, for the log labels: a `kube` watcher on
//! `pods?fieldSelector=spec.nodeName=<node>` folded into a small store ([`index`]), read by the
//! tailer through [`PodMetadata`].
//!
//! Data comes in from the Kubernetes API (LIST, then WATCH from its resourceVersion; a relist when
//! the watch is too old, with the shared backoff of [`lgtm_k8s::backoff`] on errors) and goes out as
//! [`PodInfo`]s: `app` and the configured pod labels/annotations ([`info`]).
//!
//! The client comes from [`lgtm_k8s::client::connect`] (kubeconfig, else the in-cluster service
//! account), as in cluster mode.
//!
//! When there is no API: with no client (no kubeconfig, not in a cluster), no node name, or while
//! LIST fails, the store stays empty and every file gets the labels of its path; the watcher keeps
//! retrying and files opened after it succeeds get the pod labels. A lookup never waits: it reads
//! the store under a read lock.
//!
//! Labels are computed when the tailer opens a file, so files opened before the pod is known keep
//! the path labels. Two things make that rare: the agent waits for the first list (at most
//! [`FIRST_LIST_WAIT`], less when the API is plainly unreachable) before the tailer opens the files
//! that already exist; and a new pod is in the API (the watch delivers it when it is scheduled to
//! this node) well before the kubelet has pulled images and created its containers' log files.

pub(crate) mod index;
pub(crate) mod info;

use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use lgtm_config::LogsConfig;
use lgtm_k8s::backoff::retry_watch;
use lgtm_k8s::objects::{PodInfo as CompactPod, Watched};
use lgtm_pipeline::metrics::{counter_vec, int_gauge_vec};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::logs::{PodInfo, PodMetadata};
use index::{Change, PodEntry, PodIndex};
use info::Selection;

/// How long the agent waits at start for the first list of this node's pods.
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// Where the reflector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No list has completed or failed yet.
    Starting,
    /// A list completed: the store holds this node's pods.
    Synced,
    /// No client, no node name, or the last LIST/WATCH failed (the watcher retries).
    Unavailable,
}

/// The reflector of this node's pods. Cheap to clone; the watch runs on a tokio task until the
/// `shutdown` token given to [`PodReflector::start`] is cancelled.
#[derive(Clone)]
pub struct PodReflector {
    index: Arc<RwLock<PodIndex>>,
    state: watch::Receiver<SyncState>,
}

impl std::fmt::Debug for PodReflector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodReflector").field("state", &*self.state.borrow()).finish()
    }
}

impl PodReflector {
    /// Starts watching the pods of `node_name` with a client from [`lgtm_k8s::client::connect`]. Must be
    /// called within a tokio runtime.
    pub fn start(cfg: &LogsConfig, node_name: &str, shutdown: CancellationToken) -> PodReflector {
        PodReflector::spawn(cfg, node_name, None, shutdown)
    }

    /// [`PodReflector::start`] with a given client (tests).
    pub fn start_with_client(
        cfg: &LogsConfig,
        node_name: &str,
        client: Client,
        shutdown: CancellationToken,
    ) -> PodReflector {
        PodReflector::spawn(cfg, node_name, Some(client), shutdown)
    }

    fn spawn(cfg: &LogsConfig, node_name: &str, client: Option<Client>, shutdown: CancellationToken) -> PodReflector {
        let index = Arc::new(RwLock::new(PodIndex::default()));
        let (state_tx, state) = watch::channel(SyncState::Starting);
        let selection = Selection::new(&cfg.pod_labels, &cfg.pod_annotations);
        let task = reflect(index.clone(), state_tx, selection, node_name.to_string(), client, shutdown);
        tokio::spawn(task.instrument(tracing::info_span!("pod-reflector", node = node_name)));
        PodReflector { index, state }
    }

    pub fn state(&self) -> SyncState {
        *self.state.borrow()
    }

    /// Waits until the first list completed (`true`), the API proved unavailable, or `timeout`
    /// passed (`false`).
    pub async fn wait_for_first_list(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        let settled = tokio::time::timeout(timeout, state.wait_for(|s| *s != SyncState::Starting)).await;
        matches!(settled, Ok(Ok(s)) if *s == SyncState::Synced)
    }

    /// Pods of this node currently known (tombstones not counted).
    pub fn pods(&self) -> usize {
        read(&self.index).live()
    }
}

impl PodMetadata for PodReflector {
    fn lookup(&self, namespace: &str, pod: &str, uid: &str) -> Option<PodInfo> {
        let found = read(&self.index).lookup(namespace, pod, uid).map(|i| (*i).clone());
        if found.is_none() {
            metrics().lookups_missed.inc();
        }
        found
    }
}

fn read(index: &RwLock<PodIndex>) -> std::sync::RwLockReadGuard<'_, PodIndex> {
    index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn reflect(
    index: Arc<RwLock<PodIndex>>,
    state: watch::Sender<SyncState>,
    selection: Selection,
    node_name: String,
    client: Option<Client>,
    shutdown: CancellationToken,
) {
    if node_name.is_empty() {
        tracing::warn!("node_name is empty (set NODE_NAME); log labels come from the paths alone");
        state.send_replace(SyncState::Unavailable);
        return;
    }
    let client = match client {
        Some(c) => c,
        None => match lgtm_k8s::client::connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API client; log labels come from the paths alone");
                state.send_replace(SyncState::Unavailable);
                return;
            }
        },
    };
    // Deserialized straight into the compact Pod of `lgtm_k8s::objects`, as discovery's.
    let api: Api<Watched<CompactPod>> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let events = retry_watch(watcher::watcher(api, config).boxed(), |e| {
        matches!(e, Event::InitDone | Event::Apply(_) | Event::Delete(_))
    });
    futures::pin_mut!(events);
    let mut failing = false;
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            e = events.next() => match e { Some(e) => e, None => return },
        };
        match event {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                let change = reduce(&selection, event);
                let live = {
                    let mut ix = index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                    ix.apply(change, Instant::now());
                    ix.live()
                };
                metrics().pods.set(live as i64);
                if done {
                    if failing {
                        tracing::info!(pods = live, "Kubernetes API reachable again");
                    } else {
                        tracing::info!(pods = live, "listed this node's pods");
                    }
                    failing = false;
                    state.send_replace(SyncState::Synced);
                }
            }
            Err(e) => {
                metrics().watch_errors.inc();
                // Logged (rate-limited) and backed off by `retry_watch`.
                tracing::trace!(error = %e, "watching this node's pods failed");
                failing = true;
                // Keep what is known: pods listed before the outage still match their files.
                state.send_if_modified(|s| {
                    let was_starting = *s == SyncState::Starting;
                    if was_starting {
                        *s = SyncState::Unavailable;
                    }
                    was_starting
                });
            }
        }
    }
}

fn reduce(selection: &Selection, event: Event<Watched<CompactPod>>) -> Change {
    let entry = |pod: Watched<CompactPod>| {
        let pod = pod.into_info();
        PodEntry {
            uid: pod.uid.to_string(),
            namespace: pod.meta.namespace().to_string(),
            name: pod.meta.name().to_string(),
            info: Arc::new(selection.info(&pod.meta)),
        }
    };
    match event {
        Event::Init => Change::Init,
        Event::InitApply(p) => Change::InitApply(entry(p)),
        Event::InitDone => Change::InitDone,
        Event::Apply(p) => Change::Apply(entry(p)),
        Event::Delete(p) => Change::Delete(entry(p)),
    }
}

struct PodMetrics {
    pods: IntGauge,
    watch_errors: IntCounter,
    lookups_missed: IntCounter,
}

fn metrics() -> &'static PodMetrics {
    static M: LazyLock<PodMetrics> = LazyLock::new(|| PodMetrics {
        pods: int_gauge_vec("lgtm_agent_logs_pods_known", "Pods of this node known to the pod reflector.", &[])
            .with_label_values(&[] as &[&str]),
        watch_errors: counter_vec(
            "lgtm_agent_logs_pod_watch_errors_total",
            "Failed LIST or WATCH requests for this node's pods (retried with backoff).",
            &[],
        )
        .with_label_values(&[] as &[&str]),
        lookups_missed: counter_vec(
            "lgtm_agent_logs_pod_lookups_missed_total",
            "Log files opened whose pod was unknown (labels from the path alone).",
            &[],
        )
        .with_label_values(&[] as &[&str]),
    });
    &M
}
