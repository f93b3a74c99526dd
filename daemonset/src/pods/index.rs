//! The reflector's store: this node's pods, folded from watcher events, reduced to what the log
//! labels need. A full `Pod` is dropped as soon as its [`PodInfo`] is extracted, so the store
//! costs a few hundred bytes per pod instead of the tens of kilobytes of the objects.
//!
//! Pods that are deleted (or missing from a relist) are kept as tombstones for
//! [`GONE_RETENTION`]: the kubelet removes a pod's log directory some time after the pod, and a
//! file first opened in between (a rotation, a rescan after a restart) still gets the labels its
//! earlier lines had. After that it gets the path labels; its lines ship either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logs::PodInfo;

/// How long a deleted pod's labels stay known.
pub const GONE_RETENTION: Duration = Duration::from_secs(300);

/// One pod as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub info: Arc<PodInfo>,
}

#[derive(Debug)]
struct Slot {
    entry: PodEntry,
    /// When the pod was deleted; `None` while it exists.
    gone_since: Option<Instant>,
}

/// A change, in the shape of `kube`'s watcher events, with the pods already reduced.
#[derive(Debug, Clone)]
pub enum Change {
    /// A (re)list starts.
    Init,
    /// A pod of the (re)list.
    InitApply(PodEntry),
    /// The (re)list is complete: pods it did not contain are gone.
    InitDone,
    Apply(PodEntry),
    Delete(PodEntry),
}

/// This node's pods by uid.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, Slot>,
    /// The pods of a relist in progress.
    relist: Option<HashMap<String, PodEntry>>,
}

impl PodIndex {
    pub fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Init => self.relist = Some(HashMap::new()),
            Change::InitApply(entry) => {
                self.relist.get_or_insert_with(HashMap::new).insert(entry.uid.clone(), entry);
            }
            Change::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                for (uid, slot) in self.pods.iter_mut() {
                    if slot.gone_since.is_none() && !listed.contains_key(uid) {
                        slot.gone_since = Some(now);
                    }
                }
                for (uid, entry) in listed {
                    self.pods.insert(uid, Slot { entry, gone_since: None });
                }
            }
            Change::Apply(entry) => {
                self.pods.insert(entry.uid.clone(), Slot { entry, gone_since: None });
            }
            Change::Delete(entry) => {
                let slot = self.pods.entry(entry.uid.clone()).or_insert(Slot { entry, gone_since: None });
                slot.gone_since.get_or_insert(now);
            }
        }
        self.forget_older_than(now, GONE_RETENTION);
    }

    /// Drops tombstones older than `retention`.
    pub fn forget_older_than(&mut self, now: Instant, retention: Duration) {
        self.pods.retain(|_, s| s.gone_since.is_none_or(|t| now.saturating_duration_since(t) < retention));
    }

    /// The labels of the pod whose log directory is `<namespace>_<name>_<uid>`: the pod with that
    /// uid (existing or recently gone), else an existing pod of that namespace and name (a static
    /// pod's directory carries the kubelet's uid, not its mirror pod's).
    pub fn lookup(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<PodInfo>> {
        let same = |e: &PodEntry| e.namespace == namespace && e.name == name;
        if let Some(slot) = self.pods.get(uid).filter(|s| same(&s.entry)) {
            return Some(slot.entry.info.clone());
        }
        self.pods.values().find(|s| s.gone_since.is_none() && same(&s.entry)).map(|s| s.entry.info.clone())
    }

    /// Pods that exist (tombstones not counted).
    pub fn live(&self) -> usize {
        self.pods.values().filter(|s| s.gone_since.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, name: &str, app: &str) -> PodEntry {
        PodEntry {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            info: Arc::new(PodInfo { app: Some(app.into()), extra: vec![], excluded: false }),
        }
    }

    fn app(index: &PodIndex, name: &str, uid: &str) -> Option<String> {
        index.lookup("shop", name, uid).and_then(|i| i.app.clone())
    }

    #[test]
    fn lookup_by_uid_then_by_name_of_an_existing_pod() {
        let mut ix = PodIndex::default();
        let t = Instant::now();
        ix.apply(Change::Apply(entry("u1", "web-0", "web")), t);
        assert_eq!(app(&ix, "web-0", "u1").as_deref(), Some("web"));
        assert_eq!(app(&ix, "web-0", "static-hash").as_deref(), Some("web"), "static pod: uid differs");
        assert_eq!(app(&ix, "web-1", "u1"), None, "a uid with another name is not this pod");
        assert_eq!(ix.lookup("other", "web-0", "u1"), None);
    }

    #[test]
    fn deleted_pods_keep_their_labels_for_a_while_by_uid_only() {
        let mut ix = PodIndex::default();
        let t = Instant::now();
        ix.apply(Change::Apply(entry("u1", "web-0", "web")), t);
        ix.apply(Change::Delete(entry("u1", "web-0", "web")), t);
        assert_eq!(ix.live(), 0);
        assert_eq!(app(&ix, "web-0", "u1").as_deref(), Some("web"));
        assert_eq!(app(&ix, "web-0", "u-other"), None, "a gone pod is not matched by name");
        ix.apply(Change::Apply(entry("u2", "db-0", "db")), t + GONE_RETENTION);
        assert_eq!(app(&ix, "web-0", "u1"), None, "forgotten after the retention");
        assert_eq!(app(&ix, "db-0", "u2").as_deref(), Some("db"));
    }

    #[test]
    fn a_recreated_pod_of_the_same_name_is_told_apart_by_uid() {
        let mut ix = PodIndex::default();
        let t = Instant::now();
        ix.apply(Change::Apply(entry("u1", "db-0", "db-v1")), t);
        ix.apply(Change::Delete(entry("u1", "db-0", "db-v1")), t);
        ix.apply(Change::Apply(entry("u2", "db-0", "db-v2")), t);
        assert_eq!(app(&ix, "db-0", "u1").as_deref(), Some("db-v1"));
        assert_eq!(app(&ix, "db-0", "u2").as_deref(), Some("db-v2"));
    }

    #[test]
    fn a_relist_replaces_the_pods_and_turns_missing_ones_into_tombstones() {
        let mut ix = PodIndex::default();
        let t = Instant::now();
        ix.apply(Change::Apply(entry("u1", "a", "a")), t);
        ix.apply(Change::Apply(entry("u2", "b", "b")), t);
        ix.apply(Change::Init, t);
        ix.apply(Change::InitApply(entry("u2", "b", "b2")), t);
        ix.apply(Change::InitApply(entry("u3", "c", "c")), t);
        assert_eq!(app(&ix, "c", "u3"), None, "not visible before the relist completes");
        assert_eq!(app(&ix, "b", "u2").as_deref(), Some("b"));
        ix.apply(Change::InitDone, t);
        assert_eq!(ix.live(), 2);
        assert_eq!(app(&ix, "b", "u2").as_deref(), Some("b2"));
        assert_eq!(app(&ix, "c", "u3").as_deref(), Some("c"));
        assert_eq!(app(&ix, "a", "u1").as_deref(), Some("a"), "tombstone");
        assert_eq!(app(&ix, "a", "other"), None);
    }
}
