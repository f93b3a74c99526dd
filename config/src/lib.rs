//! The one configuration model of lgtm-agent.
//!
//! What it does: reads the YAML file of DESIGN.md's config contract into typed structs, expands
//! `${VAR}` and `${VAR:-default}` from the environment, parses durations and sizes, rejects unknown
//! fields, fills in the defaults of the chosen mode and validates the result. Errors name the file,
//! the line and the field's path.
//!
//! What it does not: nothing else in the workspace reads YAML or environment variables; nothing in
//! here opens sockets or files other than the config file itself.

mod expand;
mod load;
mod model;
mod units;

pub use expand::expand_env;
pub use load::{default_config_yaml, ConfigError};
pub use model::*;
pub use units::{ByteSize, Duration};

impl Config {
    /// The configuration a user gets with an empty file in `mode`.
    pub fn default_for(mode: Mode) -> Config {
        let mut c = Config { mode: Some(mode), ..Config::default() };
        c.resolve(None);
        c
    }

    /// The mode in force: `--mode` if given, else the file's, else daemonset.
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or_default()
    }

    /// Fills every `enabled` the user left out with the default of the mode in force.
    pub fn resolve(&mut self, mode_override: Option<Mode>) {
        if let Some(m) = mode_override {
            self.mode = Some(m);
        }
        let ds = self.mode() == Mode::Daemonset;
        self.logs.enabled.get_or_insert(ds);
        self.scrape.kubelet.enabled.get_or_insert(ds);
        self.scrape.host_metrics.enabled.get_or_insert(ds);
        self.scrape.monitors.enabled.get_or_insert(!ds);
        self.otlp.enabled.get_or_insert(true);
        self.events.enabled.get_or_insert(!ds);
        self.tail_sampling.enabled.get_or_insert(!ds);
        self.cluster_state.enabled.get_or_insert(!ds);
    }

    /// The tenant an exporter sends as `X-Scope-OrgID`.
    pub fn tenant_of<'a>(&'a self, exporter: &'a ExporterConfig) -> &'a str {
        exporter.tenant.as_deref().unwrap_or(&self.tenant)
    }
}

macro_rules! enabled_accessor {
    ($($t:ty),*) => {$(
        impl $t {
            /// Whether this part runs (after [`Config::resolve`]).
            pub fn enabled(&self) -> bool {
                self.enabled.unwrap_or(false)
            }
        }
    )*};
}
enabled_accessor!(
    LogsConfig,
    KubeletConfig,
    HostMetricsConfig,
    MonitorsConfig,
    OtlpConfig,
    EventsConfig,
    TailSamplingConfig,
    ClusterStateConfig
);
