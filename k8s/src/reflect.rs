//! A `kube` watcher into a reflector store, retried with the shared backoff ([`crate::backoff`]):
//! for the kinds kept as k8s-openapi objects (monitors as dynamic objects, referenced Secrets
//! and ConfigMaps, this replica's StatefulSet). The kinds with a compact type
//! ([`crate::objects`]: discovery's Pods, Services and EndpointSlices, the cluster-state kinds)
//! use [`crate::store`] instead.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::retry_watch;

/// Runs `watcher -> reflector` into `writer` until `stop`, waking `changed` on every change
/// (not on each object of a relist, only when the relist is complete).
pub fn spawn_reflector<K>(
    what: String,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let span = tracing::info_span!("watch", kind = %what);
    let drop_managed_fields = |o: &mut K| o.meta_mut().managed_fields = None;
    spawn_watch(span, api, config, writer, drop_managed_fields, move || changed.notify_one(), stop)
}

/// Runs `watcher -> reflector` into `writer` until `stop`, passing each object through `modify`
/// before it is stored and calling `on_change` on every change except the events of a relist
/// in progress. A failing watch is retried with the shared backoff
/// ([`crate::backoff`]): reset only by a completed list, logged once (then
/// rate-limited), and once more when a list completes again.
fn spawn_watch<K>(
    span: tracing::Span,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    modify: impl FnMut(&mut K) + Send + 'static,
    on_change: impl Fn() + Send + 'static,
    stop: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    tokio::spawn(
        async move {
            let stream = retry_watch(watcher(api, config).boxed(), |e| {
                matches!(e, Event::InitDone | Event::Apply(_) | Event::Delete(_))
            });
            let stream = stream.modify(modify).reflect(writer);
            let mut stream = std::pin::pin!(stream);
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => return,
                    item = stream.next() => item,
                };
                match item {
                    None => return,
                    Some(Ok(event)) => {
                        if !matches!(event, Event::Init | Event::InitApply(_)) {
                            on_change();
                        }
                    }
                    // Logged and backed off by `retry_watch`.
                    Some(Err(_)) => {}
                }
            }
        }
        .instrument(span),
    )
}

fn watcher<K>(api: Api<K>, config: watcher::Config) -> impl futures::Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    kube::runtime::watcher(api, config)
}
