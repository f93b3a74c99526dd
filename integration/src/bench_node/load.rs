//! The node's load: CRI log files written the kubelet's way ([`LogWriter`]), a kubelet stand-in
//! serving `/metrics/cadvisor` and `/metrics/resource` ([`KubeletStandIn`]), and an OTLP/gRPC
//! span client at a fixed rate ([`SpanClient`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// Record sizes (bytes of message) cycled through: mostly short lines, some long ones.
const SIZES: [usize; 10] = [60, 90, 120, 150, 200, 300, 500, 800, 1500, 4000];
/// One record in this many is written as a partial `P` line and its final `F` line.
const PARTIAL_EVERY: u64 = 20;
const TICK: Duration = Duration::from_millis(50);

/// Writes CRI records into `<root>/<ns>_<pod>_<uid>/app/0.log` for each pod, `rate` bytes per
/// second in all, each record starting `id=<n> ` (`n` unique), and rotates each file once per
/// `rotate_every` (staggered across pods): renamed to `0.log.<unix time>`, a new `0.log` opened.
pub struct LogWriter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl LogWriter {
    pub fn start(root: &Path, pods: usize, rate: u64, rotate_every: Duration) -> anyhow::Result<LogWriter> {
        let mut dirs = Vec::new();
        for p in 0..pods {
            let d = root.join(format!("bench_pod-{p:03}_00000000-0000-0000-0000-{p:012}")).join("app");
            std::fs::create_dir_all(&d)?;
            dirs.push(d);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || write_logs(&dirs, rate, rotate_every, &flag));
        Ok(LogWriter { stop, thread })
    }

    /// Stops writing; the number of records written (partial ones count once).
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || self.thread.join().map_err(|_| anyhow::anyhow!("log writer panicked"))?)
            .await?
    }
}

fn open(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log"))
}

fn write_logs(dirs: &[PathBuf], rate: u64, rotate_every: Duration, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut files = dirs.iter().map(|d| open(d)).collect::<Result<Vec<_>, _>>()?;
    let n = dirs.len().max(1);
    let started = Instant::now();
    let mut next_rotation: Vec<Duration> = (0..n).map(|i| rotate_every * (i as u32 + 1) / n as u32).collect();
    let filler = "level=info component=checkout msg=\"request served\" path=/api/v1/cart status=200 ".repeat(64);
    let (mut id, mut written_bytes, mut ticks) = (0u64, 0u64, 0u64);
    let mut bufs = vec![String::new(); n];
    while !stop.load(Ordering::Relaxed) {
        ticks += 1;
        let due = rate * ticks * TICK.as_millis() as u64 / 1000;
        let ts = cri_time(SystemTime::now());
        let mut f = (id as usize) % n;
        while written_bytes < due {
            let size = SIZES[(id as usize * 7) % SIZES.len()];
            let head = format!("id={id} ");
            let body = &filler[..size.saturating_sub(head.len())];
            let buf = &mut bufs[f];
            if id % PARTIAL_EVERY == PARTIAL_EVERY - 1 {
                let cut = body.len() / 2;
                let _ = writeln!(buf, "{ts} stdout P {head}{}", &body[..cut]);
                let _ = writeln!(buf, "{ts} stdout F {}", &body[cut..]);
            } else {
                let _ = writeln!(buf, "{ts} stdout F {head}{body}");
            }
            written_bytes += size as u64;
            id += 1;
            f = (f + 1) % n;
        }
        for (i, buf) in bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                files[i].write_all(buf.as_bytes())?;
                buf.clear();
            }
        }
        let now = started.elapsed();
        for i in 0..n {
            if now >= next_rotation[i] {
                let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
                std::fs::rename(dirs[i].join("0.log"), dirs[i].join(format!("0.log.{stamp}")))?;
                files[i] = open(&dirs[i])?;
                next_rotation[i] += rotate_every;
            }
        }
        let next = TICK * ticks as u32;
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(id)
}

/// RFC 3339 with nanoseconds in UTC, as the container runtime writes it.
pub fn cri_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The kubelet's `/metrics/cadvisor` and `/metrics/resource` for `pods` pods of one container
/// each: per pod the app container, the pause container (`container="POD"`) and the pod cgroup
/// (`container=""`), with cAdvisor's metric names and labels; counts what it served.
pub struct KubeletStandIn {
    pub addr: SocketAddr,
    state: Arc<Bodies>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Bodies {
    cadvisor: String,
    cadvisor_series: u64,
    resource: String,
    resource_series: u64,
    served_samples: AtomicU64,
}

const CADVISOR_METRICS: [(&str, &str); 24] = [
    ("container_cpu_usage_seconds_total", "counter"),
    ("container_cpu_user_seconds_total", "counter"),
    ("container_cpu_system_seconds_total", "counter"),
    ("container_cpu_cfs_periods_total", "counter"),
    ("container_cpu_cfs_throttled_periods_total", "counter"),
    ("container_cpu_cfs_throttled_seconds_total", "counter"),
    ("container_memory_working_set_bytes", "gauge"),
    ("container_memory_rss", "gauge"),
    ("container_memory_cache", "gauge"),
    ("container_memory_usage_bytes", "gauge"),
    ("container_memory_max_usage_bytes", "gauge"),
    ("container_memory_swap", "gauge"),
    ("container_memory_mapped_file", "gauge"),
    ("container_memory_failcnt", "counter"),
    ("container_memory_failures_total", "counter"),
    ("container_oom_events_total", "counter"),
    ("container_spec_cpu_shares", "gauge"),
    ("container_spec_cpu_period", "gauge"),
    ("container_spec_memory_limit_bytes", "gauge"),
    ("container_start_time_seconds", "gauge"),
    ("container_last_seen", "gauge"),
    ("container_threads", "gauge"),
    ("container_file_descriptors", "gauge"),
    ("container_processes", "gauge"),
];
/// Per-device and per-interface metrics (`device="/dev/vda"`, `interface="eth0"`).
const CADVISOR_DEVICE_METRICS: [&str; 4] = [
    "container_fs_reads_bytes_total",
    "container_fs_writes_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_total",
];
const CADVISOR_NET_METRICS: [&str; 6] = [
    "container_network_receive_bytes_total",
    "container_network_transmit_bytes_total",
    "container_network_receive_packets_total",
    "container_network_transmit_packets_total",
    "container_network_receive_errors_total",
    "container_network_transmit_errors_total",
];

fn cadvisor(pods: usize) -> (String, u64) {
    let mut s = String::new();
    let mut n = 0u64;
    let labels = |p: usize, c: &str| {
        let id =
            format!("/kubepods/burstable/pod00000000-0000-0000-0000-{p:012}{}", if c.is_empty() { "" } else { "/abc" });
        let image = match c {
            "" => String::new(),
            "POD" => "registry.k8s.io/pause:3.10".into(),
            _ => format!("registry.example.com/team/app-{}:1.{}", p % 17, p % 5),
        };
        format!(
            "container=\"{c}\",id=\"{id}\",image=\"{image}\",name=\"{}\",namespace=\"bench\",pod=\"pod-{p:03}\"",
            if c.is_empty() { String::new() } else { format!("k8s_{c}_pod-{p:03}_bench_{p}") }
        )
    };
    for (m, kind) in CADVISOR_METRICS {
        let _ = writeln!(s, "# HELP {m} cAdvisor metric.\n# TYPE {m} {kind}");
        for p in 0..pods {
            for c in ["app", "POD", ""] {
                let cpu = if m.starts_with("container_cpu_usage") { ",cpu=\"total\"" } else { "" };
                let _ = writeln!(s, "{m}{{{}{cpu}}} {}", labels(p, c), 1000 + p * 3);
                n += 1;
            }
        }
    }
    for m in CADVISOR_DEVICE_METRICS {
        let _ = writeln!(s, "# HELP {m} cAdvisor metric.\n# TYPE {m} counter");
        for p in 0..pods {
            for c in ["app", ""] {
                let _ = writeln!(s, "{m}{{{},device=\"/dev/vda\"}} {}", labels(p, c), 4096 * p);
                n += 1;
            }
        }
    }
    for m in CADVISOR_NET_METRICS {
        let _ = writeln!(s, "# HELP {m} cAdvisor metric.\n# TYPE {m} counter");
        for p in 0..pods {
            let _ = writeln!(s, "{m}{{{},interface=\"eth0\"}} {}", labels(p, "POD"), 512 * p);
            n += 1;
        }
    }
    (s, n)
}

fn resource(pods: usize) -> (String, u64) {
    let mut s = String::new();
    let mut n = 0u64;
    for (m, kind) in [
        ("container_cpu_usage_seconds_total", "counter"),
        ("container_memory_working_set_bytes", "gauge"),
        ("container_start_time_seconds", "gauge"),
    ] {
        let _ = writeln!(s, "# HELP {m} kubelet resource metric.\n# TYPE {m} {kind}");
        for p in 0..pods {
            let _ = writeln!(s, "{m}{{container=\"app\",namespace=\"bench\",pod=\"pod-{p:03}\"}} {}", 100 + p);
            n += 1;
        }
    }
    for (m, kind) in [("pod_cpu_usage_seconds_total", "counter"), ("pod_memory_working_set_bytes", "gauge")] {
        let _ = writeln!(s, "# HELP {m} kubelet resource metric.\n# TYPE {m} {kind}");
        for p in 0..pods {
            let _ = writeln!(s, "{m}{{namespace=\"bench\",pod=\"pod-{p:03}\"}} {}", 200 + p);
            n += 1;
        }
    }
    for (m, kind) in [("node_cpu_usage_seconds_total", "counter"), ("node_memory_working_set_bytes", "gauge")] {
        let _ = writeln!(s, "# HELP {m} kubelet resource metric.\n# TYPE {m} {kind}\n{m} 12345");
        n += 1;
    }
    (s, n)
}

impl KubeletStandIn {
    pub async fn start(pods: usize) -> anyhow::Result<KubeletStandIn> {
        let (cadvisor, cadvisor_series) = cadvisor(pods);
        let (resource, resource_series) = resource(pods);
        let state = Arc::new(Bodies {
            cadvisor,
            cadvisor_series,
            resource,
            resource_series,
            served_samples: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route(
                "/metrics/cadvisor",
                get(|State(b): State<Arc<Bodies>>| async move {
                    b.served_samples.fetch_add(b.cadvisor_series, Ordering::Relaxed);
                    ([("content-type", "text/plain; version=0.0.4")], b.cadvisor.clone())
                }),
            )
            .route(
                "/metrics/resource",
                get(|State(b): State<Arc<Bodies>>| async move {
                    b.served_samples.fetch_add(b.resource_series, Ordering::Relaxed);
                    ([("content-type", "text/plain; version=0.0.4")], b.resource.clone())
                }),
            )
            .with_state(state.clone());
        let (tx, _) = crate::serve_until_stopped(listener, app);
        Ok(KubeletStandIn { addr, state, _stop: tx })
    }

    /// Samples served so far (series per body times scrapes).
    pub fn served_samples(&self) -> u64 {
        self.state.served_samples.load(Ordering::Relaxed)
    }

    /// Series per scrape of both endpoints.
    pub fn series(&self) -> u64 {
        self.state.cadvisor_series + self.state.resource_series
    }
}

/// Sends OTLP/gRPC export requests of `rate / 10` spans every 100 ms (traces of 10 spans, unique
/// span ids), counting the spans the agent accepted.
pub struct SpanClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl SpanClient {
    pub async fn start(port: u16, rate: u64) -> anyhow::Result<SpanClient> {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let per_tick = (rate / 10).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let (mut next_id, mut accepted) = (1u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let req = request(next_id, per_tick);
                next_id += per_tick;
                if client.export(req).await.is_ok() {
                    accepted += per_tick;
                }
            }
            accepted
        });
        Ok(SpanClient { stop, task })
    }

    /// Stops sending; the spans accepted.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}

fn request(first: u64, n: u64) -> ExportTraceServiceRequest {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let spans = (first..first + n)
        .map(|id| {
            let trace = id / 10;
            Span {
                trace_id: [trace.to_be_bytes(), 1u64.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if id % 10 == 0 { Vec::new() } else { (trace * 10).max(1).to_be_bytes().to_vec() },
                name: format!("GET /api/v1/items/{}", id % 50),
                kind: 2,
                start_time_unix_nano: now - 5_000_000,
                end_time_unix_nano: now,
                attributes: vec![kv("http.request.method", "GET"), kv("http.response.status_code", "200")],
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("k8s.namespace.name", "bench")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_times_are_rfc3339_utc_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_796_571_000, 123);
        assert_eq!(cri_time(t), "2026-12-06T15:30:00.000000123Z");
        assert_eq!(cri_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn kubelet_bodies_count_their_series() {
        let (body, n) = cadvisor(2);
        let samples = body.lines().filter(|l| !l.starts_with('#')).count() as u64;
        assert_eq!(samples, n);
        assert_eq!(n, 2 * (24 * 3 + 4 * 2 + 6));
        let (body, n) = resource(2);
        assert_eq!(body.lines().filter(|l| !l.starts_with('#')).count() as u64, n);
    }

    #[test]
    fn logs_are_written_at_the_rate_with_partials_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::start(dir.path(), 4, 200_000, Duration::from_millis(300)).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let records = rt.block_on(w.stop()).unwrap();
        let mut bytes = 0;
        let (mut partial, mut rotated, mut full) = (0, 0, 0);
        for pod in std::fs::read_dir(dir.path()).unwrap() {
            for f in std::fs::read_dir(pod.unwrap().path().join("app")).unwrap() {
                let f = f.unwrap();
                rotated += usize::from(f.file_name() != "0.log");
                let text = std::fs::read_to_string(f.path()).unwrap();
                bytes += text.len();
                partial += text.lines().filter(|l| l.contains(" stdout P ")).count();
                full += text.lines().filter(|l| l.contains(" stdout F id=")).count();
            }
        }
        assert!(records > 100 && (full + partial) as u64 == records, "{records} {full} {partial}");
        assert!(partial > 0 && rotated >= 4, "partial {partial} rotated {rotated}");
        assert!((150_000..400_000).contains(&bytes), "{bytes} bytes in ~1 s at 200 kB/s");
    }
}
