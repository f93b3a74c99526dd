//! The typed configuration tree. Field names are the YAML keys of DESIGN.md's config contract.
//!
//! Every struct rejects unknown fields. Every source section's `enabled` is an `Option<bool>` in
//! the file; [`crate::Config::resolve`] fills what the user left out with the mode's default, so the
//! rest of the agent only calls `enabled()`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Duration};

/// Which workload this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One pod per node: pod logs, kubelet and host metrics, node-local OTLP.
    #[default]
    Daemonset,
    /// StatefulSet replicas: monitor discovery, events, tail sampling.
    Cluster,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Daemonset => "daemonset",
            Mode::Cluster => "cluster",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "daemonset" => Ok(Mode::Daemonset),
            "cluster" => Ok(Mode::Cluster),
            other => Err(format!("unknown mode {other:?}, expected daemonset or cluster")),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `cluster` label / `k8s.cluster.name` on everything shipped.
    pub cluster: String,
    /// Default `X-Scope-OrgID` of every exporter.
    pub tenant: String,
    /// `None` in the file means daemonset unless `--mode` says otherwise.
    pub mode: Option<Mode>,
    /// Checkpoints and disk queues live here.
    pub data_dir: PathBuf,
    /// `data_dir` is locked (flock on `data_dir/.lock`) for the agent's lifetime; a second agent
    /// on the same directory waits this long for the lock (not ready, logging who holds it),
    /// then exits with code 1.
    pub data_dir_lock_wait: Duration,
    /// The node this pod runs on (`node` label, this node's kubelet and pods). Empty: taken from
    /// the `NODE_NAME` environment variable (the chart sets it from the downward API).
    pub node_name: String,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub exporters: ExportersConfig,
    pub logs: LogsConfig,
    pub scrape: ScrapeConfig,
    pub otlp: OtlpConfig,
    pub events: EventsConfig,
    pub tail_sampling: TailSamplingConfig,
    pub cluster_state: ClusterStateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: "lgtm-remote-agent".into(),
            tenant: "anonymous".into(),
            mode: None,
            data_dir: PathBuf::from("/var/lib/lgtm-agent"),
            data_dir_lock_wait: Duration::from_secs(120),
            node_name: String::new(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            exporters: ExportersConfig::default(),
            logs: LogsConfig::default(),
            scrape: ScrapeConfig::default(),
            otlp: OtlpConfig::default(),
            events: EventsConfig::default(),
            tail_sampling: TailSamplingConfig::default(),
            cluster_state: ClusterStateConfig::default(),
        }
    }
}

/// The admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/targets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
    /// Serve `POST /-/reload` (reload the config file, as SIGHUP does). Off by default: anyone who
    /// can reach the admin port could trigger it.
    pub enable_reload: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "0.0.0.0:9464".into(), enable_reload: false }
    }
}

/// The agent's own logs (to stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`; `--log-format` overrides.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `lgtm_pipeline=debug,info`; `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What happens on SIGTERM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time given to exporters to flush in-flight batches before queues are persisted and the
    /// process exits.
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_period: Duration::from_secs(20) }
    }
}

/// The three backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportersConfig {
    pub mimir: ExporterConfig,
    pub loki: ExporterConfig,
    pub tempo: ExporterConfig,
}

impl Default for ExportersConfig {
    fn default() -> Self {
        ExportersConfig {
            mimir: ExporterConfig {
                url: Some("http://mimir-distributor.mimir.svc:8080/api/v1/push".into()),
                queue: QueueConfig::sized(64 * 1024 * 1024, 1024 * 1024 * 1024),
                ..ExporterConfig::default()
            },
            loki: ExporterConfig {
                url: Some("http://loki-write.loki.svc:3100/loki/api/v1/push".into()),
                // Memory only: the log files are the buffer (the tailer's checkpoints advance only
                // when Loki acknowledges), so a disk copy would only cost CPU.
                queue: QueueConfig::sized(16 * 1024 * 1024, 0),
                ..ExporterConfig::default()
            },
            tempo: ExporterConfig {
                url: Some("http://tempo-distributor.tempo.svc:4317".into()),
                queue: QueueConfig::sized(64 * 1024 * 1024, 1024 * 1024 * 1024),
                ..ExporterConfig::default()
            },
        }
    }
}

/// One exporter. Mimir and Loki take `url`; Tempo takes `endpoint` (an alias of `url`). A `url`
/// left out is the backend's default ([`ExportersConfig::default`], filled in by
/// [`crate::Config::resolve`]); `url: ""` means none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// `false` turns the exporter off; what its sources produce is then discarded and counted.
    pub enabled: bool,
    #[serde(alias = "endpoint", deserialize_with = "null_is_empty")]
    pub url: Option<String>,
    /// Print what would be shipped to stdout instead of sending it (one line per series, entry
    /// or span).
    pub console: bool,
    /// Overrides the top-level `tenant`.
    pub tenant: Option<String>,
    /// Extra request headers (gRPC metadata for Tempo).
    pub headers: BTreeMap<String, String>,
    pub tls: TlsConfig,
    /// Re-read whenever it changes (projected service-account tokens rotate).
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    /// Per request.
    pub timeout: Duration,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub queue: QueueConfig,
    /// Requests in flight at once. Remote write: a series always goes to the same shard, so its
    /// samples stay in order. Loki: a stream is never in two requests in flight, so its entries
    /// stay in order. Tempo: batches sent side by side (spans have no order to keep).
    pub shards: usize,
    /// Tempo only: `gzip` or `none`.
    pub compression: Compression,
    /// Tempo only: the gzip level, 1 (fastest) to 9 (smallest). 1 by default: in `bench traces`
    /// the agent's whole ingest cost 0.51 CPU-seconds per 300,000 spans at level 1 against 0.85 at
    /// level 6 (the Collector's default, set there with `compression_params.level`, and
    /// rotel-agent's), for 16% more bytes to Tempo.
    pub compression_level: u32,
    /// Loki only: send entries' structured metadata (`part` of split lines, and `stream` where it
    /// is not a label). When Loki refuses it (`allow_structured_metadata: false`, the default of
    /// Loki 2.9), entries are sent again without it and so are later ones; `false` never sends it.
    pub structured_metadata: bool,
    /// Loki only: how long entries of a stream that Loki's stream limit refuses are held back and
    /// retried (the other streams flow meanwhile) before they are dropped and counted.
    pub stream_limit_hold_back: Duration,
    /// Loki only: bytes per second sent for any one stream (Loki refuses more than its
    /// `per_stream_rate_limit`, 3MB by default, storing what fits and answering 429 for the rest,
    /// so that resending stores lines twice). Requests wait until each of their streams is within
    /// it; `0` does not pace.
    pub per_stream_rate: ByteSize,
    /// Loki only: bytes any one stream may send at once above `per_stream_rate` (Loki's
    /// `per_stream_rate_limit_burst`, 15MB by default: a container's catch-up of a few MB is
    /// sent at once, a longer one paced at the rate); a smaller value counts as `per_stream_rate`.
    pub per_stream_burst: ByteSize,
    /// Loki only: Loki's validation limits (`limits_config`), checked before sending, so that
    /// entries and streams Loki would refuse are dropped and counted by Loki's reason instead
    /// of being mixed into requests with healthy ones.
    pub limits: LokiLimits,
}

/// Loki's `limits_config` validation limits, with Loki's documented defaults (Loki 3; its
/// "Troubleshoot log ingestion" page). Set them to what the Loki in front of the agent enforces;
/// `0` turns a check off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiLimits {
    /// `max_line_size` (256KB): a longer line is refused (`line_too_long`), or cut to this size
    /// with `max_line_size_truncate`.
    pub max_line_size: ByteSize,
    /// `max_line_size_truncate` (false): lines over `max_line_size` are cut to it (at a UTF-8
    /// character boundary) instead of dropped.
    pub max_line_size_truncate: bool,
    /// `max_label_names_per_series` (15; Loki 2.x: 30), `service_name` not counted, as Loki does.
    pub max_label_names_per_series: usize,
    /// `max_label_name_length` (1024 bytes).
    pub max_label_name_length: usize,
    /// `max_label_value_length` (2048 bytes).
    pub max_label_value_length: usize,
    /// `reject_old_samples` (true) and `reject_old_samples_max_age` (1w): older entries are
    /// refused (`greater_than_max_sample_age`).
    pub reject_old_samples: bool,
    pub reject_old_samples_max_age: Duration,
    /// `creation_grace_period` (10m): entries further in the future are refused
    /// (`too_far_in_future`).
    pub creation_grace_period: Duration,
}

impl Default for LokiLimits {
    fn default() -> Self {
        LokiLimits {
            // Loki's `256KB`, in its units (powers of 1000).
            max_line_size: ByteSize::from_bytes(256_000),
            max_line_size_truncate: false,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_old_samples: true,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
        }
    }
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enabled: true,
            url: None,
            console: false,
            tenant: None,
            headers: BTreeMap::new(),
            tls: TlsConfig::default(),
            bearer_token_file: None,
            basic_auth: None,
            timeout: Duration::from_secs(30),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
            shards: 4,
            compression: Compression::Gzip,
            compression_level: 1,
            structured_metadata: true,
            stream_limit_hold_back: Duration::from_secs(600),
            per_stream_rate: ByteSize::from_bytes(3_000_000),
            per_stream_burst: ByteSize::from_bytes(15_000_000),
            limits: LokiLimits::default(),
        }
    }
}

/// `url:` with nothing after it (as `url: ${MIMIR_URL:-}` expands) means no URL, not the default.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Overrides the name checked against the server certificate.
    pub server_name: Option<String>,
    /// Off by default; when on, a warning is logged at start.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    /// Preferred over `password`: read at start and whenever it changes.
    pub password_file: Option<PathBuf>,
}

/// Requests are cut when either bound is reached, or when the oldest item waited `max_wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Uncompressed protobuf bytes per request.
    pub max_bytes: ByteSize,
    /// Samples (Mimir), entries (Loki) or spans (Tempo) per request.
    pub max_items: usize,
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_bytes: ByteSize::from_bytes(1024 * 1024),
            max_items: 2000,
            max_wait: Duration::from_millis(1000),
        }
    }
}

/// Capped exponential backoff with full jitter. Retryable errors (5xx, 429, connection errors,
/// gRPC UNAVAILABLE / RESOURCE_EXHAUSTED) are retried until delivered; a `Retry-After` header is
/// honoured up to `max_backoff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(30) }
    }
}

/// The exporter's durable queue. The sizes depend on the backend (see
/// [`ExportersConfig::default`]); a size left out of the file is `None` until [`crate::Config::resolve`]
/// fills it with that backend's default, so read them through [`QueueConfig::max_memory`] and
/// [`QueueConfig::max_disk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Bytes of queued records kept in memory; the rest is read back from disk when its turn comes.
    pub max_memory: Option<ByteSize>,
    /// Bytes of disk segments under `data_dir/queue/<exporter>`; `0` keeps the queue in memory only
    /// (lost on a crash).
    pub max_disk: Option<ByteSize>,
    /// What a full queue does: `block` slows the sources down (the default; nothing is lost),
    /// `drop_oldest` evicts the oldest records and counts them in `lgtm_agent_dropped_total`.
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_memory: None, max_disk: None, when_full: WhenFull::Block }
    }
}

impl QueueConfig {
    fn sized(max_memory: u64, max_disk: u64) -> QueueConfig {
        QueueConfig {
            max_memory: Some(ByteSize::from_bytes(max_memory)),
            max_disk: Some(ByteSize::from_bytes(max_disk)),
            when_full: WhenFull::Block,
        }
    }

    /// The memory bound in force (after [`crate::Config::resolve`]).
    pub fn max_memory(&self) -> ByteSize {
        self.max_memory.unwrap_or_default()
    }

    /// The disk bound in force (after [`crate::Config::resolve`]); `0` means memory only.
    pub fn max_disk(&self) -> ByteSize {
        self.max_disk.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    DropOldest,
}

/// Pod logs (daemonset mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub enabled: Option<bool>,
    pub path: PathBuf,
    pub exclude_containers: Vec<String>,
    pub exclude_namespaces: Vec<String>,
    /// `false`: labels come from the path alone (no API server needed).
    pub kubernetes: bool,
    /// Longer lines are split into parts of this size, never dropped.
    pub max_line_size: ByteSize,
    /// Where to start in files that already exist on the very first start: `beginning` or `end`.
    pub start_at: StartAt,
    /// Where a line's `stream` (stdout or stderr) goes: a stream label (what Vector, Fluent Bit,
    /// Alloy and Promtail do, so `{stream="stderr"}` works as in the other scenarios) or Loki
    /// structured metadata (fewer streams; needs Loki 3 with `allow_structured_metadata`).
    pub stream: StreamPlacement,
    /// Period of the rescan that recovers from missed or overflowed inotify events.
    pub rescan_interval: Duration,
    /// Pod labels copied to stream labels (besides `app`).
    pub pod_labels: Vec<String>,
    /// Pod annotations copied to stream labels.
    pub pod_annotations: Vec<String>,
    /// The agent's own pod, whose logs are never shipped (they would carry its own complaints
    /// about Loki back to Loki). Pods annotated `lgtm-agent.io/exclude: "true"` are skipped too.
    pub own_pod: OwnPod,
    /// A log file that is a symlink is read only if it resolves under `path` or under one of
    /// these directories (Docker nodes link `/var/log/pods` files into its containers
    /// directory). Symlinked pod and container directories are never followed.
    pub follow_symlinks_into: Vec<PathBuf>,
    /// A partial line (CRI `P`, Docker `log` without `\n`) whose closing piece has not come this
    /// long after the file's last data is shipped as it is (the rest, if it ever comes, is a line
    /// of its own). Also at deletion of the file and at shutdown.
    pub partial_flush_timeout: Duration,
    /// Log files held open at once; idle ones are closed and reopened by path and identity when
    /// they change. `0`: from the soft `RLIMIT_NOFILE` (after raising it to the hard one), leaving
    /// a reserve for sockets, queue segments and checkpoints.
    pub max_open_files: u32,
}

/// Who the agent's pod is. Fields left empty come from the `POD_NAMESPACE`, `POD_NAME` and
/// `POD_UID` environment variables (the chart sets them from the downward API); a log file is the
/// agent's own when its pod directory has this uid, or this namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            enabled: None,
            path: PathBuf::from("/var/log/pods"),
            exclude_containers: vec!["linkerd-proxy".into(), "istio-proxy".into()],
            exclude_namespaces: Vec::new(),
            kubernetes: true,
            // Loki's default `max_line_size` (256KB, powers of 1000), so that no part is refused.
            max_line_size: ByteSize::from_bytes(256_000),
            start_at: StartAt::Beginning,
            stream: StreamPlacement::Label,
            rescan_interval: Duration::from_secs(10),
            pod_labels: Vec::new(),
            pod_annotations: Vec::new(),
            own_pod: OwnPod::default(),
            follow_symlinks_into: vec![PathBuf::from("/var/lib/docker/containers")],
            partial_flush_timeout: Duration::from_secs(5),
            max_open_files: 0,
        }
    }
}

impl LogsConfig {
    /// The largest batch the pod log tailer hands to the Loki queue: it cuts batches at 1 MiB,
    /// after decoding the 256 KiB block in hand, whose entries may include a line joined from
    /// partial lines up to `max_line_size`. `exporters.loki.queue` must hold at least this much.
    pub fn largest_batch(&self) -> ByteSize {
        ByteSize::from_bytes((2 << 20) + self.max_line_size.bytes())
    }
}

/// Where a log line's `stream` (stdout/stderr) is sent: `logs.stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamPlacement {
    #[default]
    Label,
    StructuredMetadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

/// Scraping (both modes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Bodies larger than this fail the scrape (`up` = 0).
    pub body_size_limit: ByteSize,
    /// `0` = no limit.
    pub sample_limit: usize,
    pub static_configs: Vec<StaticConfig>,
    pub kubelet: KubeletConfig,
    pub host_metrics: HostMetricsConfig,
    pub monitors: MonitorsConfig,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            body_size_limit: ByteSize::from_bytes(64 * 1024 * 1024),
            sample_limit: 0,
            static_configs: Vec::new(),
            kubelet: KubeletConfig::default(),
            host_metrics: HostMetricsConfig::default(),
            monitors: MonitorsConfig::default(),
        }
    }
}

impl ScrapeConfig {
    /// How often the targets of `sc` are scraped: its own `interval`, else `scrape.interval`.
    pub fn interval_of(&self, sc: &StaticConfig) -> Duration {
        sc.interval.unwrap_or(self.interval)
    }

    /// The scrape timeout of the targets of `sc`: its own `timeout`, else `scrape.timeout` but
    /// never longer than the interval (as in Prometheus).
    pub fn timeout_of(&self, sc: &StaticConfig) -> Duration {
        sc.timeout.unwrap_or(self.timeout.min(self.interval_of(sc)))
    }
}

/// Plain targets, as in Prometheus's `static_configs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub metrics_path: Option<String>,
    pub scheme: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub honor_labels: bool,
    pub honor_timestamps: Option<bool>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Read before every scrape (rotating tokens); not together with `basic_auth`.
    pub bearer_token_file: Option<PathBuf>,
    /// `password_file` is read before every scrape.
    pub basic_auth: Option<BasicAuth>,
    /// For `scheme: https`: CA, client certificate, `server_name`, `insecure_skip_verify`.
    pub tls_config: Option<TlsConfig>,
    /// Follow HTTP 3xx responses (default `true`, as in Prometheus); `false` makes a 3xx a
    /// failed scrape.
    pub follow_redirects: Option<bool>,
    /// How to parse a body whose `Content-Type` is missing, blank, unparsable or unknown, as
    /// Prometheus 3's option of that name; unset, such a scrape fails (Prometheus 3's default).
    pub fallback_scrape_protocol: Option<ScrapeProtocol>,
}

/// An exposition protocol by Prometheus's name for it (`fallback_scrape_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScrapeProtocol {
    /// Refused by `validate`: the agent does not parse the protobuf format.
    PrometheusProto,
    #[serde(rename = "PrometheusText0.0.4")]
    PrometheusText0_0_4,
    #[serde(rename = "PrometheusText1.0.0")]
    PrometheusText1_0_0,
    #[serde(rename = "OpenMetricsText0.0.1")]
    OpenMetricsText0_0_1,
    #[serde(rename = "OpenMetricsText1.0.0")]
    OpenMetricsText1_0_0,
    #[serde(rename = "OpenMetricsText2.0.0")]
    OpenMetricsText2_0_0,
}

/// One Prometheus relabeling rule; defaults as in Prometheus.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletConfig {
    pub enabled: Option<bool>,
    /// `direct` (https://$NODE_IP:10250) or `apiserver` (through the nodes/proxy subresource).
    pub via: KubeletVia,
    /// The host (name or IP) the kubelet is reached at with `via: direct`, e.g. `${NODE_IP}`;
    /// `""`: the node name. Also the host part of the `instance` label.
    pub address: String,
    pub port: u16,
    pub bearer_token_file: PathBuf,
    pub ca_file: PathBuf,
    pub insecure_skip_verify: bool,
    /// cAdvisor's explicit timestamps cause stale and out-of-order samples; kube-prometheus
    /// ignores them and so do we by default.
    pub cadvisor_honor_timestamps: bool,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            enabled: None,
            via: KubeletVia::Direct,
            address: String::new(),
            port: 10250,
            bearer_token_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            ca_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
            insecure_skip_verify: false,
            cadvisor_honor_timestamps: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeletVia {
    #[default]
    Direct,
    Apiserver,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    pub enabled: Option<bool>,
    /// The host's root filesystem as mounted in the container (`/host` in the chart).
    pub root: PathBuf,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        HostMetricsConfig { enabled: None, root: PathBuf::from("/") }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorsConfig {
    pub enabled: Option<bool>,
    pub service_monitors: bool,
    pub pod_monitors: bool,
    /// `prometheus.io/scrape` annotations on pods and services.
    pub annotations: bool,
    /// Replicas sharing the targets. `None`: `spec.replicas` of this pod's StatefulSet.
    pub replicas: Option<u32>,
    /// This pod's name; its StatefulSet ordinal suffix (`lgtm-agent-cluster-2`) is this
    /// replica's index, its prefix the StatefulSet's name. Empty: the `POD_NAME` environment
    /// variable (the chart sets it from the downward API); unset: one replica scrapes all.
    pub pod_name: String,
    /// This pod's namespace (the StatefulSet's, and the events Lease's by default). Empty: the
    /// `POD_NAMESPACE` environment variable, else `default`.
    pub pod_namespace: String,
}

impl Default for MonitorsConfig {
    fn default() -> Self {
        MonitorsConfig {
            enabled: None,
            service_monitors: true,
            pod_monitors: true,
            annotations: true,
            replicas: None,
            pod_name: String::new(),
            pod_namespace: String::new(),
        }
    }
}

/// OTLP receivers (both modes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    pub enabled: Option<bool>,
    /// gRPC listen address; empty disables it.
    pub grpc: String,
    /// HTTP listen address; empty disables it.
    pub http: String,
    /// Largest accepted request (after decompression). 4 MiB by default, the gRPC receive limit
    /// of Tempo's distributor: whatever the agent takes, Tempo can take.
    pub max_request_size: ByteSize,
    /// Daemonset mode: the cluster-mode headless Service, `host:port`; spans are routed there by
    /// trace ID. Empty: export straight to Tempo.
    pub forward_traces_to: String,
    /// Jaeger receivers; their spans go where OTLP spans go.
    pub jaeger: JaegerConfig,
    /// Zipkin receiver (`POST /api/v2/spans`, JSON or protobuf) listen address; empty disables it.
    pub zipkin: String,
    /// What every TCP receiver (OTLP, Jaeger Thrift/HTTP and gRPC, Zipkin) allows one client.
    pub limits: ReceiverLimits,
}

/// Bounds on what clients of the TCP receivers can hold: time, connections, streams, bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverLimits {
    /// A connection that has not sent a whole request head (HTTP/1) in this time is closed.
    pub header_timeout: Duration,
    /// A request whose body has not arrived whole in this time is answered 408 (HTTP) or
    /// DEADLINE_EXCEEDED (gRPC) and its bytes released.
    pub request_timeout: Duration,
    /// Open connections per listener; one more is closed at once and counted.
    pub max_connections: usize,
    /// HTTP/2 (gRPC): concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 (gRPC): ping an idle connection this often...
    pub keepalive_interval: Duration,
    /// ...and close it when the ping is not answered in this time.
    pub keepalive_timeout: Duration,
    /// Bytes of request bodies (HTTP and gRPC) held by all receivers together, from the first byte
    /// received until answered; a request that would go over is answered 429 / RESOURCE_EXHAUSTED
    /// with RetryInfo (retry later) and counted.
    pub max_in_flight_bytes: ByteSize,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_concurrent_streams: 100,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_in_flight_bytes: ByteSize::from_bytes(64 * 1024 * 1024),
        }
    }
}

/// Jaeger receivers (under `otlp`, off when `otlp` is off). Each address empty disables that one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerConfig {
    /// Agent protocol, `emitBatch` in Thrift compact over UDP (Jaeger clients' default, 6831).
    pub thrift_compact: String,
    /// Agent protocol, `emitBatch` in Thrift binary over UDP (6832).
    pub thrift_binary: String,
    /// Collector protocol, `POST /api/traces` with a Thrift binary `Batch` (14268).
    pub thrift_http: String,
    /// Collector protocol, gRPC `jaeger.api_v2.CollectorService/PostSpans` (14250).
    pub grpc: String,
    /// SO_RCVBUF asked for on each UDP socket (the kernel may cap it at `net.core.rmem_max`);
    /// each UDP port is one socket per core, up to 4, so kernel memory is up to 4 times this.
    pub udp_receive_buffer: ByteSize,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        JaegerConfig {
            thrift_compact: "0.0.0.0:6831".into(),
            thrift_binary: "0.0.0.0:6832".into(),
            thrift_http: "0.0.0.0:14268".into(),
            grpc: "0.0.0.0:14250".into(),
            udp_receive_buffer: ByteSize::from_bytes(8 * 1024 * 1024),
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: None,
            grpc: "0.0.0.0:4317".into(),
            http: "0.0.0.0:4318".into(),
            max_request_size: ByteSize::from_bytes(4 * 1024 * 1024),
            forward_traces_to: String::new(),
            jaeger: JaegerConfig::default(),
            zipkin: "0.0.0.0:9411".into(),
            limits: ReceiverLimits::default(),
        }
    }
}

/// Kubernetes events to Loki (cluster mode, one replica at a time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub enabled: Option<bool>,
    /// The `coordination.k8s.io/v1` Lease whose holder ships the events; its annotations keep
    /// the last shipped position, so a new leader continues where the old one stopped.
    pub lease_name: String,
    /// Empty: the pod's namespace (`scrape.monitors.pod_namespace`).
    pub lease_namespace: String,
    /// A leader that has not renewed for this long is replaced.
    pub lease_duration: Duration,
    /// On the very first start (no position in the Lease), events older than this are not shipped.
    pub lookback: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: None,
            lease_name: "lgtm-agent-events".into(),
            lease_namespace: String::new(),
            lease_duration: Duration::from_secs(15),
            lookback: Duration::from_secs(300),
        }
    }
}

/// Tail sampling (cluster mode); the PoC's policies are the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    pub enabled: Option<bool>,
    pub decision_wait: Duration,
    pub max_traces: usize,
    /// Bytes of spans buffered while waiting for decisions; when reached, the oldest traces are
    /// decided early.
    pub max_buffer: ByteSize,
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            enabled: None,
            decision_wait: Duration::from_secs(10),
            max_traces: 50_000,
            max_buffer: ByteSize::from_bytes(256 * 1024 * 1024),
            policies: vec![
                PolicyConfig {
                    name: Some("errors".into()),
                    kind: "status_code".into(),
                    status_codes: vec!["ERROR".into()],
                    ..PolicyConfig::default()
                },
                PolicyConfig {
                    name: Some("slow-sampled".into()),
                    kind: "and".into(),
                    and: vec![
                        PolicyConfig { kind: "latency".into(), threshold_ms: Some(50), ..PolicyConfig::default() },
                        PolicyConfig {
                            kind: "probabilistic".into(),
                            percentage: Some(30.0),
                            ..PolicyConfig::default()
                        },
                    ],
                    ..PolicyConfig::default()
                },
            ],
        }
    }
}

/// One sampling policy. `type` selects which of the other fields apply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub and: Vec<PolicyConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub or: Vec<PolicyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<PolicyConfig>>,
}

/// kube-state-metrics-like series (cluster mode, one replica).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterStateConfig {
    pub enabled: Option<bool>,
}
