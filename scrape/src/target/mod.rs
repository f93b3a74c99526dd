//! Targets: what discovery hands over ([`TargetGroup`]), and what a scrape loop scrapes
//! ([`Target`]) once target relabeling ran ([`populate`]).

mod populate;

pub(crate) use populate::discovered_labels;
pub use populate::{populate, populate_with, TargetError};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lgtm_config::RelabelConfig;
use xxhash_rust::xxh3::Xxh3;

use crate::labels::{LabelSet, PackedLabels};
use crate::parser::Format;
use crate::relabel::Relabeler;

/// Targets found by one discovery mechanism, with the options they are scraped with.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    /// Where the group comes from (`static/0`, `kubelet`), for logs and the targets page.
    pub source: String,
    /// One label set per target, each with at least `__address__`; may also set `__scheme__`,
    /// `__metrics_path__`, `__scrape_interval__`, `__scrape_timeout__`, `__param_<name>` and
    /// any `__meta_*` labels for relabeling.
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels of every target of the group; a target's own labels win.
    pub labels: BTreeMap<String, String>,
    pub options: Arc<ScrapeOptions>,
}

/// How the targets of a group are scraped. The label-valued settings (`job`, `scheme`,
/// `metrics_path`, `interval`, `timeout`, `params`) are defaults that a target's labels and
/// target relabeling may override, as in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeOptions {
    pub job: String,
    pub scheme: String,
    pub metrics_path: String,
    pub params: BTreeMap<String, String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Decompressed body size above which the scrape fails; `0` = no limit.
    pub body_size_limit: u64,
    /// Samples (after metric relabeling) above which the scrape fails; `0` = no limit.
    pub sample_limit: usize,
    /// Labels per series (including `__name__`) above which the scrape fails.
    pub label_limit: Option<usize>,
    pub label_name_length_limit: Option<usize>,
    pub label_value_length_limit: Option<usize>,
    /// On a conflict between a scraped label and a target label, keep the scraped one (`true`)
    /// or keep the target's and rename the scraped one to `exported_<name>` (`false`).
    pub honor_labels: bool,
    /// Use the timestamps the target exposes (`true`) or the scrape time.
    pub honor_timestamps: bool,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    pub auth: Auth,
    /// The parser for a body whose `Content-Type` is missing, blank, unparsable or unknown
    /// (Prometheus 3's `fallback_scrape_protocol`); `None` fails such a scrape, as Prometheus 3
    /// does by default.
    pub fallback_scrape_protocol: Option<Format>,
}

impl Default for ScrapeOptions {
    fn default() -> Self {
        ScrapeOptions {
            job: "static".into(),
            scheme: "http".into(),
            metrics_path: "/metrics".into(),
            params: BTreeMap::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            body_size_limit: 0,
            sample_limit: 0,
            label_limit: None,
            label_name_length_limit: None,
            label_value_length_limit: None,
            honor_labels: false,
            honor_timestamps: true,
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            auth: Auth::default(),
            fallback_scrape_protocol: None,
        }
    }
}

impl TargetGroup {
    /// Everything relabeling reads of the group: source, options (with inline secrets), group
    /// labels and every target's labels. Equal fingerprints: the same targets come out, so
    /// whoever relabels groups (the target manager, the shard cache) can keep what it made of
    /// an unchanged one.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&self.options.fingerprint().to_le_bytes());
        let mut field = |s: &str| {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(&self.source);
        for labels in std::iter::once(&self.labels).chain(&self.targets) {
            field("\u{0}");
            for (k, v) in labels {
                field(k);
                field(v);
            }
        }
        h.digest()
    }
}

impl ScrapeOptions {
    /// Changes here restart a target's loop (without staleness markers). Inline secrets are
    /// hidden from `Debug` but still count: a new password restarts the loop.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(format!("{self:?}").as_bytes());
        if let Some(basic) = &self.auth.basic_auth {
            for secret in [&basic.username, &basic.password] {
                if let Secret::Inline(value) = secret {
                    h.update(value.as_bytes());
                    h.update(&[0xff]);
                }
            }
        }
        h.digest()
    }
}

/// How a target's HTTP client talks to it: credentials, TLS and redirects (the part of
/// Prometheus's `http_client_config` the agent supports). The kubelet needs a token and TLS;
/// monitors may set any of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Read before every scrape: projected service account tokens rotate. Wins over
    /// `basic_auth` if both are set (the config forbids that).
    pub bearer_token_file: Option<PathBuf>,
    /// `Authorization: Basic ...`; secrets in files are read before every scrape.
    pub basic_auth: Option<BasicAuth>,
    pub tls: Option<TlsOptions>,
    /// Follow 3xx responses (up to 10), as Prometheus does by default. When `false`, a 3xx
    /// fails the scrape.
    pub follow_redirects: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { bearer_token_file: None, basic_auth: None, tls: None, follow_redirects: true }
    }
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuth {
    pub username: Secret,
    pub password: Secret,
}

/// A credential given inline or as a file. A file is read before every scrape, so a rotated
/// secret is picked up without restarting the loop; surrounding whitespace is trimmed. `Debug`
/// never shows an inline value.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(<secret>)"),
            Secret::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// PEM bundle of the CAs to trust; without it the built-in (Mozilla) roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server certificate is checked against instead of the URL's host, and the
    /// TLS SNI when the target is addressed by IP (the `Host` header stays the address):
    /// scraping a pod by IP whose certificate names its Service.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// One target after relabeling: what its loop scrapes and the labels of its series.
#[derive(Debug, Clone)]
pub struct Target {
    /// Labels put on every series: the relabeled labels without those starting with `__`.
    pub labels: LabelSet,
    /// The labels before target relabeling, for the targets page only: packed, since a
    /// Kubernetes target has dozens of `__meta_*` labels and thousands of targets keep them.
    pub discovered_labels: PackedLabels,
    pub url: reqwest::Url,
    pub interval: Duration,
    pub timeout: Duration,
    pub options: Arc<ScrapeOptions>,
    pub metric_relabel: Relabeler,
    /// The group's `source`, one copy shared by the group's targets.
    pub source: Arc<str>,
}

impl Target {
    /// The target's identity: its labels and URL, whatever discovery found it (the shard
    /// places a target by it, so the copies of one target found by several sources are
    /// scraped by the same replica).
    pub fn identity(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&self.labels.fingerprint().to_le_bytes());
        h.update(self.url.as_str().as_bytes());
        h.digest()
    }

    /// What makes one scrape loop: the identity and the source. Each source is its own job, as
    /// each scrape config is in Prometheus (and each monitor endpoint with the Prometheus
    /// Operator): two ServiceMonitors selecting one Service scrape it twice, and `/targets`
    /// lists it under each. Within one source, the same identity is one target.
    pub fn key(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&self.identity().to_le_bytes());
        h.update(self.source.as_bytes());
        h.digest()
    }

    pub fn job(&self) -> &str {
        self.labels.get("job").unwrap_or(&self.options.job)
    }

    /// The delay before the first scrape, so that this target is always scraped at the same
    /// phase of its interval (wall clock), spreading targets over the interval as Prometheus
    /// does. `seed` differs per agent so that two agents do not scrape in lockstep.
    pub fn offset(&self, seed: u64, now_unix_nanos: u128) -> Duration {
        let interval = self.interval.as_nanos().max(1);
        let base = interval - now_unix_nanos % interval;
        // By key: the copies of one target in two sources do not scrape at the same instant
        // (samples of one series with the same timestamp and different values are refused).
        let phase = u128::from(self.key() ^ seed) % interval;
        let mut next = base + phase;
        if next > interval {
            next -= interval;
        }
        Duration::from_nanos(next as u64)
    }
}
