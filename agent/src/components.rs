//! What a config reload restarts: the agent's components and the config each one is built from.
//!
//! | component        | built from                                                              |
//! |------------------|-------------------------------------------------------------------------|
//! | `exporter/mimir` | `exporters.mimir` (and `tenant`)                                        |
//! | `exporter/loki`  | `exporters.loki` (and `tenant`)                                         |
//! | `exporter/tempo` | `exporters.tempo` (and `tenant`)                                        |
//! | `scrape`         | `scrape` (interval, timeout, limits, `static_configs`, `kubelet`)      |
//! | `source/logs`    | `logs` (`enabled` too), `exporters.loki.batch`                          |
//!
//! These restart in place: an exporter on its own queue
//! ([`lgtm_pipeline::PipelineHandle::restart_exporter`]), the scrape targets by a new sync of
//! their providers (unchanged targets keep scraping, removed ones get staleness markers), the log
//! tailer from its checkpoints. Everything else (`mode`, `cluster`, `node_name`, `data_dir`,
//! `admin`, `log`, an exporter's `enabled`, `console` or `queue`, `otlp` and what sits behind it,
//! `scrape.host_metrics`, `scrape.monitors`, the scrape interval, timeout and limits while host
//! metrics or monitors run, `events`, `cluster_state`, `tail_sampling`) is applied by restarting
//! the whole agent in the same process, as before ([`Plan::Restart`] names the fields).

use std::sync::LazyLock;

use lgtm_config::{Config, ExporterConfig};
use lgtm_pipeline::exporter::Signal;
use lgtm_pipeline::metrics::counter_vec;
use prometheus::IntCounterVec;

/// A component that a reload can restart alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Exporter(Signal),
    Scrape,
    Logs,
}

impl Component {
    /// The `component` label and log value.
    pub fn name(self) -> &'static str {
        match self {
            Component::Exporter(Signal::Metrics) => "exporter/mimir",
            Component::Exporter(Signal::Logs) => "exporter/loki",
            Component::Exporter(Signal::Traces) => "exporter/tempo",
            Component::Scrape => "scrape",
            Component::Logs => "source/logs",
        }
    }
}

/// How a changed config is applied.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Restart these components only (none: nothing running depends on what changed, e.g.
    /// `shutdown.grace_period`).
    InPlace(Vec<Component>),
    /// Stop everything as on SIGTERM and start again on the new file (same process): these
    /// fields cannot be changed in place.
    Restart(Vec<String>),
}

/// `lgtm_agent_config_reload_restarts_total{component}`: components restarted in place by a
/// reload (`lgtm_agent_component_restarts_total` counts the restarts of a component after it
/// failed). A whole restart replaces the process image, which starts every counter at 0 again:
/// it shows in the log only.
pub fn restarts() -> &'static IntCounterVec {
    static M: LazyLock<IntCounterVec> = LazyLock::new(|| {
        counter_vec(
            "lgtm_agent_config_reload_restarts_total",
            "Components restarted in place by a config reload, by component (exporter/mimir, exporter/loki, exporter/tempo, scrape, source/logs).",
            &["component"],
        )
    });
    &M
}

/// Compares `old` and `new` per component. Whatever is not one of the components above and
/// differs makes it a whole restart.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut changed = Vec::new();
    // `rest` is `new` with every part that can change in place set back to `old`'s: if it then
    // differs from `old`, something else changed.
    let mut rest = new.clone();
    rest.tenant = old.tenant.clone();
    rest.shutdown = old.shutdown.clone();

    let pairs = [
        (Signal::Metrics, &old.exporters.mimir, &new.exporters.mimir),
        (Signal::Logs, &old.exporters.loki, &new.exporters.loki),
        (Signal::Traces, &old.exporters.tempo, &new.exporters.tempo),
    ];
    for (signal, o, n) in pairs {
        if o.enabled != n.enabled || o.console != n.console || o.queue != n.queue {
            continue; // left in `rest`: a whole restart
        }
        if n.enabled && (o != n || old.tenant_of(o) != new.tenant_of(n)) {
            changed.push(Component::Exporter(signal));
        }
        *exporter_mut(&mut rest, signal) = o.clone();
    }

    // Scrape targets are re-synced; the host metrics source and monitor discovery are built
    // from the same interval and timeout, so they must not be running for that to be enough.
    let scrape_fields = |c: &Config| {
        (
            c.scrape.interval,
            c.scrape.timeout,
            c.scrape.body_size_limit,
            c.scrape.sample_limit,
            c.scrape.static_configs.clone(),
            c.scrape.kubelet.clone(),
        )
    };
    let uses_scrape_globals = |c: &Config| c.scrape.host_metrics.enabled() || c.scrape.monitors.enabled();
    let globals_same = (old.scrape.interval, old.scrape.timeout, old.scrape.body_size_limit, old.scrape.sample_limit)
        == (new.scrape.interval, new.scrape.timeout, new.scrape.body_size_limit, new.scrape.sample_limit);
    if globals_same || !(uses_scrape_globals(old) || uses_scrape_globals(new)) {
        if scrape_fields(old) != scrape_fields(new) {
            changed.push(Component::Scrape);
        }
        rest.scrape.interval = old.scrape.interval;
        rest.scrape.timeout = old.scrape.timeout;
        rest.scrape.body_size_limit = old.scrape.body_size_limit;
        rest.scrape.sample_limit = old.scrape.sample_limit;
        rest.scrape.static_configs = old.scrape.static_configs.clone();
        rest.scrape.kubelet = old.scrape.kubelet.clone();
    }

    // The tailer's batches follow `exporters.loki.batch`; its in-flight bound follows the Loki
    // queue, which is not changed in place. Turned on or off, it starts or stops.
    if old.logs != new.logs || (new.logs.enabled() && old.exporters.loki.batch != new.exporters.loki.batch) {
        changed.push(Component::Logs);
    }
    rest.logs = old.logs.clone();

    if rest != *old {
        return Plan::Restart(differences(old, &rest));
    }
    changed.sort_by_key(|c| c.name());
    Plan::InPlace(changed)
}

fn exporter_mut(cfg: &mut Config, signal: Signal) -> &mut ExporterConfig {
    match signal {
        Signal::Metrics => &mut cfg.exporters.mimir,
        Signal::Logs => &mut cfg.exporters.loki,
        Signal::Traces => &mut cfg.exporters.tempo,
    }
}

/// The dotted paths (at most three deep) where `a` and `b` differ.
fn differences(a: &Config, b: &Config) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, depth: usize, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) if depth < 3 => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                    if va != vb {
                        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                        walk(va, vb, &p, depth + 1, out);
                    }
                }
            }
            _ => out.push(if path.is_empty() { "(config)".to_string() } else { path.to_string() }),
        }
    }
    let (x, y) = (serde_json::to_value(a), serde_json::to_value(b));
    let mut out = Vec::new();
    match (x, y) {
        (Ok(x), Ok(y)) => walk(&x, &y, "", 0, &mut out),
        _ => out.push("(config)".to_string()),
    }
    if out.is_empty() {
        out.push("(config)".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let yaml = "
exporters:
  loki: { url: http://127.0.0.1:1/loki/api/v1/push }
  mimir: { url: http://127.0.0.1:1/api/v1/push }
logs: { enabled: true, path: /tmp/pods }
scrape:
  static_configs:
    - targets: [127.0.0.1:9100]
      labels: { job: a }
";
        Config::from_yaml("test.yaml", yaml, None, |_| None).unwrap()
    }

    fn with(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = base();
        f(&mut c);
        c
    }

    #[test]
    fn a_scrape_config_change_restarts_the_scrape_targets_only() {
        let new = with(|c| c.scrape.static_configs[0].targets.push("127.0.0.1:9200".into()));
        assert_eq!(plan(&base(), &new), Plan::InPlace(vec![Component::Scrape]));
    }

    #[test]
    fn an_exporter_setting_restarts_that_exporter_only() {
        let new = with(|c| {
            c.exporters.loki.headers.insert("X-Test".into(), "1".into());
        });
        assert_eq!(plan(&base(), &new), Plan::InPlace(vec![Component::Exporter(Signal::Logs)]));
        let tenant = with(|c| c.tenant = "other".into());
        let Plan::InPlace(all) = plan(&base(), &tenant) else { panic!("in place") };
        assert!(
            all.contains(&Component::Exporter(Signal::Metrics)) && all.contains(&Component::Exporter(Signal::Logs))
        );
    }

    #[test]
    fn the_loki_batch_restarts_the_exporter_and_the_tailer() {
        let new = with(|c| c.exporters.loki.batch.max_items += 1);
        assert_eq!(plan(&base(), &new), Plan::InPlace(vec![Component::Exporter(Signal::Logs), Component::Logs]));
    }

    #[test]
    fn log_filters_restart_the_tailer_only() {
        let new = with(|c| c.logs.exclude_namespaces.push("kube-system".into()));
        assert_eq!(plan(&base(), &new), Plan::InPlace(vec![Component::Logs]));
    }

    #[test]
    fn turning_the_tailer_off_or_on_restarts_it_only() {
        let off = with(|c| c.logs.enabled = Some(false));
        assert_eq!(plan(&base(), &off), Plan::InPlace(vec![Component::Logs]));
        assert_eq!(plan(&off, &base()), Plan::InPlace(vec![Component::Logs]));
        let batch = with(|c| {
            c.logs.enabled = Some(false);
            c.exporters.loki.batch.max_items += 1;
        });
        assert_eq!(plan(&off, &batch), Plan::InPlace(vec![Component::Exporter(Signal::Logs)]));
    }

    #[test]
    fn the_grace_period_restarts_nothing() {
        let new = with(|c| c.shutdown.grace_period = lgtm_config::Duration::from_secs(3));
        assert_eq!(plan(&base(), &new), Plan::InPlace(vec![]));
    }

    #[test]
    fn queue_data_dir_admin_and_receivers_restart_the_agent_naming_the_field() {
        let queue = with(|c| c.exporters.loki.queue.max_memory = Some(lgtm_config::ByteSize::from_bytes(1 << 20)));
        assert_eq!(plan(&base(), &queue), Plan::Restart(vec!["exporters.loki.queue".into()]));
        let dir = with(|c| c.data_dir = "/elsewhere".into());
        assert_eq!(plan(&base(), &dir), Plan::Restart(vec!["data_dir".into()]));
        let admin = with(|c| c.admin.listen = "127.0.0.1:1".into());
        assert_eq!(plan(&base(), &admin), Plan::Restart(vec!["admin.listen".into()]));
        let both = with(|c| {
            c.otlp.enabled = Some(!c.otlp.enabled());
            c.logs.exclude_namespaces.push("x".into());
        });
        assert_eq!(plan(&base(), &both), Plan::Restart(vec!["otlp.enabled".into()]));
    }

    #[test]
    fn a_scrape_interval_with_host_metrics_on_restarts_the_agent() {
        let old = with(|c| c.scrape.host_metrics.enabled = Some(true));
        let mut new = old.clone();
        new.scrape.interval = lgtm_config::Duration::from_secs(7);
        assert_eq!(plan(&old, &new), Plan::Restart(vec!["scrape.interval".into()]));
        let no_host = with(|c| c.scrape.host_metrics.enabled = Some(false));
        let mut faster = no_host.clone();
        faster.scrape.interval = lgtm_config::Duration::from_secs(7);
        assert_eq!(plan(&no_host, &faster), Plan::InPlace(vec![Component::Scrape]));
    }
}
