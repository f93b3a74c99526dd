//! Exporters the backend says are misconfigured (today: a redirect elsewhere than the configured
//! host), for `/readyz`: the agent is not ready while any is, since nothing it sends arrives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

static FLAGS: LazyLock<Mutex<BTreeMap<String, Arc<AtomicBool>>>> = LazyLock::new(Default::default);

/// The flag of `exporter` (shared by every sender of that name).
pub fn flag(exporter: &str) -> Arc<AtomicBool> {
    FLAGS.lock().expect("health flags").entry(exporter.to_string()).or_default().clone()
}

/// The exporters misconfigured now, by name.
pub fn misconfigured() -> Vec<String> {
    FLAGS
        .lock()
        .expect("health flags")
        .iter()
        .filter(|(_, f)| f.load(Ordering::Relaxed))
        .map(|(name, _)| name.clone())
        .collect()
}
