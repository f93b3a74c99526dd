//! Kubernetes events to Loki (cluster mode): `events.k8s.io/v1` Events of the whole cluster,
//! shipped by one replica at a time.
//!
//! The replicas compete for a Lease ([`lease`]); the holder lists the events, ships those after
//! the position stored in the Lease, and watches from the list's resourceVersion
//! ([`shipper`]); lines are [`format`]ted as logfmt with low-cardinality stream labels. The
//! position advances when Loki acknowledges a batch and is written to the Lease at once, so a
//! restart or a new leader on another pod neither re-sends old events nor leaves a gap (the
//! OTel receiver drops everything older than its start; Alloy re-sends when namespaces move
//! between replicas). On the very first start only events newer than `events.lookback` go out.
//!
//! What it does not do: read `core/v1` Events (the same objects, older API), or filter events.

pub mod format;
pub mod lease;
pub mod shipper;

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};
use lgtm_config::Config;
use lgtm_pipeline::LogsSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use lease::{LeaderElection, LeaseConfig};
use shipper::ShipperOptions;

/// How soon a failed renewal of a held lease is retried (within the renew deadline).
const RENEW_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EventsOptions {
    pub lease: LeaseConfig,
    /// How often the holder renews and a candidate retries: a third of the lease duration.
    pub retry_period: Duration,
    pub shipper: ShipperOptions,
}

impl EventsOptions {
    pub fn from_config(cfg: &Config) -> EventsOptions {
        let e = &cfg.events;
        let m = &cfg.scrape.monitors;
        let namespace = [&e.lease_namespace, &m.pod_namespace].into_iter().find(|n| !n.is_empty());
        let identity =
            if m.pod_name.is_empty() { format!("lgtm-agent-{:016x}", rand_id()) } else { m.pod_name.clone() };
        let duration = e.lease_duration.get().max(Duration::from_secs(1));
        EventsOptions {
            lease: LeaseConfig {
                name: e.lease_name.clone(),
                namespace: namespace.cloned().unwrap_or_else(|| "default".into()),
                identity,
                duration,
            },
            retry_period: duration / 3,
            shipper: ShipperOptions {
                cluster: cfg.cluster.clone(),
                lookback: e.lookback.get(),
                max_batch: 1000,
                flush_after: Duration::from_millis(500),
                ack_grace: Duration::from_secs(5),
            },
        }
    }
}

/// An identity for a candidate without a pod name (outside Kubernetes, tests).
fn rand_id() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&[t.as_nanos().to_le_bytes(), u128::from(std::process::id()).to_le_bytes()].concat())
}

/// Competes for the Lease until `stop`; while holding it, ships events to `sink`. On `stop` the
/// holder waits for outstanding acknowledgements, stores the position and releases the Lease.
pub async fn run(client: Client, options: EventsOptions, sink: LogsSink, stop: CancellationToken) {
    let mut election = LeaderElection::new(client.clone(), options.lease.clone());
    let events: Api<Event> = Api::all(client);
    let identity = election.identity().to_string();
    loop {
        // Follower: try every retry period.
        let held = loop {
            match election.try_acquire_or_renew(None).await {
                Ok(Some(held)) => break held,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, lease = %options.lease.name, "events lease not reachable"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(options.retry_period) => {}
            }
        };
        tracing::info!(identity = %identity, position = ?held.position, "holding the events lease; shipping events");

        let (acked_tx, mut acked) = watch::channel(held.position);
        let ship_stop = stop.child_token();
        // Polled here rather than spawned: whatever ends this future ends the shipping too.
        let shipping = shipper::ship(
            events.clone(),
            sink.clone(),
            options.shipper.clone(),
            held.position,
            acked_tx,
            ship_stop.clone(),
        )
        .instrument(tracing::info_span!("events_shipper"));
        let mut shipping = std::pin::pin!(shipping);
        let mut shipping_done = false;
        let mut written = held.position;
        let mut renewed = Instant::now();
        let renew_deadline = options.lease.duration * 2 / 3;
        // After a failed renewal (an API server restarting), retry every second until the
        // deadline rather than every retry period: the lease survives a short outage.
        let mut failing = false;
        let renew_retry = RENEW_RETRY.min(options.retry_period);
        let lost = loop {
            let wait = if failing { renew_retry } else { options.retry_period };
            tokio::select! {
                _ = stop.cancelled() => break false,
                _ = &mut shipping, if !shipping_done => shipping_done = true,
                _ = tokio::time::sleep(wait) => {}
                r = acked.changed(), if !shipping_done => if r.is_err() { shipping_done = true },
            }
            let position = *acked.borrow_and_update();
            let due = failing || renewed.elapsed() >= options.retry_period;
            if position == written && !due {
                continue;
            }
            match election.try_acquire_or_renew(position).await {
                Ok(Some(_)) => {
                    if failing {
                        tracing::info!("events lease renewed again");
                    }
                    failing = false;
                    renewed = Instant::now();
                    written = position;
                }
                Ok(None) => break true,
                Err(e) if renewed.elapsed() > renew_deadline => {
                    tracing::warn!(error = %e, "events lease not renewed in time");
                    break true;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, retry_in = ?renew_retry, "renewing the events lease failed; retrying");
                    }
                    failing = true;
                }
            }
        };
        ship_stop.cancel();
        if !shipping_done {
            shipping.await;
        }
        let position = *acked.borrow();
        if lost {
            tracing::warn!(identity = %identity, "lost the events lease; stopped shipping");
            continue;
        }
        if let Err(e) = election.release(position).await {
            tracing::warn!(error = %e, "releasing the events lease failed; another replica takes over when it expires");
        } else {
            tracing::info!(position = ?position, "released the events lease");
        }
        return;
    }
}
