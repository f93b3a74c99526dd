//! The stores of discovery's compact objects ([`crate::objects`]): a watch per kind keeps a map
//! of every object, read as a snapshot at each rebuild.
//!
//! Not kube's reflector store: for each object it keeps an `ObjectRef` key (four strings, two of
//! them allocated, about 160 bytes) and stores a clone of what the watch yields. Here the key
//! is a 64-bit hash of namespace and name (the object holds both; two of 10,000 objects share
//! a hash with a chance of about 3e-12) and the object is moved in. At 5,000 objects that is
//! about 0.8 MiB less, and no second copy of each object while a relist is applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::backoff::retry_watch;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;
use xxhash_rust::xxh3::Xxh3;

use crate::objects::{Compact, Watched};

type Objects<T> = HashMap<u64, Arc<T>>;

/// The objects of one kind, as of the watch's latest event.
pub struct CompactStore<T> {
    objects: Arc<RwLock<Objects<T>>>,
    ready: watch::Receiver<bool>,
}

impl<T> CompactStore<T> {
    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<T>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Returns once the first list is in, was refused (403, 404), or the watch has ended.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

fn key<T: Compact>(object: &T) -> u64 {
    let meta = object.meta();
    let mut h = Xxh3::new();
    h.update(meta.namespace().as_bytes());
    h.update(&[0]);
    h.update(meta.name().as_bytes());
    h.digest()
}

/// A list or watch the API server refused (403 Forbidden, 404 Not Found), not one it failed.
fn refused(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(code, 403 | 404)
}

/// Watches every object of `T`'s kind until `stop`, calling `on_change` on every change
/// except the events of a relist in progress (a relist counts once, when it is complete). A
/// failing watch is retried with the shared backoff ([`crate::backoff`]).
pub fn spawn_compact_watch<T>(
    client: &Client,
    on_change: impl Fn() + Send + 'static,
    stop: CancellationToken,
) -> (CompactStore<T>, JoinHandle<()>)
where
    T: Compact + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let objects: Arc<RwLock<Objects<T>>> = Arc::default();
    let (ready_tx, ready) = watch::channel(false);
    let store = CompactStore { objects: objects.clone(), ready };
    let kind = <T::Kind as k8s_openapi::Resource>::KIND;
    let api = Api::<Watched<T>>::all(client.clone());
    let task = tokio::spawn(
        async move {
            let stream = kube::runtime::watcher(api, watcher::Config::default()).boxed();
            let stream = retry_watch(stream, |e| matches!(e, Event::InitDone | Event::Apply(_) | Event::Delete(_)));
            let mut stream = std::pin::pin!(stream);
            let mut relist: Objects<T> = HashMap::new();
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => return,
                    item = stream.next() => item,
                };
                let event = match item {
                    None => return,
                    Some(Ok(event)) => event,
                    // Logged and backed off by `retry_watch`. A list refused for good (403: the
                    // Role lacks the kind; 404) does not hold up the first build.
                    Some(Err(e)) => {
                        if refused(&e) {
                            ready_tx.send_replace(true);
                        }
                        continue;
                    }
                };
                let write = || objects.write().unwrap_or_else(|p| p.into_inner());
                match event {
                    Event::Init => {
                        relist = HashMap::new();
                        continue;
                    }
                    Event::InitApply(o) => {
                        let o = o.into_info();
                        relist.insert(key(&o), Arc::new(o));
                        continue;
                    }
                    Event::InitDone => {
                        *write() = std::mem::take(&mut relist);
                        ready_tx.send_replace(true);
                    }
                    Event::Apply(o) => {
                        let o = o.into_info();
                        write().insert(key(&o), Arc::new(o));
                    }
                    Event::Delete(o) => {
                        write().remove(&key(&o.into_info()));
                    }
                }
                on_change();
            }
        }
        .instrument(tracing::info_span!("watch", kind)),
    );
    (store, task)
}

/// One watch of a kind for every reader in the process (in cluster mode discovery and cluster
/// state read the same Pods): the first [`SharedWatch::subscribe`] starts it, dropping the last
/// [`Subscription`] stops it (cluster state subscribes only while it holds its Lease; discovery
/// for as long as it runs), so the objects are listed and held once.
pub struct SharedWatch<T> {
    client: Client,
    stop: CancellationToken,
    running: Mutex<Weak<Running<T>>>,
}

struct Running<T> {
    store: CompactStore<T>,
    listeners: Arc<Mutex<Vec<Weak<Notify>>>>,
    _stop: DropGuard,
}

/// A reader of a [`SharedWatch`]: the store, while the subscription lives.
pub struct Subscription<T> {
    running: Arc<Running<T>>,
}

impl<T> std::ops::Deref for Subscription<T> {
    type Target = CompactStore<T>;
    fn deref(&self) -> &CompactStore<T> {
        &self.running.store
    }
}

impl<T> SharedWatch<T>
where
    T: Compact + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// Nothing is watched until the first subscription; every watch ends with `stop`.
    pub fn new(client: Client, stop: CancellationToken) -> Arc<SharedWatch<T>> {
        Arc::new(SharedWatch { client, stop, running: Mutex::new(Weak::new()) })
    }

    /// The store of the running watch, started now if none runs. `changed`, if given, is
    /// notified on every change as [`spawn_compact_watch`]'s `on_change` (for as long as the
    /// caller holds it).
    pub fn subscribe(&self, changed: Option<&Arc<Notify>>) -> Subscription<T> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let current = match running.upgrade() {
            Some(r) => r,
            None => {
                let listeners: Arc<Mutex<Vec<Weak<Notify>>>> = Arc::default();
                let notify = listeners.clone();
                let on_change = move || {
                    for n in notify.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade) {
                        n.notify_one();
                    }
                };
                let stop = self.stop.child_token();
                let (store, _) = spawn_compact_watch(&self.client, on_change, stop.clone());
                let r = Arc::new(Running { store, listeners, _stop: stop.drop_guard() });
                *running = Arc::downgrade(&r);
                r
            }
        };
        if let Some(changed) = changed {
            let mut listeners = current.listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners.retain(|l| l.strong_count() > 0);
            listeners.push(Arc::downgrade(changed));
        }
        Subscription { running: current }
    }
}
