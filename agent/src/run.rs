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
//! one is applied by the same graceful stop as SIGTERM (queues and checkpoints persisted) followed
//! by a start of the same binary in the same process (`exec`), so the pod is not restarted.

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
use crate::reload::{ReloadRequest, Reloader};

/// How `run` ended.
pub enum Ended {
    /// SIGTERM or SIGINT: exit 0.
    Stopped,
    /// A changed config was validated: start again on it.
    Reload,
}

pub async fn run(cfg: Config, reloader: Reloader) -> anyhow::Result<Ended> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), mode = cfg.mode().as_str(), cluster = %cfg.cluster, "starting");
    lgtm_pipeline::metrics::pipeline();
    crate::reload::metrics().last_successful.set(1);
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    crate::datadir::raise_nofile_limit();
    let _data_dir_lock = crate::datadir::lock(&cfg.data_dir, cfg.data_dir_lock_wait.get()).await?;

    // An exporter that cannot start (a TLS file that cannot be read, ...) is fatal, named.
    lgtm_pipeline::exporter::check_setup(&cfg).await.map_err(anyhow::Error::msg)?;
    let (pipeline, pipeline_handle) = Pipeline::start(&cfg).context("opening the exporter queues")?;

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

    let ended = wait_for_stop_or_reload(&cfg, &reloader, &mut reload_rx).await;
    match ended {
        Ended::Stopped => tracing::info!("stopping: sources first, then flushing exporters"),
        Ended::Reload => tracing::info!("reloading: stopping as on SIGTERM, then starting on the new config"),
    }
    state.set_started(false);
    sources_stop.cancel();
    page_out.abort();
    // One deadline for the whole drain: sources first, then the exporters get what is left.
    let grace = cfg.shutdown.grace_period.get();
    let deadline = tokio::time::Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, async { while sources.join_next().await.is_some() {} }).await;
    drop(pipeline);
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    pipeline_handle.shutdown(remaining.max(std::time::Duration::from_millis(200))).await;
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(ended)
}

/// Waits for SIGTERM/SIGINT (stop) or for a reload (SIGHUP or `POST /-/reload`) whose config is
/// valid and differs from `current`; an invalid one is answered and counted, and the wait goes on.
async fn wait_for_stop_or_reload(
    current: &Config,
    reloader: &Reloader,
    requests: &mut mpsc::Receiver<ReloadRequest>,
) -> Ended {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM")).ok();
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| tracing::error!(error = %e, "cannot listen for SIGHUP")).ok();
    loop {
        let reply = tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => return Ended::Stopped,
            _ = tokio::signal::ctrl_c() => return Ended::Stopped,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the config file");
                None
            }
            Some(request) = requests.recv() => {
                tracing::info!("POST /-/reload: reloading the config file");
                Some(request.reply)
            }
        };
        let outcome = reloader.check(current).await;
        let apply = matches!(outcome, Ok(true));
        let answer = outcome.map(|changed| if changed { "reloading\n" } else { "unchanged\n" }.to_string());
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
        if apply {
            return Ended::Reload;
        }
    }
}

/// Spawns a source into `set`, registered as the component `name` and watched: one that ends or
/// panics while `stop` is not cancelled fails `/healthz`.
pub fn supervise<F>(set: &mut JoinSet<()>, name: &str, stop: &CancellationToken, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let component = health::component(name);
    component.running();
    let stop = stop.clone();
    let task = tokio::spawn(fut);
    set.spawn(async move {
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
    });
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
    // Each discovery owns its share of the scrape manager's targets.
    let report = |errors: Vec<lgtm_scrape::target::TargetError>| {
        for e in errors {
            tracing::error!(target_labels = ?e.labels, error = %e.message, "scrape target not scraped");
        }
    };
    let fixed = lgtm_scrape::static_target_groups(&cfg.scrape);
    if !fixed.is_empty() {
        report(scrape.sync_provider("static_configs", fixed));
    }
    if cfg.scrape.kubelet.enabled() {
        // The kubelet is reached at the node name (its serving certificate names the node).
        let node = lgtm_daemonset::KubeletNode::new(&cfg.node_name);
        match lgtm_daemonset::kubelet_target_groups(&cfg.scrape, &node) {
            Ok(kubelet) => {
                tracing::info!(node = %cfg.node_name, via = %format!("{:?}", cfg.scrape.kubelet.via).to_lowercase(), "kubelet targets");
                report(scrape.sync_provider("kubelet", kubelet));
            }
            Err(e) => tracing::error!(error = %e, "kubelet not scraped"),
        }
    }
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
    if cfg.logs.enabled() {
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
        supervise(set, "source/logs", stop, tracing::Instrument::instrument(fut, tracing::info_span!("logs")));
        tracing::info!(path = %cfg.logs.path.display(), "pod log tailer started");
    }
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
