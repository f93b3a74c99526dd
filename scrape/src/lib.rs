//! Prometheus scraping: exposition parsers, relabeling, the scrape loop and target manager.
//!
//! Data comes in as [`target::TargetGroup`]s (from [`static_configs`] here; from kubelet and
//! monitor discovery in the `daemonset` and `statefulset` crates) handed to
//! [`manager::TargetManager::sync`]. Each target gets a [`scrape_loop::ScrapeLoop`] that
//! fetches its body, parses it ([`parser`]), maps each series through a per-target cache to its
//! final labels (target labels, [`relabel`]ing), and hands one batch per scrape to a
//! [`sink::SeriesSink`], normally the pipeline's `MetricsSink` (remote write to Mimir).
//!
//! What it does not do: discover Kubernetes objects, scrape the kubelet or collect host
//! metrics itself (those crates build target groups or series and use this one), store
//! exemplars, native histograms or created timestamps, or parse the protobuf exposition format.

mod buffer_pool;
pub mod encode;
pub mod labels;
pub mod manager;
pub mod parser;
pub mod relabel;
pub mod scrape_loop;
mod self_metrics;
pub mod sink;
pub mod static_configs;
pub mod target;

pub use labels::{LabelSet, PackedLabels};
pub use manager::{ProviderSync, TargetManager, TargetStatus};
pub use scrape_loop::{BodyIngester, Health, LoopStop, ScrapeError, ScrapeLoop, Scraped};
pub use sink::{Batch, SeriesSink};
pub use static_configs::static_target_groups;
pub use target::{Auth, BasicAuth, ScrapeOptions, Secret, Target, TargetGroup, TlsOptions};
