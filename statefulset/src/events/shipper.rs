//! The leader's work: list the events, ship those after the stored position, then watch from
//! the list's resourceVersion and ship every added or modified event (a modified event is a new
//! occurrence: its count went up). Batches go to Loki through the pipeline; the position
//! advances only when the pipeline acknowledges a batch, in order.
//!
//! The position is a resourceVersion. Kubernetes calls them opaque, but every API server backed
//! by etcd hands out increasing integers, and comparing them is what lets a new leader, or a
//! relist after `410 Gone`, skip what was shipped without keeping a set of event ids.
//!
//! Failures are retried with the watches' shared policy ([`lgtm_k8s::backoff::watch_backoff`]:
//! 0.5 s doubling to 5 s, with jitter), reset by a list that succeeds; a list that keeps failing
//! is warned about once, then logged at debug level until it succeeds.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use lgtm_pipeline::proto::{loki_labels_string, EntryAdapter, StreamAdapter, Timestamp};
use lgtm_pipeline::{Ack, LogsSink};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::format;

/// How the leader ships.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    pub cluster: String,
    /// Without a stored position (first start ever), events older than this are not shipped.
    pub lookback: Duration,
    /// A batch is sent at this many events, or `flush_after` after its first event.
    pub max_batch: usize,
    pub flush_after: Duration,
    /// How long a stopping leader waits for the acknowledgements of what it sent.
    pub ack_grace: Duration,
}

fn resource_version(e: &Event) -> u64 {
    e.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Events waiting to be sent.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    first_at: Option<tokio::time::Instant>,
}

/// Ships until `stop`, starting after `start` (the stored position). Every acknowledged
/// position is published on `acked`.
pub async fn ship(
    api: Api<Event>,
    sink: LogsSink,
    options: ShipperOptions,
    start: Option<u64>,
    acked: watch::Sender<Option<u64>>,
    stop: CancellationToken,
) {
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Ack, u64)>();
    let acker = tokio::spawn(async move {
        while let Some((ack, rv)) = ack_rx.recv().await {
            match ack.outcome().await {
                // Rejected, evicted or discarded batches will never be delivered: move past them
                // (the pipeline counted them).
                Some(_) => {
                    acked.send_replace(Some(rv));
                }
                None => return,
            }
        }
    });
    let mut sent = start.unwrap_or(0);
    let mut min_time = start.is_none().then(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(options.lookback).as_nanos() as i64
    });
    let mut pending = Pending::default();
    let mut backoff = lgtm_k8s::backoff::watch_backoff();
    let mut list_failing = false;
    'relist: while !stop.is_cancelled() {
        let params = ListParams::default();
        let list = tokio::select! {
            _ = stop.cancelled() => break,
            r = api.list(&params) => r,
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                let delay = backoff.next_delay(None);
                if list_failing {
                    tracing::debug!(error = %e, retry_in = ?delay, "listing events still failing");
                } else {
                    tracing::warn!(error = %e, retry_in = ?delay, "listing events failed; retrying with backoff");
                }
                list_failing = true;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        if list_failing {
            tracing::info!("listing events works again");
            list_failing = false;
        }
        backoff.reset();
        let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
        let mut items = list.items;
        items.sort_by_key(resource_version);
        for e in items {
            let keep = resource_version(&e) > sent && min_time.is_none_or(|t| format::event_time_nanos(&e) >= t);
            if keep {
                pending.events.push(e);
            }
        }
        min_time = None;
        if flush(&mut pending, &mut sent, &sink, &options, &ack_tx).await.is_err() {
            tokio::select! {
                _ = stop.cancelled() => break 'relist,
                _ = tokio::time::sleep(backoff.next_delay(None)) => continue 'relist,
            }
        }

        'watch: loop {
            let params = WatchParams::default().timeout(290);
            let stream = tokio::select! {
                _ = stop.cancelled() => break 'relist,
                s = api.watch(&params, &rv) => s,
            };
            let mut stream = match stream {
                Ok(s) => std::pin::pin!(s),
                Err(e) => {
                    tracing::warn!(error = %e, "watching events failed; listing again");
                    tokio::select! {
                        _ = stop.cancelled() => break 'relist,
                        _ = tokio::time::sleep(backoff.next_delay(None)) => continue 'relist,
                    }
                }
            };
            loop {
                let deadline = pending.first_at.map(|t| t + options.flush_after);
                let item = tokio::select! {
                    _ = stop.cancelled() => break 'relist,
                    _ = sleep_until(deadline) => {
                        if flush(&mut pending, &mut sent, &sink, &options, &ack_tx).await.is_err() {
                            continue 'relist;
                        }
                        continue;
                    }
                    item = stream.next() => item,
                };
                match item {
                    None => continue 'watch,
                    Some(Ok(WatchEvent::Added(e) | WatchEvent::Modified(e))) => {
                        rv = e.metadata.resource_version.clone().unwrap_or(rv);
                        let queued = pending.events.last().map(resource_version).unwrap_or(sent).max(sent);
                        if resource_version(&e) > queued {
                            pending.events.push(e);
                            pending.first_at.get_or_insert_with(tokio::time::Instant::now);
                            let full = pending.events.len() >= options.max_batch;
                            if full && flush(&mut pending, &mut sent, &sink, &options, &ack_tx).await.is_err() {
                                continue 'relist;
                            }
                        }
                    }
                    Some(Ok(WatchEvent::Deleted(e))) => {
                        rv = e.metadata.resource_version.clone().unwrap_or(rv);
                    }
                    Some(Ok(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                    Some(Ok(WatchEvent::Error(status))) => {
                        if status.code != 410 {
                            tracing::warn!(code = status.code, message = %status.message, "event watch error; listing again");
                        }
                        let _ = flush(&mut pending, &mut sent, &sink, &options, &ack_tx).await;
                        continue 'relist;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "event watch broke; watching again");
                        continue 'watch;
                    }
                }
            }
        }
    }
    // What was not sent is not acknowledged: the next leader ships it. Wait a little for the
    // acknowledgements of what was, so the position is as far as it can be.
    drop(ack_tx);
    let _ = tokio::time::timeout(options.ack_grace, acker).await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends the pending events as one push (streams by label set, entries in time order). On
/// `Err` the unsent events are dropped from `pending` but `sent` stays before them: the caller
/// lists again, which finds them.
async fn flush(
    pending: &mut Pending,
    sent: &mut u64,
    sink: &LogsSink,
    options: &ShipperOptions,
    acks: &mpsc::UnboundedSender<(Ack, u64)>,
) -> Result<(), ()> {
    pending.first_at = None;
    if pending.events.is_empty() {
        return Ok(());
    }
    for chunk in std::mem::take(&mut pending.events).chunks(options.max_batch.max(1)) {
        let last = chunk.iter().map(resource_version).max().unwrap_or(*sent).max(*sent);
        let mut streams: BTreeMap<String, Vec<EntryAdapter>> = BTreeMap::new();
        for e in chunk {
            let labels = loki_labels_string(&format::stream_labels(&options.cluster, e));
            streams.entry(labels).or_default().push(EntryAdapter {
                timestamp: Some(Timestamp::from_unix_nanos(format::event_time_nanos(e))),
                line: format::line(e),
                structured_metadata: Vec::new(),
            });
        }
        let streams: Vec<StreamAdapter> = streams
            .into_iter()
            .map(|(labels, mut entries)| {
                entries.sort_by_key(|e| e.timestamp.map(|t| t.unix_nanos()));
                StreamAdapter { labels, entries, hash: 0 }
            })
            .collect();
        match sink.send(streams).await {
            Ok(ack) => {
                *sent = last;
                let _ = acks.send((ack, last));
            }
            Err(e) => {
                // The queue refused it (closed at shutdown, or a disk error): not sent, not
                // acknowledged; the next leader or the next start ships it.
                tracing::error!(error = %e, events = chunk.len(), "events not queued");
                return Err(());
            }
        }
    }
    Ok(())
}
