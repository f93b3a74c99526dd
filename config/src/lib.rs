//! The one configuration model of lgtm-agent.
//!
//! What it does: reads the YAML file of DESIGN.md's config contract into typed structs
//! ([`Config::load`]), expands `${VAR}` and `${VAR:-default}` from the environment, parses
//! durations (`500ms`, `1m30s`) and sizes (`64MiB`), rejects unknown fields, fills in the defaults
//! of the chosen mode ([`Config::resolve`]) and checks the rules across fields
//! ([`Config::validate`]). It also holds `print-config`'s commented default file per mode
//! ([`default_config_yaml`]), kept equal to [`Config::default_for`] by a test.
//!
//! Errors ([`ConfigError`]) read `FILE:LINE: PATH: MESSAGE`, e.g.
//! `config.yaml:12: exporters.loki.batch.max_wait: invalid duration "5 seconds"`. serde_yaml does
//! not always know the line of a field, so the loader looks paths up in an outline of the text
//! (`locate`).
//!
//! What it does not: nothing else in the workspace reads YAML or environment variables; nothing in
//! here opens sockets or files other than the config file itself, and no check needs the network
//! (a URL is checked for its form, not reached).
//!
//! In: the file's text and an environment lookup. Out: a [`Config`] the rest of the agent reads,
//! calling `enabled()` on each source section.

mod expand;
mod load;
mod locate;
mod model;
pub mod relabel;
mod units;
mod validate;

pub use expand::{expand_env, expand_env_mapped, ExpandError, LineMap};
pub use load::{default_config_yaml, ConfigError};
pub use model::*;
pub use units::{ByteSize, Duration};
pub use validate::{MIN_OPEN_FILES, POLICY_TYPES};

/// `url` with the password of its userinfo (`scheme://user:password@host`) replaced by `***`,
/// for every message that quotes a configured URL. Works on text that is not a valid URL too.
///
/// ```
/// assert_eq!(lgtm_config::redact_url("https://u:s3cret@loki:3100/x"), "https://u:***@loki:3100/x");
/// assert_eq!(lgtm_config::redact_url("http://loki/x?a=b@c"), "http://loki/x?a=b@c");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // A lone userinfo part may itself be a token (`https://TOKEN@host`).
        None => "***".to_string(),
    };
    let scheme = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{scheme}{user}@{host}{tail}")
}

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

    /// Settles the mode (`mode_override`, else the file's, else daemonset) and fills every
    /// `enabled` the user left out with the default of that mode.
    pub fn resolve(&mut self, mode_override: Option<Mode>) {
        self.mode = Some(mode_override.unwrap_or(self.mode()));
        let ds = self.mode() == Mode::Daemonset;
        self.logs.enabled.get_or_insert(ds);
        self.scrape.kubelet.enabled.get_or_insert(ds);
        self.scrape.host_metrics.enabled.get_or_insert(ds);
        self.scrape.monitors.enabled.get_or_insert(!ds);
        self.otlp.enabled.get_or_insert(true);
        self.events.enabled.get_or_insert(!ds);
        self.tail_sampling.enabled.get_or_insert(!ds);
        self.cluster_state.enabled.get_or_insert(!ds);
        // An exporter section written in the file starts from `ExporterConfig::default()`, which
        // cannot know which backend it is for; what differs per backend (URL, queue sizes) is
        // filled in here.
        let defaults = ExportersConfig::default();
        for (e, d) in [
            (&mut self.exporters.mimir, defaults.mimir),
            (&mut self.exporters.loki, defaults.loki),
            (&mut self.exporters.tempo, defaults.tempo),
        ] {
            if e.url.is_none() {
                e.url = d.url;
            }
            e.queue.max_memory = e.queue.max_memory.or(d.queue.max_memory);
            e.queue.max_disk = e.queue.max_disk.or(d.queue.max_disk);
        }
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
