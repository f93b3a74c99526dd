//! WATCH: a chunked stream of `{"type":..,"object":..}` JSON lines, one per change after the
//! requested `resourceVersion`, with periodic BOOKMARKs when asked, and a `410 Gone` ERROR event
//! (then the end of the stream) when the requested position is no longer in the change log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep_until, Instant};
use tokio_stream::wrappers::ReceiverStream;

use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::shared::Shared;
use super::store::{Change, ChangeType};

/// Where a watch begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Changes after this resourceVersion.
    After(u64),
    /// Synthetic ADDED events for the current objects first (`resourceVersion` unset or "0", or
    /// `sendInitialEvents=true`); `mark_end` adds the BOOKMARK annotated
    /// `k8s.io/initial-events-end` that streaming lists wait for.
    CurrentState { mark_end: bool },
}

#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    pub resource: ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: WatchStart,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        let in_namespace = match &self.namespace {
            Some(ns) => object["metadata"]["namespace"].as_str() == Some(ns.as_str()),
            None => true,
        };
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watch sees for a change: a modification that moves an object into the
    /// selection is ADDED for it, one that moves it out is DELETED, as the API server does.
    fn event_for<'c>(&self, change: &'c Change) -> Option<(&'static str, &'c Value)> {
        let r = &change.resource;
        if (&r.group, &r.version, &r.plural) != (&self.resource.group, &self.resource.version, &self.resource.plural) {
            return None;
        }
        let now = self.selects(&change.object);
        let kind = match change.change {
            ChangeType::Modified => {
                let before = change.previous.as_deref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => ChangeType::Modified,
                    (false, true) => ChangeType::Added,
                    (true, false) => ChangeType::Deleted,
                    (false, false) => return None,
                }
            }
            other if now => other,
            _ => return None,
        };
        Some((kind.as_str(), &change.object))
    }

    fn bookmark(&self, resource_version: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": resource_version.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({
            "type": "BOOKMARK",
            "object": {"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": metadata},
        })
    }
}

/// The `Status` of a watch from a compacted resourceVersion.
pub(crate) fn gone_status() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410,
    })
}

/// Starts the watch and returns its response body; the stream ends on `timeoutSeconds`, on
/// server shutdown, on 410 Gone, or when the client goes away.
pub(crate) fn stream(shared: Arc<Shared>, request: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(shared, request, tx));
    Body::from_stream(ReceiverStream::new(rx))
}

type Chunks = mpsc::Sender<Result<Bytes, Infallible>>;

/// Sends one event line; false when the client is gone.
async fn send(tx: &Chunks, event: Value) -> bool {
    let mut line = serde_json::to_vec(&event).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line))).await.is_ok()
}

async fn send_gone(tx: &Chunks) {
    send(tx, json!({"type": "ERROR", "object": gone_status()})).await;
}

async fn run(shared: Arc<Shared>, request: WatchRequest, tx: Chunks) {
    let mut changed = shared.subscribe();
    changed.borrow_and_update();
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let period = shared.bookmark_interval.max(Duration::from_millis(10));
    let mut bookmarks = interval_at(Instant::now() + period, period);

    let start = shared.read(|store| match request.start {
        WatchStart::After(rv) if store.is_watchable(rv) => Some((Vec::new(), rv)),
        WatchStart::After(_) => None,
        WatchStart::CurrentState { .. } => {
            let objects = store.list(&request.resource, request.namespace.as_deref());
            Some((objects, store.resource_version()))
        }
    });
    let Some((initial, mut position)) = start else {
        send_gone(&tx).await;
        return;
    };
    for object in initial.iter().filter(|o| request.selects(o)) {
        if !send(&tx, json!({"type": "ADDED", "object": **object})).await {
            return;
        }
    }
    if request.start == (WatchStart::CurrentState { mark_end: true })
        && !send(&tx, request.bookmark(position, true)).await
    {
        return;
    }

    loop {
        changed.borrow_and_update();
        if shared.is_shutting_down() {
            return;
        }
        let batch = shared.read(|store| store.changes_since(position).map(|c| (c, store.resource_version())));
        let Ok((changes, now)) = batch else {
            send_gone(&tx).await;
            return;
        };
        for change in &changes {
            if let Some((kind, object)) = request.event_for(change) {
                if !send(&tx, json!({"type": kind, "object": object})).await {
                    return;
                }
            }
        }
        position = now;

        tokio::select! {
            woke = changed.changed() => if woke.is_err() { return },
            _ = bookmarks.tick(), if request.bookmarks => {
                if !send(&tx, request.bookmark(position, false)).await {
                    return;
                }
            }
            _ = async { match deadline { Some(d) => sleep_until(d).await, None => std::future::pending().await } } => return,
            _ = tx.closed() => return,
        }
    }
}
