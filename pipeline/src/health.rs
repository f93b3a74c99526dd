//! Which parts of the agent are running: one registry of named components (receivers, sources,
//! exporters) that each report their own state, read by the admin server's `/readyz` and
//! `/healthz` and shown as `lgtm_agent_component_up{component}`.
//!
//! A component registers itself when it is configured ([`component`]), says [`Component::running`]
//! once it serves or sends, [`Component::failed`] while it cannot (a listener that stopped, an
//! exporter whose client cannot be built), and [`Component::restarted`] when its supervisor starts
//! it again (counted in `lgtm_agent_component_restarts_total{component}`). A component that ends
//! for good while the agent is not stopping calls [`Component::died`]: that fails `/healthz`, so
//! Kubernetes restarts the pod rather than leaving a signal silently off.
//!
//! - `/readyz` is 200 only when every registered component is `Running`.
//! - `/healthz` is 200 unless a component [died](Component::died).
//!
//! ```
//! use lgtm_pipeline::health;
//! let c = health::component("example/one");
//! assert!(health::not_running().iter().any(|(name, _)| name == "example/one"));
//! c.running();
//! assert!(!health::not_running().iter().any(|(name, _)| name == "example/one"));
//! c.remove();
//! ```

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use prometheus::{IntCounterVec, IntGaugeVec};

use crate::metrics::{counter_vec, int_gauge_vec};

/// What a component last said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Registered, not serving yet.
    Starting,
    Running,
    /// Not serving now, and why (it may recover, e.g. a certificate file that appears later).
    Failed(String),
    /// Ended for good while the agent was not stopping: `/healthz` fails.
    Dead(String),
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Starting => f.write_str("starting"),
            State::Running => f.write_str("running"),
            State::Failed(why) => write!(f, "failed: {why}"),
            State::Dead(why) => write!(f, "dead: {why}"),
        }
    }
}

struct Registry {
    states: Mutex<BTreeMap<String, State>>,
    up: IntGaugeVec,
    restarts: IntCounterVec,
}

fn registry() -> &'static Registry {
    static R: LazyLock<Registry> = LazyLock::new(|| Registry {
        states: Mutex::new(BTreeMap::new()),
        up: int_gauge_vec(
            "lgtm_agent_component_up",
            "1 when the component (receiver, source, exporter) is running, 0 otherwise.",
            &["component"],
        ),
        restarts: counter_vec(
            "lgtm_agent_component_restarts_total",
            "Times a component was started again after it failed or ended.",
            &["component"],
        ),
    });
    &R
}

fn set(name: &str, state: State) {
    let r = registry();
    r.up.with_label_values(&[name]).set(i64::from(state == State::Running));
    r.states.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), state);
}

/// A component's handle for reporting its state. Cheap to clone; names are like
/// `receiver/otlp_grpc`, `source/logs`, `exporter/loki`.
#[derive(Debug, Clone)]
pub struct Component {
    name: String,
}

/// Registers `name` as [`State::Starting`] (or resets it to that) and returns its handle.
pub fn component(name: &str) -> Component {
    set(name, State::Starting);
    Component { name: name.to_string() }
}

/// The handle of `name` without changing its state (for a component that registered elsewhere).
pub fn handle(name: &str) -> Component {
    Component { name: name.to_string() }
}

impl Component {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn running(&self) {
        set(&self.name, State::Running);
    }

    /// Not serving now; logged by the caller.
    pub fn failed(&self, why: impl Into<String>) {
        set(&self.name, State::Failed(why.into()));
    }

    /// Ended for good: `/healthz` fails from now on.
    pub fn died(&self, why: impl Into<String>) {
        set(&self.name, State::Dead(why.into()));
    }

    /// Started again by its supervisor (counted).
    pub fn restarted(&self) {
        registry().restarts.with_label_values(&[&self.name]).inc();
        set(&self.name, State::Starting);
    }

    /// No longer part of the agent (its config was removed).
    pub fn remove(self) {
        let r = registry();
        r.states.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.name);
        let _ = r.up.remove_label_values(&[&self.name]);
    }
}

/// Every registered component and its state, by name.
pub fn snapshot() -> Vec<(String, State)> {
    registry().states.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The components that are not [`State::Running`] (what `/readyz` lists).
pub fn not_running() -> Vec<(String, State)> {
    snapshot().into_iter().filter(|(_, s)| *s != State::Running).collect()
}

/// The components that [died](Component::died) (what `/healthz` lists).
pub fn dead() -> Vec<(String, State)> {
    snapshot().into_iter().filter(|(_, s)| matches!(s, State::Dead(_))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_ready_only_while_running_and_unhealthy_once_dead() {
        let c = component("test/health_states");
        let listed = |list: Vec<(String, State)>| list.iter().any(|(n, _)| n == "test/health_states");
        assert!(listed(not_running()));
        c.running();
        assert!(!listed(not_running()));
        c.failed("certificate missing");
        assert!(listed(not_running()) && !listed(dead()));
        c.restarted();
        c.running();
        assert!(!listed(not_running()));
        c.died("task ended");
        assert!(listed(dead()));
        assert_eq!(registry().restarts.with_label_values(&["test/health_states"]).get(), 1);
        c.remove();
        assert!(!listed(snapshot()));
    }
}
