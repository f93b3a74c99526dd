//! The `discovery` bench workload: `--services` Services with `--endpoints` endpoints each (one
//! EndpointSlice per Service, one Pod per endpoint) under `--monitors` ServiceMonitors, served by
//! the in-process fake API server to the release `lgtm-agent` in cluster mode (only monitor
//! discovery on, no exporter). Every endpoint is a real HTTP listener on its own loopback address
//! that records when scrapes arrive ([`targets`]).
//!
//! ```text
//! cargo run --release -p lgtm-integration --bin bench -- discovery [--services 1000] [--endpoints 3] [--monitors 200] [--changes 20]
//! ```
//!
//! It prints:
//! - the agent's RSS (`VmRSS`) against an empty cluster, with the objects but no monitors, and
//!   once every target has been scraped;
//! - for each kind of change (a monitor's `relabelings` edited, a Service with its EndpointSlice
//!   and Pods added, a monitor deleted, a monitor created), the time from the change at the API
//!   server to the scrapes that reflect it arriving at the targets: p50, p99 and max over
//!   `--changes` changes, for all of the change's targets and for the first of them.
//!
//! Changes are made to the first `--probe-monitors` monitors, whose endpoints are scraped every
//! `--probe-interval` (the others every `--interval`): a new scrape loop starts at a phase within
//! its interval, as in Prometheus, so the time to a scrape includes up to one probe interval on
//! top of the time to the running loop. A relabeling edit sets `__param_gen` to a new number, so
//! the scrape URL itself shows which version of the monitor a loop runs. A deletion is measured
//! as an upper bound: the last scrape of the monitor's targets plus one probe interval (no loop
//! ticks again after it stopped).
//!
//! Measured (shared 2-core machine, medians of 3 runs of the command above with its defaults,
//! 2026-12-06): every change p50 258 ms, p99 289 ms (80 changes); agent CPU over the changes
//! 8.7 s. Anonymous memory (`RssAnon`): empty cluster 1.7 MiB, objects without monitors
//! 5.3 MiB, 3,000 targets 20.7 MiB: +3.6 MiB for the objects, +15.4 MiB for the targets,
//! +19.0 MiB over the empty cluster (runs within 0.1 MiB of each other). `VmRSS`: 3,000
//! targets 30.7 MiB, +22.7 MiB over the empty cluster; it also counts the binary's code pages,
//! which move by a few MiB between runs as the agent pages its start-up code out and code
//! faults back in (runs: +20.4, +23.1, +22.7 MiB).

mod targets;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::agent::AgentProcess;
use crate::fake_apiserver::FakeApiServer;
use crate::procstat::Process;
use targets::{address, TargetServers};

/// Options of the `discovery` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoveryBench {
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints (and Pods) per Service.
    #[arg(long, default_value_t = 3)]
    pub endpoints: usize,
    #[arg(long, default_value_t = 200)]
    pub monitors: usize,
    /// Changes of each kind.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// The monitors the changes are made to (the first ones).
    #[arg(long, default_value_t = 4)]
    pub probe_monitors: usize,
    /// The scrape interval of those monitors' endpoints: the resolution of the change figures.
    #[arg(long, default_value = "200ms")]
    pub probe_interval: lgtm_config::Duration,
    /// The scrape interval of every other target (`scrape.interval`).
    #[arg(long, default_value = "30s")]
    pub interval: lgtm_config::Duration,
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
    /// `RUST_LOG` of the agent (`warn,lgtm_statefulset::discovery=debug` shows each rebuild's
    /// phases).
    #[arg(long, default_value = "warn")]
    pub agent_rust_log: String,
    /// Copy the measured agent's log here at the end.
    #[arg(long)]
    pub agent_log: Option<std::path::PathBuf>,
}

const NAMESPACES: usize = 10;
/// How long a change may take before it counts as missed.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The cluster the bench builds, and which targets each monitor selects.
struct Layout {
    b: DiscoveryBench,
    port: u16,
    /// The monitor of each Service (the added ones get theirs when they are added).
    monitor_of: Vec<usize>,
    /// Target indices per monitor.
    members: Vec<Vec<usize>>,
    /// The gen each monitor's relabeling sets (`NO_GEN`: none).
    gens: Vec<u64>,
    next_gen: u64,
}

impl Layout {
    fn namespace(&self, monitor: usize) -> String {
        format!("ns-{}", monitor % NAMESPACES)
    }

    fn monitor(&self, m: usize) -> Value {
        let mut endpoint = json!({"port": "metrics"});
        if m < self.b.probe_monitors {
            endpoint["interval"] = json!(self.b.probe_interval.to_string());
        }
        if self.gens[m] != targets::NO_GEN {
            endpoint["relabelings"] = json!([{"targetLabel": "__param_gen", "replacement": self.gens[m].to_string()}]);
        }
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": format!("m-{m}"), "namespace": self.namespace(m)},
            "spec": {"selector": {"matchLabels": {"monitor": format!("m-{m}")}}, "endpoints": [endpoint]}})
    }

    /// The Service, its EndpointSlice and its Pods (Pods first: apply them in this order).
    fn service_objects(&self, s: usize) -> Vec<Value> {
        let m = self.monitor_of[s];
        let ns = self.namespace(m);
        let name = format!("svc-{s}");
        let port = self.port;
        let mut objects = Vec::new();
        let mut endpoints = Vec::new();
        for k in 0..self.b.endpoints {
            let t = s * self.b.endpoints + k;
            let pod_name = format!("{name}-{k}");
            let ip = address(t).to_string();
            objects.push(pod(&pod_name, &ns, &name, t, port));
            endpoints
                .push(json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": format!("node-{}", t % 20),
                "targetRef": {"kind": "Pod", "name": pod_name, "namespace": ns}}));
        }
        objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x7k2p"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "metrics", "port": port, "protocol": "TCP"}]}));
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "monitor": format!("m-{m}")}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "metrics", "port": port, "targetPort": "metrics"}]}}));
        objects
    }

    fn targets_of_service(&self, s: usize) -> std::ops::Range<usize> {
        s * self.b.endpoints..(s + 1) * self.b.endpoints
    }

    fn new_gen(&mut self, m: usize) -> u64 {
        self.next_gen += 1;
        self.gens[m] = self.next_gen;
        self.next_gen
    }
}

/// A Pod as a Deployment creates it, with what a real one carries (env, volumes, resources,
/// statuses), so that the stores hold objects of a realistic size.
fn pod(name: &str, namespace: &str, app: &str, t: usize, port: u16) -> Value {
    let ip = address(t).to_string();
    let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": "2024-05-01T10:00:05Z"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("3f6c2a1e-0000-4000-8000-{t:012}"),
            "labels": {"app": app, "app.kubernetes.io/name": app, "pod-template-hash": "5d4f8"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d4f8"),
                "uid": format!("rs-{app}"), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": format!("node-{}", t % 20), "serviceAccountName": "default", "priority": 0,
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "containers": [{"name": "app", "image": "registry.example.com/team/app:1.4.2", "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": port.to_string()},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 10},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": format!("172.18.0.{}", t % 20 + 2), "qosClass": "Burstable", "startTime": "2024-05-01T10:00:00Z",
            "conditions": conditions,
            "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0,
                "image": "registry.example.com/team/app:1.4.2", "imageID": "registry.example.com/team/app@sha256:0123456789abcdef",
                "containerID": format!("containerd://{t:064}"), "state": {"running": {"startedAt": "2024-05-01T10:00:02Z"}}}]}})
}

/// The agent child (killed on drop) and its directory.
struct Agent {
    process: AgentProcess,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn start(
        bin: &std::path::Path,
        server: &FakeApiServer,
        interval: Duration,
        rust_log: &str,
    ) -> anyhow::Result<Agent> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        let admin = crate::free_port();
        let timeout = interval.min(Duration::from_secs(10));
        let config = format!(
            "mode: cluster\ncluster: bench\ndata_dir: {data}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
             exporters:\n  mimir: {{ enabled: false }}\n  loki: {{ enabled: false }}\n  tempo: {{ enabled: false }}\n\
             scrape:\n  interval: {interval}ms\n  timeout: {timeout}ms\n  monitors: {{ enabled: true, annotations: false }}\n\
             otlp: {{ enabled: false }}\ntail_sampling: {{ enabled: false }}\nevents: {{ enabled: false, lease_namespace: observability }}\n\
             cluster_state: {{ enabled: false }}\n",
            data = dir.path().join("data").display(),
            interval = interval.as_millis(),
            timeout = timeout.as_millis(),
        );
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", rust_log)];
        let process = AgentProcess::launch(bin, dir.path(), &config, admin, &env).await?;
        Ok(Agent { process, admin, _dir: dir })
    }

    fn process(&self) -> Process {
        Process::Pid(self.process.pid())
    }

    /// `targets_here` of the discovery status on `/targets`.
    async fn discovered(&self) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/targets", self.admin);
        let body: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        body["discovery"]["targets_here"].as_u64()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Resident memory: all of it (`VmRSS`) and its anonymous part (`RssAnon`: heap, stacks).
#[derive(Debug, Clone, Copy)]
struct Resident {
    rss: u64,
    anon: u64,
}

impl Resident {
    fn of(p: Process) -> Resident {
        Resident { rss: p.rss_bytes(), anon: p.status_bytes("RssAnon") }
    }
}

/// Resident memory once RSS has not grown for a second (at most 10 s).
async fn settled_rss(p: Process) -> Resident {
    let mut last = Resident::of(p);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Resident::of(p);
        if now.rss <= last.rss {
            return now;
        }
        last = now;
    }
    last
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Relabeled,
    ServiceAdded,
    MonitorDeleted,
    MonitorCreated,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Relabeled, Kind::ServiceAdded, Kind::MonitorDeleted, Kind::MonitorCreated];

    fn name(self) -> &'static str {
        match self {
            Kind::Relabeled => "relabeling edited",
            Kind::ServiceAdded => "service added",
            Kind::MonitorDeleted => "monitor deleted (*)",
            Kind::MonitorCreated => "monitor created",
        }
    }
}

/// One measured change: how long until the first and until the last of its targets reflected
/// it; `None` for targets that never did within [`CHANGE_TIMEOUT`].
struct Outcome {
    kind: Kind,
    first: Option<Duration>,
    all: Option<Duration>,
    missed: Vec<usize>,
}

/// Waits until every target in `targets` reports an arrival through `seen` (after the change at
/// `at`), or the timeout.
async fn wait_arrivals(kind: Kind, at: Instant, targets: &[usize], seen: impl Fn(usize) -> Option<Instant>) -> Outcome {
    loop {
        let times: Vec<Option<Instant>> = targets.iter().map(|t| seen(*t).filter(|i| *i >= at)).collect();
        let done = times.iter().all(Option::is_some);
        if done || at.elapsed() > CHANGE_TIMEOUT {
            let got: Vec<Duration> = times.iter().flatten().map(|i| *i - at).collect();
            let missed = targets.iter().zip(&times).filter(|(_, t)| t.is_none()).map(|(i, _)| *i).collect();
            return Outcome {
                kind,
                first: got.iter().min().copied(),
                all: done.then(|| got.iter().max().copied().unwrap_or_default()),
                missed,
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until no target in `targets` has been scraped for `quiet` (or the timeout); the loops
/// stopped at the latest one interval after their last scrape.
async fn wait_stopped(
    at: Instant,
    targets: &[usize],
    servers: &TargetServers,
    interval: Duration,
    quiet: Duration,
) -> Outcome {
    loop {
        let last = targets.iter().filter_map(|t| servers.last(*t)).max().unwrap_or(at);
        let still = targets.iter().filter(|t| servers.last(**t).is_some_and(|l| l.elapsed() < quiet)).count();
        if still == 0 {
            let bound = (last + interval).saturating_duration_since(at);
            return Outcome { kind: Kind::MonitorDeleted, first: Some(bound), all: Some(bound), missed: Vec::new() };
        }
        if at.elapsed() > CHANGE_TIMEOUT {
            let missed = targets.iter().copied().filter(|t| servers.last(*t).is_some_and(|l| l > at)).collect();
            return Outcome { kind: Kind::MonitorDeleted, first: None, all: None, missed };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn print_row(name: &str, outcomes: &[&Outcome]) {
    let mut all: Vec<Duration> = outcomes.iter().filter_map(|o| o.all).collect();
    let mut first: Vec<Duration> = outcomes.iter().filter_map(|o| o.first).collect();
    all.sort();
    first.sort();
    let missed = outcomes.iter().filter(|o| o.all.is_none()).count();
    println!(
        "{name:<22} {:>4} {:>6} {:>7} {:>7} {:>7} {:>9} {:>9}",
        outcomes.len(),
        missed,
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default()),
        ms(percentile(&first, 50.0)),
        ms(percentile(&first, 99.0)),
    );
}

/// Runs the workload and prints its figures.
pub async fn run(b: DiscoveryBench) -> anyhow::Result<()> {
    if b.monitors == 0 || b.probe_monitors == 0 || b.probe_monitors > b.monitors || b.endpoints == 0 {
        bail!("need --monitors >= --probe-monitors >= 1 and --endpoints >= 1");
    }
    let bin = match &b.agent_bin {
        Some(p) => p.clone(),
        None => crate::agent::release_agent_binary()?,
    };
    let probe_interval = b.probe_interval.get();
    let interval = b.interval.get();

    // The agent against an empty cluster.
    let empty = FakeApiServer::start().await.context("starting the fake API server")?;
    let agent = Agent::start(&bin, &empty, interval, &b.agent_rust_log).await?;
    let rss_empty = settled_rss(agent.process()).await;
    drop(agent);
    empty.stop().await;

    let total_services = b.services + b.changes;
    let servers = TargetServers::start(total_services * b.endpoints).await?;
    let mut layout = Layout {
        port: servers.port,
        monitor_of: (0..total_services).map(|s| s % b.monitors).collect(),
        members: vec![Vec::new(); b.monitors],
        gens: vec![targets::NO_GEN; b.monitors],
        next_gen: targets::NO_GEN,
        b: b.clone(),
    };
    let server = FakeApiServer::start().await.context("starting the fake API server")?;
    let load = Instant::now();
    for s in 0..b.services {
        for o in layout.service_objects(s) {
            server.apply(o)?;
        }
        let m = layout.monitor_of[s];
        let targets = layout.targets_of_service(s);
        layout.members[m].extend(targets);
    }
    eprintln!("loaded {} services, {} pods in {:.1?}", b.services, b.services * b.endpoints, load.elapsed());

    let agent = Agent::start(&bin, &server, interval, &b.agent_rust_log).await?;
    let process = agent.process();
    let rss_objects = settled_rss(process).await;

    let created = Instant::now();
    for m in 0..b.monitors {
        server.apply(layout.monitor(m))?;
    }
    let base: Vec<usize> = (0..b.services * b.endpoints).collect();
    let initial = wait_arrivals_long(created, &base, &servers, interval + Duration::from_secs(60)).await;
    let Some(initial) = initial else {
        let missing = base.iter().filter(|t| servers.first(**t).is_none()).count();
        bail!(
            "{missing} of {} targets never scraped; discovered: {:?}; agent log: {}",
            base.len(),
            agent.discovered().await,
            agent.process.log()
        );
    };
    let rss_targets = settled_rss(process).await;

    let cpu_before = process.cpu_seconds();
    let mut outcomes = Vec::new();
    let quiet = (probe_interval * 3).max(Duration::from_secs(1));
    for r in 0..b.changes {
        let p = r % b.probe_monitors;
        let ns = layout.namespace(p);
        for kind in Kind::ALL {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let at = Instant::now();
            let outcome = match kind {
                Kind::Relabeled => {
                    let gen = layout.new_gen(p);
                    server.apply(layout.monitor(p))?;
                    wait_arrivals(kind, at, &layout.members[p], |t| servers.first_of_gen(t, gen)).await
                }
                Kind::ServiceAdded => {
                    let s = b.services + r;
                    layout.monitor_of[s] = p;
                    for o in layout.service_objects(s) {
                        server.apply(o)?;
                    }
                    let new: Vec<usize> = layout.targets_of_service(s).collect();
                    layout.members[p].extend(new.iter().copied());
                    wait_arrivals(kind, at, &new, |t| servers.first(t)).await
                }
                Kind::MonitorDeleted => {
                    server.delete("monitoring.coreos.com/v1", "ServiceMonitor", &ns, &format!("m-{p}"))?;
                    wait_stopped(at, &layout.members[p], &servers, probe_interval, quiet).await
                }
                Kind::MonitorCreated => {
                    let gen = layout.new_gen(p);
                    server.apply(layout.monitor(p))?;
                    wait_arrivals(kind, at, &layout.members[p], |t| servers.first_of_gen(t, gen)).await
                }
            };
            if !outcome.missed.is_empty() {
                eprintln!(
                    "change {r} ({}) of monitor m-{p}: targets {:?} did not reflect it within {CHANGE_TIMEOUT:?}",
                    kind.name(),
                    outcome.missed
                );
            }
            outcomes.push(outcome);
        }
    }
    let cpu = process.cpu_seconds() - cpu_before;
    let rss_end = process.rss_bytes();
    let peak = process.peak_rss_bytes();

    let targets_total = b.services * b.endpoints;
    println!(
        "discovery: {} services x {} endpoints under {} ServiceMonitors = {targets_total} targets (scrape interval {}); \
         changes made to {} monitors scraped every {}",
        b.services, b.endpoints, b.monitors, b.interval, b.probe_monitors, b.probe_interval
    );
    println!("initial: every target scraped {:.1} s after the monitors were created", initial.as_secs_f64());
    println!(
        "RSS: empty cluster {:.1} MiB; objects, no monitors {:.1} MiB; {targets_total} targets {:.1} MiB \
         (+{:.1} MiB for the targets, +{:.1} MiB over the empty cluster); after the changes {:.1} MiB; peak {:.1} MiB",
        mib(rss_empty.rss),
        mib(rss_objects.rss),
        mib(rss_targets.rss),
        mib(rss_targets.rss).max(mib(rss_objects.rss)) - mib(rss_objects.rss),
        mib(rss_targets.rss) - mib(rss_empty.rss),
        mib(rss_end),
        mib(peak),
    );
    // The binary's pages count in RSS as the agent pages the start-up code out (seconds after
    // start) and faults code back in: a few MiB either way between runs. The anonymous part
    // is what discovery itself holds.
    println!(
        "RssAnon: empty cluster {:.1} MiB; objects, no monitors {:.1} MiB; {targets_total} targets {:.1} MiB \
         (+{:.1} MiB for the objects, +{:.1} MiB for the targets, +{:.1} MiB over the empty cluster)",
        mib(rss_empty.anon),
        mib(rss_objects.anon),
        mib(rss_targets.anon),
        mib(rss_objects.anon) - mib(rss_empty.anon),
        mib(rss_targets.anon) - mib(rss_objects.anon),
        mib(rss_targets.anon) - mib(rss_empty.anon),
    );
    println!("agent CPU during the changes: {cpu:.2} s");
    println!(
        "change -> scrapes reflecting it at the targets (ms); all = every target of the change, first = the first one"
    );
    println!(
        "{:<22} {:>4} {:>6} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "kind", "n", "missed", "all p50", "all p99", "all max", "first p50", "first p99"
    );
    for kind in Kind::ALL {
        let of_kind: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
        print_row(kind.name(), &of_kind);
    }
    print_row("every change", &outcomes.iter().collect::<Vec<_>>());
    println!(
        "(*) upper bound: last scrape of the deleted monitor's targets + one probe interval ({})",
        b.probe_interval
    );
    if let Some(path) = &b.agent_log {
        std::fs::write(path, agent.process.log()).with_context(|| format!("writing {}", path.display()))?;
    }
    let missed = outcomes.iter().filter(|o| o.all.is_none()).count();
    if missed > 0 {
        bail!("{missed} changes were not reflected within {CHANGE_TIMEOUT:?}");
    }
    drop(agent);
    server.stop().await;
    Ok(())
}

/// Waits until every target has been scraped once; `None` after `timeout`.
async fn wait_arrivals_long(
    at: Instant,
    targets: &[usize],
    servers: &TargetServers,
    timeout: Duration,
) -> Option<Duration> {
    let mut pending: Vec<usize> = targets.to_vec();
    loop {
        pending.retain(|t| servers.first(*t).is_none());
        if pending.is_empty() {
            return Some(at.elapsed());
        }
        if at.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
