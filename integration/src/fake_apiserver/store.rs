//! The objects the fake holds, one global `resourceVersion` counter as etcd keeps, and the log of
//! changes that watches replay from. The log is bounded: when it is trimmed (or compacted on
//! request) a watch from an older `resourceVersion` gets `410 Gone` and must relist.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::resources::{Registry, ResourceType};

/// Why a write or read was refused; each maps to the API server's `Status` of the same reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    #[error("{0}")]
    Invalid(String),
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One entry of the change log.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_version: u64,
    pub change: ChangeType,
    pub resource: ResourceType,
    /// The object after the change (for a delete: as it was, with the delete's resourceVersion).
    pub object: Arc<Value>,
    /// The object before a modification, so that selector-filtered watches can turn a change
    /// that moves an object in or out of their selection into ADDED or DELETED.
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    group: String,
    version: String,
    plural: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn new(rt: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: rt.group.clone(),
            version: rt.version.clone(),
            plural: rt.plural.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// A watch asked to start before the oldest change still in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

#[derive(Debug)]
pub struct Store {
    registry: Registry,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    log: VecDeque<Change>,
    /// Watches may start from this resourceVersion or later; older ones are `410 Gone`.
    oldest_watchable: u64,
    resource_version: u64,
    next_uid: u64,
    max_log: usize,
}

impl Store {
    pub fn new(max_log: usize) -> Store {
        Store {
            registry: Registry::default(),
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            oldest_watchable: 1,
            resource_version: 1,
            next_uid: 1,
            max_log: max_log.max(1),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// The resource type of an object given whole (fixtures and the programmatic API), learning
    /// it when new. Returns the type and the namespace the object belongs in ("" when cluster-scoped).
    pub fn type_of(&mut self, object: &Value) -> Result<(ResourceType, String), StoreError> {
        let (Some(api_version), Some(kind)) = (object["apiVersion"].as_str(), object["kind"].as_str()) else {
            return Err(StoreError::Invalid("object has no apiVersion or kind".into()));
        };
        let namespace = object["metadata"]["namespace"].as_str().filter(|n| !n.is_empty());
        let rt = self.registry.learn_from_object(api_version, kind, namespace.is_some());
        let namespace = if rt.namespaced { namespace.unwrap_or("default").to_string() } else { String::new() };
        Ok((rt, namespace))
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Arc<Value>, StoreError> {
        self.objects.get(&ObjectKey::new(rt, namespace, name)).cloned().ok_or_else(|| not_found(rt, name))
    }

    /// Objects of `rt`, in one namespace or all, in (namespace, name) order.
    pub fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.version == rt.version && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates or replaces unconditionally; an object equal to the stored one is left alone (no
    /// event), so re-reading an unchanged fixture file is silent.
    pub fn apply(&mut self, object: Value) -> Result<Arc<Value>, StoreError> {
        let (rt, namespace) = self.type_of(&object)?;
        let name = name_of(&object)?;
        match self.objects.get(&ObjectKey::new(&rt, &namespace, &name)).cloned() {
            None => self.create(&rt, &namespace, object),
            Some(existing) => {
                let mut candidate = object.clone();
                self.complete(&mut candidate, &rt, &namespace, &name, Some(&existing));
                set_meta(&mut candidate, "resourceVersion", existing["metadata"]["resourceVersion"].clone());
                if candidate == *existing {
                    return Ok(existing);
                }
                let mut object = object;
                strip_meta(&mut object, "resourceVersion");
                self.update(&rt, &namespace, &name, object)
            }
        }
    }

    pub fn create(&mut self, rt: &ResourceType, namespace: &str, mut object: Value) -> Result<Arc<Value>, StoreError> {
        let name = match name_of(&object) {
            Ok(name) => name,
            Err(e) => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05x}", self.next_uid),
                None => return Err(e),
            },
        };
        let key = ObjectKey::new(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists { resource: rt.qualified_plural(), name });
        }
        self.complete(&mut object, rt, namespace, &name, None);
        Ok(self.commit(rt, key, ChangeType::Added, object, None))
    }

    /// Replaces an existing object; a `metadata.resourceVersion` in `object` must be the stored
    /// one (optimistic concurrency, `409 Conflict` otherwise), an absent one replaces regardless.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let key = ObjectKey::new(rt, namespace, name);
        let existing = self.objects.get(&key).cloned().ok_or_else(|| not_found(rt, name))?;
        if let Some(expected) = object["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()) {
            if Some(expected) != existing["metadata"]["resourceVersion"].as_str() {
                return Err(StoreError::Conflict { resource: rt.qualified_plural(), name: name.to_string() });
            }
        }
        self.complete(&mut object, rt, namespace, name, Some(&existing));
        Ok(self.commit(rt, key, ChangeType::Modified, object, Some(existing)))
    }

    pub fn delete(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Arc<Value>, StoreError> {
        let key = ObjectKey::new(rt, namespace, name);
        let existing = self.objects.get(&key).cloned().ok_or_else(|| not_found(rt, name))?;
        Ok(self.commit(rt, key, ChangeType::Deleted, (*existing).clone(), None))
    }

    /// Changes after `resource_version`, or `Expired` when some of them are no longer logged.
    pub fn changes_since(&self, resource_version: u64) -> Result<Vec<Change>, Expired> {
        if resource_version < self.oldest_watchable {
            return Err(Expired);
        }
        Ok(self.log.iter().filter(|c| c.resource_version > resource_version).cloned().collect())
    }

    /// Forgets the whole log, as etcd compaction does: every open watch and every watch from an
    /// older resourceVersion gets `410 Gone`. Returns the new oldest watchable resourceVersion.
    pub fn compact(&mut self) -> u64 {
        // Step past the current version so that watches that are fully caught up expire too.
        self.resource_version += 1;
        self.oldest_watchable = self.resource_version;
        self.log.clear();
        self.resource_version
    }

    /// Whether a watch positioned at `resource_version` can still continue.
    pub fn is_watchable(&self, resource_version: u64) -> bool {
        resource_version >= self.oldest_watchable
    }

    /// Fills in what the API server owns: kind, apiVersion, name, namespace, uid.
    fn complete(
        &mut self,
        object: &mut Value,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        existing: Option<&Value>,
    ) {
        if !object.is_object() {
            *object = Value::Object(Map::new());
        }
        object["kind"] = Value::from(rt.kind.as_str());
        object["apiVersion"] = Value::from(rt.api_version());
        set_meta(object, "name", Value::from(name));
        if rt.namespaced {
            set_meta(object, "namespace", Value::from(namespace));
        } else {
            strip_meta(object, "namespace");
        }
        let uid = match existing.map(|e| e["metadata"]["uid"].clone()) {
            Some(uid @ Value::String(_)) => uid,
            _ => match object["metadata"]["uid"].as_str() {
                Some(uid) => Value::from(uid),
                None => {
                    self.next_uid += 1;
                    Value::from(format!("00000000-0000-4000-8000-{:012x}", self.next_uid))
                }
            },
        };
        set_meta(object, "uid", uid);
    }

    fn commit(
        &mut self,
        rt: &ResourceType,
        key: ObjectKey,
        change: ChangeType,
        mut object: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.resource_version += 1;
        set_meta(&mut object, "resourceVersion", Value::from(self.resource_version.to_string()));
        if rt.kind == "CustomResourceDefinition" && change != ChangeType::Deleted {
            self.registry.learn_from_crd(&object);
        }
        let object = Arc::new(object);
        if change == ChangeType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        self.log.push_back(Change {
            resource_version: self.resource_version,
            change,
            resource: rt.clone(),
            object: object.clone(),
            previous,
        });
        while self.log.len() > self.max_log {
            if let Some(dropped) = self.log.pop_front() {
                self.oldest_watchable = dropped.resource_version;
            }
        }
        object
    }
}

fn not_found(rt: &ResourceType, name: &str) -> StoreError {
    StoreError::NotFound { resource: rt.qualified_plural(), name: name.to_string() }
}

fn name_of(object: &Value) -> Result<String, StoreError> {
    match object["metadata"]["name"].as_str() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(StoreError::Invalid("metadata.name: Required value: name or generateName is required".into())),
    }
}

/// Sets `metadata.<field>`, creating `metadata` when missing.
pub fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"][field] = value;
}

pub fn strip_meta(object: &mut Value, field: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"nodeName": node}})
    }

    #[test]
    fn reapplying_an_unchanged_object_logs_nothing() {
        let mut store = Store::new(100);
        store.apply(pod("a", "n1")).expect("create");
        let rv = store.resource_version();
        store.apply(pod("a", "n1")).expect("same");
        assert_eq!(store.resource_version(), rv);
        store.apply(pod("a", "n2")).expect("modify");
        let changes = store.changes_since(rv).expect("logged");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].change, ChangeType::Modified);
        assert_eq!(changes[0].object["metadata"]["namespace"], "default");
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let mut store = Store::new(100);
        let created = store.apply(pod("a", "n1")).expect("create");
        let (rt, ns) = store.type_of(&created).expect("typed");
        let first = store.update(&rt, &ns, "a", (*created).clone()).expect("fresh update");
        assert_ne!(first["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
        let stale = store.update(&rt, &ns, "a", (*created).clone());
        assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{stale:?}");
    }

    #[test]
    fn trimmed_or_compacted_log_expires_old_watches() {
        let mut store = Store::new(2);
        let start = store.resource_version();
        for i in 0..3 {
            store.apply(pod(&format!("p{i}"), "n")).expect("create");
        }
        assert!(matches!(store.changes_since(start), Err(Expired)));
        let now = store.resource_version();
        assert!(store.changes_since(now).is_ok());
        store.compact();
        assert!(!store.is_watchable(now));
        assert!(store.is_watchable(store.resource_version()));
    }
}
