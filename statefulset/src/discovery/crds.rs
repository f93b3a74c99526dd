//! The Prometheus Operator's monitor kinds, watched only once API discovery shows them.
//!
//! Without the CRDs a LIST of `servicemonitors` answers 404 forever; listing anyway cost two
//! requests a second and a log line each (issue 22). Instead the group version
//! `monitoring.coreos.com/v1` is asked for every [`RECHECK`] until the kinds appear; an absent
//! kind does not hold up the first build, and its absence and its appearance are logged once.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use lgtm_k8s::reflect::spawn_reflector;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// How often absent monitor kinds are looked for again.
pub const RECHECK: Duration = Duration::from_secs(60);

const GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// What discovery knows of one monitor kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not asked yet, or the API did not answer.
    Unknown,
    Absent,
    /// Served: its watch runs.
    Present,
}

/// The store of one monitor kind, filled once the kind is served.
#[derive(Clone)]
pub struct MonitorStore {
    store: Arc<RwLock<Option<Store<DynamicObject>>>>,
    presence: watch::Receiver<Presence>,
}

impl MonitorStore {
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(Store::state).unwrap_or_default()
    }

    /// Returns once the kind is known absent, or present and listed.
    pub async fn wait_until_ready(&self) {
        let mut presence = self.presence.clone();
        let Ok(p) = presence.wait_for(|p| *p != Presence::Unknown).await.map(|p| *p) else { return };
        if p == Presence::Present {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(store) = store {
                let _ = store.wait_until_ready().await;
            }
        }
    }
}

struct Kind {
    kind: &'static str,
    plural: &'static str,
    store: Arc<RwLock<Option<Store<DynamicObject>>>>,
    presence: watch::Sender<Presence>,
}

/// Starts looking for the wanted monitor kinds (`(kind, plural)`); returns their stores in order.
pub fn spawn_monitor_watches(
    client: &Client,
    wanted: &[(&'static str, &'static str)],
    changed: &Arc<Notify>,
    stop: &CancellationToken,
) -> Vec<MonitorStore> {
    let mut kinds = Vec::new();
    let mut stores = Vec::new();
    for (kind, plural) in wanted {
        let (presence, rx) = watch::channel(Presence::Unknown);
        let store = Arc::new(RwLock::new(None));
        stores.push(MonitorStore { store: store.clone(), presence: rx });
        kinds.push(Kind { kind, plural, store, presence });
    }
    if kinds.is_empty() {
        return stores;
    }
    let (client, changed, stop) = (client.clone(), changed.clone(), stop.clone());
    tokio::spawn(async move {
        let mut backoff = lgtm_k8s::backoff::watch_backoff();
        loop {
            let wait = match client.list_api_group_resources(GROUP_VERSION).await {
                Ok(list) => {
                    backoff.reset();
                    let served = |plural: &str| list.resources.iter().any(|r| r.name == plural);
                    for k in &kinds {
                        let now = if served(k.plural) { Presence::Present } else { Presence::Absent };
                        settle(k, now, &client, &changed, &stop);
                    }
                    RECHECK
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    for k in &kinds {
                        settle(k, Presence::Absent, &client, &changed, &stop);
                    }
                    RECHECK
                }
                Err(e) => {
                    let delay = backoff.next_delay(None);
                    tracing::debug!(error = %e, retry_in = ?delay, "API discovery of {GROUP_VERSION} failed");
                    delay
                }
            };
            if kinds.iter().all(|k| *k.presence.borrow() == Presence::Present) {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    stores
}

/// Records what discovery found of `k`; starts its watch when it first appears.
fn settle(k: &Kind, now: Presence, client: &Client, changed: &Arc<Notify>, stop: &CancellationToken) {
    let was = *k.presence.borrow();
    if was == now || was == Presence::Present {
        return;
    }
    if now == Presence::Absent {
        tracing::info!(
            kind = k.kind,
            recheck = ?RECHECK,
            "{} is not served ({GROUP_VERSION}: Prometheus Operator CRDs not installed); not watched until it appears",
            k.kind
        );
    } else {
        if was == Presence::Absent {
            tracing::info!(kind = k.kind, "{} is served now; watching it", k.kind);
        }
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", k.kind), k.plural);
        let writer = reflector::store::Writer::new(ar.clone());
        *k.store.write().unwrap_or_else(|p| p.into_inner()) = Some(writer.as_reader());
        let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
        spawn_reflector(k.kind.into(), api, watcher::Config::default(), writer, changed.clone(), stop.clone());
    }
    k.presence.send_replace(now);
}
