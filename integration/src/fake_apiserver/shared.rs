//! State shared by the HTTP handlers, the watch streams and the programmatic API: the store
//! behind a mutex (held only for short, non-async sections) and a signal that wakes watches
//! after every write.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::store::Store;

#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
    shutting_down: AtomicBool,
    pub bookmark_interval: Duration,
    /// Every request for a resource, in arrival order (the audit log).
    calls: Mutex<Vec<ApiCall>>,
    /// Every request path (discovery included), in arrival order.
    paths: Mutex<Vec<String>>,
    /// API groups served as if their CRDs were not installed (absent from discovery, 404).
    hidden_groups: Mutex<HashSet<String>>,
    /// `(group, plural)` answered `403 Forbidden`, as RBAC does for a resource a Role lacks.
    forbidden: Mutex<HashSet<(String, String)>>,
}

/// One request for a resource as RBAC sees it: verb, API group, resource (with its subresource,
/// `nodes/proxy`), namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// `""` for the core group.
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Shared {
    pub fn new(max_log: usize, bookmark_interval: Duration) -> Shared {
        let store = Store::new(max_log);
        let (changed, _) = watch::channel(store.resource_version());
        Shared {
            store: Mutex::new(store),
            changed,
            shutting_down: AtomicBool::new(false),
            bookmark_interval,
            calls: Mutex::new(Vec::new()),
            paths: Mutex::new(Vec::new()),
            hidden_groups: Mutex::new(HashSet::new()),
            forbidden: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store consistent enough for a test fake.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.lock())
    }

    /// Runs a write and wakes every watch.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (result, resource_version) = {
            let mut store = self.lock();
            let result = f(&mut store);
            (result, store.resource_version())
        };
        self.changed.send_replace(resource_version);
        result
    }

    pub fn record(&self, call: ApiCall) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record_path(&self, path: &str) {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).push(path.to_string());
    }

    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_group_hidden(&self, group: &str, hidden: bool) {
        let mut groups = self.hidden_groups.lock().unwrap_or_else(|p| p.into_inner());
        if hidden {
            groups.insert(group.to_string());
        } else {
            groups.remove(group);
        }
    }

    pub fn is_group_hidden(&self, group: &str) -> bool {
        self.hidden_groups.lock().unwrap_or_else(|p| p.into_inner()).contains(group)
    }

    pub fn set_forbidden(&self, group: &str, plural: &str, forbidden: bool) {
        let mut set = self.forbidden.lock().unwrap_or_else(|p| p.into_inner());
        let key = (group.to_string(), plural.to_string());
        if forbidden {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub fn is_forbidden(&self, group: &str, plural: &str) -> bool {
        self.forbidden.lock().unwrap_or_else(|p| p.into_inner()).contains(&(group.to_string(), plural.to_string()))
    }

    /// Serving again after [`Shared::shut_down`] (a restart keeps the store).
    pub fn resume(&self) {
        self.shutting_down.store(false, Ordering::SeqCst);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Ends every open watch stream, so that a graceful HTTP shutdown can complete.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.changed.send_modify(|_| {});
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
