//! Daemonset mode: spans routed by trace ID to the cluster-mode replicas (`otlp.forward_traces_to`,
//! the `host:port` of their headless Service), so that every span of a trace reaches the replica
//! that tail-samples it.
//!
//! - Membership: the Service's name is resolved periodically ([`resolve`]); each A record is a
//!   replica (a comma-separated list of `host:port` is the union of theirs). Tests and other discovery can set the members with [`TraceRouter::set_endpoints`].
//! - Placement: rendezvous hashing ([`placement`]) of the trace ID over the members: a trace
//!   always goes to the same replica while membership holds, and a change moves only the traces
//!   of the replicas that came or went. A request holding spans of several traces is split.
//! - Delivery: one OTLP/gRPC client (gzip) and queue per replica ([`lane`]); retryable failures
//!   (UNAVAILABLE, RESOURCE_EXHAUSTED, timeouts, refused connections) are retried with backoff
//!   while the replica is a member; once it is removed, what waits for it is placed again over
//!   the new members. With no member yet, spans wait until one appears.
//! - Bounds: spans waiting anywhere in the router are bounded in bytes (`max_pending_bytes`);
//!   above it [`TraceRouter`] answers Busy and the receiver answers RESOURCE_EXHAUSTED / 429.
//!   Spans the replica refuses as invalid are dropped and counted
//!   (`lgtm_agent_route_dropped_spans_total`).
//!
//! ```no_run
//! # async fn wire(config: lgtm_config::Config, pipeline: lgtm_pipeline::Pipeline) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lgtm_pipeline::receiver::{self, TraceConsumer};
//! use lgtm_pipeline::route::{RouterOptions, TraceRouter};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let options = RouterOptions::new(config.otlp.forward_traces_to.clone());
//! let (router, task) = TraceRouter::start(options, shutdown.child_token())?;
//! let traces: Arc<dyn TraceConsumer> = router;
//! receiver::serve(config.otlp.clone(), config.cluster.clone(), pipeline, traces, shutdown.clone()).await?;
//! task.await?; // returns once what was waiting was delivered, or after the grace period
//! # Ok(()) }
//! ```

mod lane;
mod metrics;
pub mod placement;
pub mod resolve;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::receiver::{span_count, ConsumeError, TraceConsumer};
use lane::Lane;

/// How the router finds and talks to the replicas.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// `host:port` of the replicas' headless Service.
    pub target: String,
    /// How often the name is resolved again.
    pub resolve_every: Duration,
    /// Bytes of spans waiting in the router (all replicas together) before it answers Busy.
    pub max_pending_bytes: usize,
    /// Per export request.
    pub timeout: Duration,
    /// At shutdown, how long waiting spans may still be delivered.
    pub drain_grace: Duration,
}

impl RouterOptions {
    pub fn new(target: impl Into<String>) -> RouterOptions {
        RouterOptions {
            target: target.into(),
            resolve_every: Duration::from_secs(5),
            max_pending_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("otlp.forward_traces_to {0:?} is not host:port")]
    Target(String),
}

/// The router: a [`TraceConsumer`] that forwards to the replica owning each trace.
pub struct TraceRouter {
    options: RouterOptions,
    state: Mutex<Members>,
    pending_bytes: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Members {
    lanes: BTreeMap<SocketAddr, Lane>,
    /// Requests waiting for a first member.
    parked: VecDeque<(ExportTraceServiceRequest, usize)>,
}

impl TraceRouter {
    /// A router without membership discovery: call [`TraceRouter::set_endpoints`]. Must be
    /// called within a tokio runtime.
    pub fn new(options: RouterOptions) -> Arc<TraceRouter> {
        Arc::new(TraceRouter {
            options,
            state: Mutex::new(Members::default()),
            pending_bytes: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A router whose members are the A records of `options.target`, resolved every
    /// `resolve_every`. The task ends after `shutdown`, once waiting spans are delivered or
    /// `drain_grace` has passed.
    pub fn start(
        options: RouterOptions,
        shutdown: CancellationToken,
    ) -> Result<(Arc<TraceRouter>, JoinHandle<()>), RouteError> {
        let target =
            resolve::Target::parse(&options.target).ok_or_else(|| RouteError::Target(options.target.clone()))?;
        let router = TraceRouter::new(options);
        let task = tokio::spawn(
            resolve::run(router.clone(), target, shutdown).instrument(tracing::info_span!("trace_router_membership")),
        );
        Ok((router, task))
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current members.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.lock().lanes.keys().copied().collect()
    }

    /// Bytes of spans waiting for delivery.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Replaces the members. New ones get a client; removed ones stop, and what waited for them
    /// is placed again over the new members.
    pub fn set_endpoints(self: &Arc<Self>, mut endpoints: Vec<SocketAddr>) {
        endpoints.sort();
        endpoints.dedup();
        let (retired, parked) = {
            let mut m = self.lock();
            if m.lanes.keys().copied().eq(endpoints.iter().copied()) {
                return;
            }
            tracing::info!(members = ?endpoints, "trace routing membership changed");
            let retired: Vec<Lane> = {
                let gone: Vec<SocketAddr> = m.lanes.keys().filter(|a| !endpoints.contains(a)).copied().collect();
                gone.iter().filter_map(|a| m.lanes.remove(a)).collect()
            };
            for addr in &endpoints {
                if !m.lanes.contains_key(addr) {
                    let lane = Lane::spawn(*addr, Arc::downgrade(self), self.options.timeout);
                    m.lanes.insert(*addr, lane);
                }
            }
            metrics::route().endpoints.set(m.lanes.len() as i64);
            let parked = if m.lanes.is_empty() { VecDeque::new() } else { std::mem::take(&mut m.parked) };
            (retired, parked)
        };
        // A retired lane hands back what it holds through `reroute` as its task ends.
        for lane in retired {
            lane.retire();
        }
        for (req, size) in parked {
            self.reroute(req, size);
        }
    }

    /// Places a request that was already counted in `pending_bytes` again.
    fn reroute(&self, req: ExportTraceServiceRequest, size: usize) {
        self.pending_bytes.fetch_sub(size, Ordering::Relaxed);
        metrics::route().rerouted.inc_by(span_count(&req) as u64);
        self.place(req);
    }

    /// Splits by owner and queues; adds to `pending_bytes`.
    fn place(&self, req: ExportTraceServiceRequest) {
        let mut m = self.lock();
        if m.lanes.is_empty() {
            let size = req.encoded_len();
            self.pending_bytes.fetch_add(size, Ordering::Relaxed);
            m.parked.push_back((req, size));
            return;
        }
        let members: Vec<SocketAddr> = m.lanes.keys().copied().collect();
        for (owner, part) in split_by_owner(req, &members) {
            let size = part.encoded_len();
            self.pending_bytes.fetch_add(size, Ordering::Relaxed);
            if let Some(lane) = m.lanes.get(&members[owner]) {
                lane.push(part, size);
            }
        }
        metrics::route().pending_bytes.set(self.pending_bytes() as i64);
    }

    /// Called by a lane when a request left the router (delivered or dropped).
    fn done(&self, size: usize) {
        self.pending_bytes.fetch_sub(size, Ordering::Relaxed);
        metrics::route().pending_bytes.set(self.pending_bytes() as i64);
    }

    /// Waits until nothing is pending or `grace` has passed.
    async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.pending_bytes() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.pending_bytes();
        if left > 0 {
            tracing::warn!(bytes = left, "trace router stopped with spans undelivered");
        }
    }
}

impl TraceConsumer for TraceRouter {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        if self.pending_bytes() > self.options.max_pending_bytes {
            return Err(ConsumeError::Busy("spans wait for the cluster-mode replicas".into()));
        }
        self.place(request);
        Ok(())
    }
}

/// Splits a request into one per owning member (index into `members`), keeping each span's
/// resource and scope.
pub fn split_by_owner(
    req: ExportTraceServiceRequest,
    members: &[SocketAddr],
) -> Vec<(usize, ExportTraceServiceRequest)> {
    let keys: Vec<String> = members.iter().map(|a| a.to_string()).collect();
    let mut owners: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut parts: BTreeMap<usize, ExportTraceServiceRequest> = BTreeMap::new();
    for rs in req.resource_spans {
        let mut per_owner: BTreeMap<usize, ResourceSpans> = BTreeMap::new();
        for ss in rs.scope_spans {
            let mut scoped: BTreeMap<usize, ScopeSpans> = BTreeMap::new();
            for span in ss.spans {
                let owner = match owners.get(&span.trace_id) {
                    Some(o) => *o,
                    None => {
                        let o = placement::owner(&span.trace_id, &keys);
                        owners.insert(span.trace_id.clone(), o);
                        o
                    }
                };
                scoped
                    .entry(owner)
                    .or_insert_with(|| ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    })
                    .spans
                    .push(span);
            }
            for (owner, scope_spans) in scoped {
                per_owner
                    .entry(owner)
                    .or_insert_with(|| ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    })
                    .scope_spans
                    .push(scope_spans);
            }
        }
        for (owner, resource_spans) in per_owner {
            parts.entry(owner).or_default().resource_spans.push(resource_spans);
        }
    }
    parts.into_iter().collect()
}

#[cfg(test)]
mod tests;
