//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the holder renews `renewTime` every retry period; another candidate takes over once the
//! record has not changed for `leaseDurationSeconds` as measured by its own clock (so clock skew
//! between pods does not matter); the holder releases the lease on shutdown so a successor
//! starts at once. Writes are optimistic (`resourceVersion`): of two candidates, the API server
//! lets one win and answers 409 to the other.
//!
//! The Lease also carries the events' shipped position in an annotation, so the next leader
//! (on any pod) continues where the last one stopped.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// The annotation with the resourceVersion of the last event Loki acknowledged.
pub const POSITION_ANNOTATION: &str = "lgtm-agent.io/events-resource-version";

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This candidate's identity (the pod name).
    pub identity: String,
    pub duration: Duration,
}

/// What the holder learns when it acquires or renews: the stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub position: Option<u64>,
}

/// One candidate's view of the Lease.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and since when it has not changed.
    observed: Option<(String, Instant)>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn record(spec: &LeaseSpec) -> String {
    format!(
        "{}|{:?}|{:?}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

impl LeaderElection {
    pub fn new(client: kube::Client, config: LeaseConfig) -> LeaderElection {
        let api = Api::namespaced(client, &config.namespace);
        LeaderElection { api, config, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    /// Acquires the lease if it is free or expired, or renews it if held; with `position`,
    /// also stores it. `Ok(None)`: another candidate holds it (or won a race).
    pub async fn try_acquire_or_renew(&mut self, position: Option<u64>) -> Result<Option<Held>, kube::Error> {
        let me = self.config.identity.clone();
        let duration_secs = self.config.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    annotations: position.map(|p| [(POSITION_ANNOTATION.to_string(), p.to_string())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_duration_seconds: Some(duration_secs),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(Held { position })),
                Err(e) if is_conflict(&e) => Ok(None),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if !holder.is_empty() && holder != me {
            // Expired only when the record stayed the same for a whole lease duration, as seen
            // from here.
            let current = record(spec);
            let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
            match &self.observed {
                Some((seen, since)) if *seen == current => {
                    if since.elapsed() < duration {
                        return Ok(None);
                    }
                }
                _ => {
                    self.observed = Some((current, Instant::now()));
                    return Ok(None);
                }
            }
        }
        if holder != me {
            spec.acquire_time = Some(Self::now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.renew_time = Some(Self::now());
        spec.lease_duration_seconds = Some(duration_secs);
        let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
        if let Some(p) = position {
            annotations.insert(POSITION_ANNOTATION.into(), p.to_string());
        }
        let stored = annotations.get(POSITION_ANNOTATION).and_then(|v| v.parse().ok());
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = None;
                Ok(Some(Held { position: stored }))
            }
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (keeping `position`), if this candidate holds it.
    pub async fn release(&mut self, position: Option<u64>) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        if let Some(p) = position {
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(POSITION_ANNOTATION.into(), p.to_string());
        }
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await.map(|_| ())
    }
}
