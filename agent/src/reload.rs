//! Config reload on SIGHUP and `POST /-/reload` (with `admin.enable_reload`), as Prometheus does
//! it: the file is read and validated first; an invalid one is logged, counted and answered, and
//! the agent keeps running its current config. A valid file equal to the running config changes
//! nothing. A changed one restarts only the components whose config changed
//! ([`crate::components`], applied in `run`); a change that cannot be applied in place is applied
//! by the graceful stop of SIGTERM (sources stop and persist their checkpoints, exporters flush,
//! queues persist) followed by a start of the same binary in the same process: nothing
//! acknowledged is lost, and what is read again is what a SIGTERM would read again (see
//! RELIABILITY.md).
//!
//! Self-metrics: `lgtm_agent_config_last_reload_successful` (1 at start and after a good reload,
//! 0 after a bad one), `lgtm_agent_config_reloads_total{result}`, and
//! `lgtm_agent_config_reload_restarts_total{component}` ([`crate::components::restarts`]).

use std::path::PathBuf;
use std::sync::LazyLock;

use lgtm_config::{Config, Mode};
use lgtm_pipeline::metrics::{counter_vec, register};
use prometheus::{IntCounterVec, IntGauge};
use tokio::sync::oneshot;

/// A `POST /-/reload`: the answer goes back on `reply` (the text, or the error).
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Where the config came from, to read it again the same way.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub path: PathBuf,
    pub mode: Option<Mode>,
    /// `--log-format`, which overrides the file on every load.
    pub log_format: Option<lgtm_config::LogFormat>,
}

pub struct ReloadMetrics {
    pub last_successful: IntGauge,
    pub reloads: IntCounterVec,
}

pub fn metrics() -> &'static ReloadMetrics {
    static M: LazyLock<ReloadMetrics> = LazyLock::new(|| ReloadMetrics {
        last_successful: register(
            IntGauge::new(
                "lgtm_agent_config_last_reload_successful",
                "1 when the last config reload (or the start) succeeded, 0 when the file was invalid.",
            )
            .expect("valid metric definition"),
        ),
        reloads: counter_vec(
            "lgtm_agent_config_reloads_total",
            "Config reloads asked for (SIGHUP, POST /-/reload), by result (applied, unchanged, invalid).",
            &["result"],
        ),
    });
    &M
}

impl Reloader {
    /// Reads the file as at start (mode and log format overrides applied).
    pub fn load(&self) -> Result<Config, lgtm_config::ConfigError> {
        let mut cfg = Config::load(&self.path, self.mode)?;
        if let Some(format) = self.log_format {
            cfg.log.format = format;
        }
        Ok(cfg)
    }

    /// The file's config if it is valid and differs from `current` (`None`: unchanged); an
    /// invalid file is logged and counted, and its error returned. A changed config whose
    /// exporters cannot start (a TLS file that cannot be read, ...) counts as invalid: applied,
    /// it would stop the agent.
    pub async fn check(&self, current: &Config) -> Result<Option<Config>, String> {
        let m = metrics();
        let loaded = match self.load() {
            Ok(new) if new != *current => {
                lgtm_pipeline::exporter::check_setup(&new).await.map(|()| new).map_err(anyhow::Error::msg)
            }
            other => other.map_err(anyhow::Error::from),
        };
        match loaded {
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; the running config stays");
                m.last_successful.set(0);
                m.reloads.with_label_values(&["invalid"]).inc();
                Err(e.to_string())
            }
            Ok(new) if new == *current => {
                tracing::info!("config reload: the file is unchanged");
                m.last_successful.set(1);
                m.reloads.with_label_values(&["unchanged"]).inc();
                Ok(None)
            }
            Ok(new) => {
                m.last_successful.set(1);
                m.reloads.with_label_values(&["applied"]).inc();
                Ok(Some(new))
            }
        }
    }
}
