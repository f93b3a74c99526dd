//! `lgtm-agent run`: start the pipeline, the admin server, the receivers and the mode's sources;
//! on SIGTERM or SIGINT stop the sources, let the exporters flush within the grace period, persist
//! queues and checkpoints, and return.
//!
//! Start-up fails (exit 1) when a listener cannot be bound or an exporter cannot be set up (a TLS
//! file that cannot be read, ...), naming its field: a signal is never silently off. Each source and receiver reports into `lgtm_pipeline::health`; one that ends
//! while the agent is not stopping fails `/healthz`.
//!
//! SIGHUP (and `POST /-/reload` with `admin.enable_reload`) reloads the config file
//! ([`crate::reload`]): an invalid file is reported and the running config kept; a changed valid
//! one restarts only the components whose config changed ([`crate::components`]): the log tailer
//! stops and writes its checkpoints, changed exporters are replaced on their queues, scrape
//! targets are synced again, then the tailer starts again from its checkpoints. A change that
//! cannot be applied in place (mode, data_dir, admin, receivers, queues, ...) is applied by the
//! same graceful stop as SIGTERM (queues and checkpoints persisted) followed by a start of the
//! same binary in the same process (`exec`), so the pod is not restarted.

use std::sync::Arc;

use anyhow::Context;
use lgtm_config::Config;
use lgtm_pipeline::{health, MetricsSink, Pipeline};
use lgtm_scrape::TargetManager;
use lgtm_statefulset::discovery::StatusBoard;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::components::{self, Component, Plan};
use crate::reload::{ReloadRequest, Reloader};

/// How `run` ended.
pub enum Ended {
    /// SIGTERM or SIGINT: exit 0.
    Stopped,
    /// A changed config was validated: start again on it.
    Reload,
}

pub async fn run(mut cfg: Config, reloader: Reloader) -> anyhow::Result<Ended> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), mode = cfg.mode().as_str(), cluster = %cfg.cluster, "starting");
    lgtm_pipeline::metrics::pipeline();
    crate::reload::metrics().last_successful.set(1);
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    crate::datadir::raise_nofile_limit();
    let _data_dir_lock = crate::datadir::lock(&cfg.data_dir, cfg.data_dir_lock_wait.get()).await?;

    // An exporter that cannot start (a TLS file that cannot be read, ...) is fatal, named.
    lgtm_pipeline::exporter::check_setup(&cfg).await.map_err(anyhow::Error::msg)?;
    let (pipeline, mut pipeline_handle) = Pipeline::start(&cfg).context("opening the exporter queues")?;

    let listener = tokio::net::TcpListener::bind(&cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot listen on {}", cfg.admin.listen))?;
    // Every receiver binds before anything is reported ready; one that cannot is fatal.
    let receivers = crate::otlp::bind(&cfg, &pipeline).await?;

    let admin_stop = CancellationToken::new();
    let sources_stop = CancellationToken::new();
    let queues = pipeline_handle.queues();
    let scrape = Arc::new(TargetManager::new(pipeline.metrics.clone(), jitter_seed(&cfg)));
    let targets_view = scrape.clone();
    let discovery = Arc::new(StatusBoard::default());
    let discovery_view = discovery.clone();
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let state = Arc::new(AdminState::new(
        Box::new(move || queues.iter().for_each(lgtm_pipeline::export_queue_gauges)),
        Box::new(move || serde_json::json!({ "targets": targets_view.targets(), "discovery": discovery_view.json() })),
        cfg.admin.enable_reload.then_some(reload_tx),
    ));
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), admin_stop.clone()));
    tracing::info!(listen = %cfg.admin.listen, "admin server listening");

    // What the CLI, config and pipeline set-up ran is not needed again (see memory.rs).
    let _ = tokio::task::spawn_blocking(crate::memory::page_out_code).await;
    let mut sources: JoinSet<()> = JoinSet::new();
    if let Some(receivers) = receivers {
        let stop = sources_stop.clone();
        sources.spawn(tracing::Instrument::instrument(receivers.run(stop), tracing::info_span!("otlp")));
    }
    start_sources(&cfg, &pipeline, &scrape, &sources_stop, &mut sources);
    let mut logs = start_logs(&cfg, &pipeline, &sources_stop);
    start_cluster_sources(&cfg, &pipeline, &scrape, &discovery, &sources_stop, &mut sources);
    state.set_started(true);
    let page_out = tokio::spawn(async {
        let start = tokio::time::Instant::now();
        for after in crate::memory::PAGE_OUT_AFTER {
            tokio::time::sleep_until(start + after).await;
            let advised = tokio::task::spawn_blocking(crate::memory::page_out_code).await.unwrap_or(0);
            tracing::debug!(bytes = advised, "start-up code pages given back");
        }
    });

    let mut signals = Signals::listen();
    let ended = loop {
        let (new, reply) = match wait_for_stop_or_reload(&cfg, &reloader, &mut reload_rx, &mut signals).await {
            Wait::Stop => break Ended::Stopped,
            Wait::Reload(new, reply) => (new, reply),
        };
        let answer = match components::plan(&cfg, &new) {
            Plan::Restart(fields) => {
                tracing::info!(fields = %fields.join(", "), "reloading: these fields cannot change in place; stopping as on SIGTERM, then starting on the new config in the same process");
                if let Some(reply) = reply {
                    let _ = reply.send(Ok("reloading\n".into()));
                }
                break Ended::Reload;
            }
            Plan::InPlace(changed) => {
                let grace = new.shutdown.grace_period.get();
                if changed.contains(&Component::Logs) {
                    // The tailer first: what it handed over is acknowledged by the running
                    // exporter, and its checkpoints are written before the new one reads them.
                    if let Some(old) = logs.take() {
                        old.stop.cancel();
                        if tokio::time::timeout(grace, old.task).await.is_err() {
                            // Two tailers on the same files would read lines twice.
                            tracing::warn!(grace = %format!("{}s", grace.as_secs_f64()), "reloading: the log tailer did not stop within the grace period; restarting the whole agent in the same process");
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok("reloading\n".into()));
                            }
                            break Ended::Reload;
                        }
                    }
                }
                for c in &changed {
                    if let Component::Exporter(signal) = c {
                        pipeline_handle.restart_exporter(*signal, &new, grace).await;
                    }
                }
                if changed.contains(&Component::Scrape) {
                    sync_scrape_targets(&new, &scrape);
                }
                if changed.contains(&Component::Logs) {
                    logs = start_logs(&new, &pipeline, &sources_stop);
                    if logs.is_none() {
                        health::handle("source/logs").remove();
                    }
                }
                for c in &changed {
                    components::restarts().with_label_values(&[c.name()]).inc();
                }
                let names = changed.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
                tracing::info!(restarted = %names, "config reloaded in place");
                format!("reloaded: {}\n", if names.is_empty() { "nothing restarted" } else { &names })
            }
        };
        cfg = *new;
        if let Some(reply) = reply {
            let _ = reply.send(Ok(answer));
        }
    };
    state.set_started(false);
    sources_stop.cancel();
    page_out.abort();
    // One deadline for the whole drain: sources first, then the exporters get what is left.
    let grace = cfg.shutdown.grace_period.get();
    let deadline = tokio::time::Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, async {
        while sources.join_next().await.is_some() {}
        if let Some(logs) = logs {
            let _ = logs.task.await;
        }
    })
    .await;
    drop(pipeline);
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    pipeline_handle.shutdown(remaining.max(std::time::Duration::from_millis(200))).await;
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(ended)
}

/// SIGTERM and SIGHUP, listened to from start to stop: one that arrives while a reload is
/// being applied is seen once it is done.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate())
                .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM"))
                .ok(),
            hup: signal(SignalKind::hangup()).map_err(|e| tracing::error!(error = %e, "cannot listen for SIGHUP")).ok(),
        }
    }
}

/// What [`wait_for_stop_or_reload`] saw.
enum Wait {
    Stop,
    /// A valid config that differs from the running one, and the `POST /-/reload` to answer.
    Reload(Box<Config>, Option<tokio::sync::oneshot::Sender<Result<String, String>>>),
}

/// Waits for SIGTERM/SIGINT (stop) or for a reload (SIGHUP or `POST /-/reload`) whose config is
/// valid and differs from `current`; an invalid or unchanged one is answered and counted, and
/// the wait goes on.
async fn wait_for_stop_or_reload(
    current: &Config,
    reloader: &Reloader,
    requests: &mut mpsc::Receiver<ReloadRequest>,
    signals: &mut Signals,
) -> Wait {
    let Signals { term, hup } = signals;
    loop {
        let reply = tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => return Wait::Stop,
            _ = tokio::signal::ctrl_c() => return Wait::Stop,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the config file");
                None
            }
            Some(request) = requests.recv() => {
                tracing::info!("POST /-/reload: reloading the config file");
                Some(request.reply)
            }
        };
        match reloader.check(current).await {
            Ok(Some(new)) => return Wait::Reload(Box::new(new), reply),
            outcome => {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome.map(|_| "unchanged\n".to_string()));
                }
            }
        }
    }
}

/// Spawns a source into `set`, registered as the component `name` and watched: one that ends or
/// panics while `stop` is not cancelled fails `/healthz`.
pub fn supervise<F>(set: &mut JoinSet<()>, name: &str, stop: &CancellationToken, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    set.spawn(watched(name, stop, fut));
}

/// Runs `fut` as the component `name`; its ending or panic while `stop` is not cancelled fails
/// `/healthz`.
fn watched<F>(name: &str, stop: &CancellationToken, fut: F) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let component = health::component(name);
    component.running();
    let stop = stop.clone();
    let task = tokio::spawn(fut);
    async move {
        let outcome = task.await;
        if stop.is_cancelled() {
            return;
        }
        let why = match outcome {
            Ok(()) => "ended".to_string(),
            Err(e) if e.is_panic() => "panicked".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(component = component.name(), "{why} while the agent runs; /healthz fails");
        component.died(why);
    }
}

/// Starts what the mode and the `enabled` flags ask for. Each source runs until `stop` is
/// cancelled and returns after persisting its own state (checkpoints).
fn start_sources(
    cfg: &Config,
    pipeline: &Pipeline,
    scrape: &Arc<TargetManager<MetricsSink>>,
    stop: &CancellationToken,
    set: &mut JoinSet<()>,
) {
    sync_scrape_targets(cfg, scrape);
    tracing::info!(targets = scrape.targets().len(), "scrape targets started");
    if cfg.scrape.host_metrics.enabled() {
        let mut opts = lgtm_daemonset::HostSourceOptions::new(&cfg.scrape, &cfg.node_name);
        opts.jitter_seed = jitter_seed(cfg);
        let root = opts.root.display().to_string();
        let targets = scrape.clone();
        let show = move |target, status| targets.show(target, status);
        let fut = lgtm_daemonset::run_host_metrics(opts, pipeline.metrics.clone(), show, stop.clone());
        supervise(
            set,
            "source/host_metrics",
            stop,
            tracing::Instrument::instrument(fut, tracing::info_span!("host_metrics")),
        );
        tracing::info!(root, "host metrics started");
    }
    let manager = scrape.clone();
    let stop_scrape = stop.clone();
    set.spawn(async move {
        stop_scrape.cancelled().await;
        manager.shutdown().await;
    });
}

/// The scrape targets of `static_configs` and the kubelet (each discovery owns its share of the
/// scrape manager's targets). Called again on a reload: unchanged targets keep scraping, new
/// ones start, removed ones stop after their staleness markers.
fn sync_scrape_targets(cfg: &Config, scrape: &Arc<TargetManager<MetricsSink>>) {
    let report = |errors: Vec<lgtm_scrape::target::TargetError>| {
        for e in errors {
            tracing::error!(target_labels = ?e.labels, error = %e.message, "scrape target not scraped");
        }
    };
    report(scrape.sync_provider("static_configs", lgtm_scrape::static_target_groups(&cfg.scrape)));
    let mut kubelet = Vec::new();
    if cfg.scrape.kubelet.enabled() {
        // The kubelet is reached at the node name (its serving certificate names the node).
        let node = lgtm_daemonset::KubeletNode::new(&cfg.node_name);
        match lgtm_daemonset::kubelet_target_groups(&cfg.scrape, &node) {
            Ok(groups) => {
                tracing::info!(node = %cfg.node_name, via = %format!("{:?}", cfg.scrape.kubelet.via).to_lowercase(), "kubelet targets");
                kubelet = groups;
            }
            Err(e) => tracing::error!(error = %e, "kubelet not scraped"),
        }
    }
    report(scrape.sync_provider("kubelet", kubelet));
}

/// The pod log tailer, stopped alone on a reload that changes it.
struct LogsTask {
    /// A child of the sources' stop.
    stop: CancellationToken,
    /// Ends after the tailer wrote its checkpoints.
    task: tokio::task::JoinHandle<()>,
}

/// Starts the pod log tailer if `logs` is enabled.
fn start_logs(cfg: &Config, pipeline: &Pipeline, sources_stop: &CancellationToken) -> Option<LogsTask> {
    if !cfg.logs.enabled() {
        return None;
    }
    let stop = sources_stop.child_token();
    let opts = lgtm_daemonset::LogsOptions::from_config(cfg);
    let (logs_cfg, sink, stop_logs) = (cfg.logs.clone(), pipeline.logs.clone(), stop.clone());
    let node_name = cfg.node_name.clone();
    let fut = async move {
        if !logs_cfg.kubernetes {
            return lgtm_daemonset::run_logs(logs_cfg, opts, sink, stop_logs).await;
        }
        // Files that exist at start get their labels when opened: give the first list of this
        // node's pods a moment (it ends early when the API is plainly unreachable).
        let pods = lgtm_daemonset::pods::PodReflector::start(&logs_cfg, &node_name, stop_logs.clone());
        pods.wait_for_first_list(lgtm_daemonset::pods::FIRST_LIST_WAIT).await;
        lgtm_daemonset::logs::run_logs_with(logs_cfg, opts, sink, Arc::new(pods), stop_logs).await
    };
    let task =
        tokio::spawn(watched("source/logs", &stop, tracing::Instrument::instrument(fut, tracing::info_span!("logs"))));
    tracing::info!(path = %cfg.logs.path.display(), "pod log tailer started");
    Some(LogsTask { stop, task })
}

/// Cluster mode's Kubernetes sources: monitor discovery (the `discovery` share of the scrape
/// manager's targets), events to Loki and cluster-state metrics.
/// They share one client.
fn start_cluster_sources(
    cfg: &Config,
    pipeline: &Pipeline,
    scrape: &Arc<TargetManager<MetricsSink>>,
    discovery: &Arc<StatusBoard>,
    stop: &CancellationToken,
    set: &mut JoinSet<()>,
) {
    let monitors = cfg.scrape.monitors.enabled();
    let events = cfg.events.enabled();
    let cluster_state = cfg.cluster_state.enabled();
    if !monitors && !events && !cluster_state {
        return;
    }
    let (cfg, pipeline, scrape, board, stop_all) =
        (cfg.clone(), pipeline.clone(), scrape.clone(), discovery.clone(), stop.clone());
    let health = health::component("source/kubernetes");
    let fut = async move {
        let client = match lgtm_k8s::client::connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes API: monitor discovery and events are off");
                health.failed(format!("no Kubernetes API: {e}"));
                stop_all.cancelled().await;
                return;
            }
        };
        health.running();
        let stop = stop_all.clone();
        // One Pod watch for discovery and cluster state.
        let pods = lgtm_k8s::store::SharedWatch::new(client.clone(), stop.clone());
        let mut tasks = JoinSet::new();
        if monitors {
            let options = lgtm_statefulset::discovery::DiscoveryOptions::from_config(&cfg);
            let fut =
                lgtm_statefulset::discovery::run(client.clone(), pods.clone(), options, scrape, board, stop.clone());
            supervise(
                &mut tasks,
                "source/discovery",
                &stop,
                tracing::Instrument::instrument(fut, tracing::info_span!("discovery")),
            );
            tracing::info!("monitor discovery started");
        }
        if events {
            let options = lgtm_statefulset::events::EventsOptions::from_config(&cfg);
            tracing::info!(lease = %options.lease.name, namespace = %options.lease.namespace, identity = %options.lease.identity, "events source started");
            let fut = lgtm_statefulset::events::run(client.clone(), options, pipeline.logs.clone(), stop.clone());
            supervise(
                &mut tasks,
                "source/events",
                &stop,
                tracing::Instrument::instrument(fut, tracing::info_span!("events")),
            );
        }
        if cluster_state {
            let options = lgtm_statefulset::cluster_state::ClusterStateOptions::from_config(&cfg);
            tracing::info!(lease = %options.lease.name, namespace = %options.lease.namespace, interval = %options.interval.as_secs_f64(), "cluster-state source started");
            let fut =
                lgtm_statefulset::cluster_state::run(client, pods, options, pipeline.metrics.clone(), stop.clone());
            supervise(
                &mut tasks,
                "source/cluster_state",
                &stop,
                tracing::Instrument::instrument(fut, tracing::info_span!("cluster_state")),
            );
        }
        while tasks.join_next().await.is_some() {}
    };
    set.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("kubernetes")));
}

/// Spreads scrape phases across agents: a hash of the node (or pod) name.
fn jitter_seed(cfg: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.node_name.hash(&mut h);
    cfg.cluster.hash(&mut h);
    h.finish()
}
