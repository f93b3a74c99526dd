//! Cluster-mode sources: monitor discovery and sharding, events, tail sampling.
//!
//! - [`discovery`]: ServiceMonitors, PodMonitors and `prometheus.io/*` annotations, watched
//!   through the Kubernetes API, become target groups for `lgtm_scrape::TargetManager`, reduced
//!   to this replica's share by [`shard`] (rendezvous hashing of each target's identity).
//! - [`events`]: `events.k8s.io/v1` Events to Loki through the pipeline's `LogsSink`, shipped by
//!   the holder of a Lease, with the position kept in the Lease.
//! - [`cluster_state`]: kube-state-metrics' series (names and labels) from reflectors of the
//!   cluster's objects, emitted every scrape interval by the holder of a Lease into the
//!   pipeline's `MetricsSink`, with staleness markers for what disappeared.
//! - [`sampling`]: tail sampling of the spans the OTLP receiver (`lgtm_pipeline::receiver`)
//!   takes, with kept traces going to Tempo through the pipeline's `TracesSink`.

pub mod cluster_state;
pub mod discovery;
pub mod events;
pub mod sampling;
pub mod shard;
