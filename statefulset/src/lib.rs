//! Cluster-mode sources: monitor discovery and sharding, events, tail sampling.
//!
//! Implemented so far: [`sampling`], tail sampling of the spans the OTLP receiver
//! (`lgtm_pipeline::receiver`) takes, with kept traces going to Tempo through the pipeline's
//! `TracesSink`. Monitor discovery and events are not yet implemented (issues 3 and 6).

pub mod discovery;
pub mod sampling;
pub mod shard;
