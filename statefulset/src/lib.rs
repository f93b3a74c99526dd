//! Cluster-mode sources: monitor discovery and sharding, events, tail sampling.
//!
//! Not yet implemented (issues 3, 6 and 8).
