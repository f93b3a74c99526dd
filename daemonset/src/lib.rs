//! Node-mode (daemonset) sources of lgtm-agent.
//!
//! What it does: [`logs`] tails the kubelet's pod log files (CRI and Docker json-file) into the
//! pipeline's Loki sink, with checkpoints that advance only on Loki's acknowledgement.
//! Data comes in from `/var/log/pods` and goes out through [`lgtm_pipeline::LogsSink`].
//!
//! [`kubelet`] turns this node's kubelet endpoints (`/metrics`, `/metrics/cadvisor`,
//! `/metrics/resource`, `/metrics/probes`) into target groups for the scrape crate's
//! `TargetManager`. [`host`] reads node_exporter-compatible host metrics from `/proc` and `/sys`,
//! and [`node_metrics`] scrapes them in-process every interval into a `SeriesSink` (the
//! pipeline's metrics sink) as the `node-exporter` job.
//!
//! [`pods`] reflects this node's pods from the Kubernetes API into the log labels (`app`, pod
//! labels and annotations) through the [`logs::PodMetadata`] seam.
//!
//! It never talks to an exporter directly.

pub mod host;
pub mod kubelet;
pub mod logs;
pub mod node_metrics;
pub mod pods;

pub use kubelet::{kubelet_target_groups, KubeletNode};
pub use logs::{run_logs, LogsOptions};
pub use node_metrics::{run_host_metrics, HostSourceOptions};
