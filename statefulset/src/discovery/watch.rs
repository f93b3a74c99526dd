//! The watchers of the Secrets and ConfigMaps monitors reference: one per object (by name,
//! started and stopped as monitors change), each a [`lgtm_k8s::reflect`] watch. Every change
//! wakes the fold loop through a [`Notify`]; nothing polls.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use lgtm_k8s::reflect::spawn_reflector;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::credentials::{ObjectMap, ObjectRef};

struct RefWatch<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Watchers of the Secrets and ConfigMaps that monitors reference, each by name.
pub struct RefWatchers {
    client: Client,
    changed: Arc<Notify>,
    stop: CancellationToken,
    secrets: HashMap<(String, String), RefWatch<Secret>>,
    config_maps: HashMap<(String, String), RefWatch<ConfigMap>>,
}

impl RefWatchers {
    pub fn new(client: Client, changed: Arc<Notify>, stop: CancellationToken) -> RefWatchers {
        RefWatchers { client, changed, stop, secrets: HashMap::new(), config_maps: HashMap::new() }
    }

    /// Starts watchers for new references and stops those no monitor references any more.
    pub fn reconcile(&mut self, wanted: &BTreeSet<ObjectRef>) {
        let mut secrets = BTreeSet::new();
        let mut config_maps = BTreeSet::new();
        for r in wanted {
            match r {
                ObjectRef::Secret { namespace, name } => secrets.insert((namespace.clone(), name.clone())),
                ObjectRef::ConfigMap { namespace, name } => config_maps.insert((namespace.clone(), name.clone())),
            };
        }
        reconcile_kind(&mut self.secrets, &secrets, "Secret", &self.client, &self.changed, &self.stop);
        reconcile_kind(&mut self.config_maps, &config_maps, "ConfigMap", &self.client, &self.changed, &self.stop);
    }

    pub fn secrets(&self) -> ObjectMap<Secret> {
        objects(&self.secrets)
    }

    pub fn config_maps(&self) -> ObjectMap<ConfigMap> {
        objects(&self.config_maps)
    }
}

impl Drop for RefWatchers {
    fn drop(&mut self) {
        for w in self.secrets.values() {
            w.stop.cancel();
        }
        for w in self.config_maps.values() {
            w.stop.cancel();
        }
    }
}

fn objects<K>(watches: &HashMap<(String, String), RefWatch<K>>) -> ObjectMap<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut out = ObjectMap::new();
    for (key, w) in watches {
        if let Some(o) = w.store.state().into_iter().next() {
            out.insert(key.clone(), o);
        }
    }
    out
}

fn reconcile_kind<K>(
    watches: &mut HashMap<(String, String), RefWatch<K>>,
    wanted: &BTreeSet<(String, String)>,
    kind: &str,
    client: &Client,
    changed: &Arc<Notify>,
    stop: &CancellationToken,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    watches.retain(|key, w| {
        let keep = wanted.contains(key);
        if !keep {
            w.stop.cancel();
            w.task.abort();
        }
        keep
    });
    for (ns, name) in wanted {
        if watches.contains_key(&(ns.clone(), name.clone())) {
            continue;
        }
        let (store, writer) = reflector::store();
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let child = stop.child_token();
        let task = spawn_reflector(format!("{kind} {ns}/{name}"), api, config, writer, changed.clone(), child.clone());
        watches.insert((ns.clone(), name.clone()), RefWatch { store, stop: child, task });
    }
}
