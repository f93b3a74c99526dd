//! `lgtm-agent run`: start the pipeline, the admin server and the mode's sources; on SIGTERM or
//! SIGINT stop the sources, let the exporters flush within the grace period, persist queues and
//! checkpoints, and return.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use lgtm_config::Config;
use lgtm_pipeline::{MetricsSink, Pipeline};
use lgtm_scrape::TargetManager;
use lgtm_statefulset::discovery::StatusBoard;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), mode = cfg.mode().as_str(), cluster = %cfg.cluster, "starting");
    lgtm_pipeline::metrics::pipeline();
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    crate::datadir::raise_nofile_limit();
    let _data_dir_lock = crate::datadir::lock(&cfg.data_dir, cfg.data_dir_lock_wait.get()).await?;

    let (pipeline, pipeline_handle) = Pipeline::start(&cfg).context("opening the exporter queues")?;

    let listener = tokio::net::TcpListener::bind(&cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen: binding {}", cfg.admin.listen))?;
    let admin_stop = CancellationToken::new();
    let sources_stop = CancellationToken::new();
    let queues = pipeline_handle.queues();
    let scrape = Arc::new(TargetManager::new(pipeline.metrics.clone(), jitter_seed(&cfg)));
    let targets_view = scrape.clone();
    let discovery = Arc::new(StatusBoard::default());
    let discovery_view = discovery.clone();
    let state = Arc::new(AdminState {
        ready: AtomicBool::new(false),
        before_render: Box::new(move || queues.iter().for_each(lgtm_pipeline::export_queue_gauges)),
        targets: Box::new(
            move || serde_json::json!({ "targets": targets_view.targets(), "discovery": discovery_view.json() }),
        ),
    });
    let admin_task = tokio::spawn(admin::serve(listener, state.clone(), admin_stop.clone()));
    tracing::info!(listen = %cfg.admin.listen, "admin server listening");

    // What the CLI, config and pipeline set-up ran is not needed again (see memory.rs).
    let _ = tokio::task::spawn_blocking(crate::memory::page_out_code).await;
    let mut sources: JoinSet<()> = JoinSet::new();
    start_sources(&cfg, &pipeline, &scrape, &sources_stop, &mut sources);
    start_cluster_sources(&cfg, &pipeline, &scrape, &discovery, &sources_stop, &mut sources);
    state.ready.store(true, Ordering::Relaxed);
    let page_out = tokio::spawn(async {
        let start = tokio::time::Instant::now();
        for after in crate::memory::PAGE_OUT_AFTER {
            tokio::time::sleep_until(start + after).await;
            let advised = tokio::task::spawn_blocking(crate::memory::page_out_code).await.unwrap_or(0);
            tracing::debug!(bytes = advised, "start-up code pages given back");
        }
    });

    wait_for_signal().await;
    tracing::info!("stopping: sources first, then flushing exporters");
    state.ready.store(false, Ordering::Relaxed);
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
    Ok(())
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
                tracing::info!(node = %cfg.node_name, via = ?cfg.scrape.kubelet.via, "kubelet targets");
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
        set.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("host_metrics")));
        tracing::info!(root, "host metrics started");
    }
    if cfg.otlp.enabled() {
        let fut = crate::otlp::run(cfg.clone(), pipeline.clone(), stop.clone());
        set.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("otlp")));
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
        set.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("logs")));
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
    let (cfg, pipeline, scrape, board, stop) =
        (cfg.clone(), pipeline.clone(), scrape.clone(), discovery.clone(), stop.clone());
    let fut = async move {
        let client = match lgtm_statefulset::discovery::connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no Kubernetes API: monitor discovery and events are off");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        if monitors {
            let options = lgtm_statefulset::discovery::DiscoveryOptions::from_config(&cfg);
            let fut = lgtm_statefulset::discovery::run(client.clone(), options, scrape, board, stop.clone());
            tasks.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("discovery")));
            tracing::info!("monitor discovery started");
        }
        if events {
            let options = lgtm_statefulset::events::EventsOptions::from_config(&cfg);
            tracing::info!(lease = %options.lease.name, namespace = %options.lease.namespace, identity = %options.lease.identity, "events source started");
            let fut = lgtm_statefulset::events::run(client.clone(), options, pipeline.logs.clone(), stop.clone());
            tasks.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("events")));
        }
        if cluster_state {
            let options = lgtm_statefulset::cluster_state::ClusterStateOptions::from_config(&cfg);
            tracing::info!(lease = %options.lease.name, namespace = %options.lease.namespace, interval = ?options.interval, "cluster-state source started");
            let fut = lgtm_statefulset::cluster_state::run(client, options, pipeline.metrics.clone(), stop);
            tasks.spawn(tracing::Instrument::instrument(fut, tracing::info_span!("cluster_state")));
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
