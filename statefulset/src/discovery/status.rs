//! What discovery shows on `/targets`: this replica's shard, every monitor with its target
//! counts, unsupported fields and errors, and the targets that cannot be scraped.

use std::sync::Mutex;

use serde::Serialize;

use super::build::MonitorStatus;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiscoveryStatus {
    pub replica: u32,
    pub replicas: u32,
    /// Targets after relabeling, over all replicas.
    pub targets_total: usize,
    /// Of those, the ones this replica scrapes.
    pub targets_here: usize,
    pub monitors: Vec<MonitorStatus>,
    /// Discovered targets that cannot be scraped (bad labels after relabeling).
    pub target_errors: Vec<String>,
    /// Secrets and ConfigMaps referenced by monitors (watched by name).
    pub referenced: usize,
    pub updated_unix_ms: i64,
}

/// The latest [`DiscoveryStatus`], shared with the admin server.
#[derive(Debug, Default)]
pub struct StatusBoard(Mutex<Option<DiscoveryStatus>>);

impl StatusBoard {
    pub fn set(&self, status: DiscoveryStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    /// `None` until the first build.
    pub fn get(&self) -> Option<DiscoveryStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The JSON `/targets` embeds under `discovery`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self.get()).unwrap_or(serde_json::Value::Null)
    }
}
