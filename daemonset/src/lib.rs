//! Node-mode (daemonset) sources of lgtm-agent.
//!
//! What it does: [`logs`] tails the kubelet's pod log files (CRI and Docker json-file) into the
//! pipeline's Loki sink, with checkpoints that advance only on Loki's acknowledgement.
//! Data comes in from `/var/log/pods` and goes out through [`lgtm_pipeline::LogsSink`].
//!
//! What it does not (yet): Kubernetes pod metadata (the [`logs::PodMetadata`] seam is where the
//! reflector plugs in), kubelet/cAdvisor targets and host metrics (issue 10). It never talks to an
//! exporter directly.

pub mod host;
pub mod logs;

pub use logs::{run_logs, LogsOptions};
