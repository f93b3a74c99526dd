//! The router against two in-process OTLP/gRPC replicas.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::*;

#[derive(Clone, Default)]
struct Replica {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Replica {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct Running {
    addr: SocketAddr,
    replica: Replica,
    stop: CancellationToken,
}

async fn replica() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replica = Replica::default();
    let stop = CancellationToken::new();
    let svc = TraceServiceServer::new(replica.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let s = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), s.cancelled_owned())
            .await
    });
    Running { addr, replica, stop }
}

impl Running {
    fn trace_ids(&self) -> HashMap<Vec<u8>, usize> {
        let mut m = HashMap::new();
        for s in self.replica.spans.lock().unwrap().iter() {
            *m.entry(s.trace_id.clone()).or_default() += 1;
        }
        m
    }
}

fn trace_id(n: u32) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[12..].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    id
}

/// A request with one span of each of `traces` (span number `span`), as a node agent would batch
/// spans of many traces together.
fn mixed_request(traces: impl Iterator<Item = u32>, span: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: traces
                    .map(|t| Span { trace_id: trace_id(t), span_id: vec![span; 8], ..Default::default() })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options() -> RouterOptions {
    RouterOptions { timeout: Duration::from_secs(2), ..RouterOptions::new("unused:4317") }
}

#[tokio::test]
async fn every_span_of_a_trace_lands_on_one_replica_and_every_trace_lands() {
    let (a, b) = (replica().await, replica().await);
    let router = TraceRouter::new(options());
    router.set_endpoints(vec![a.addr, b.addr]);
    for span in 1..=3u8 {
        router.consume(mixed_request(0..200, span)).unwrap();
    }
    wait_for("600 spans", || a.replica.spans.lock().unwrap().len() + b.replica.spans.lock().unwrap().len() == 600)
        .await;
    let (on_a, on_b) = (a.trace_ids(), b.trace_ids());
    assert!(on_a.keys().all(|t| !on_b.contains_key(t)), "a trace split across replicas");
    assert!(on_a.values().chain(on_b.values()).all(|n| *n == 3), "every span of a trace together");
    assert_eq!(on_a.len() + on_b.len(), 200);
    assert!(on_a.len() > 50 && on_b.len() > 50, "both replicas get a share: {} / {}", on_a.len(), on_b.len());
    // A lane releases its bytes when the replica's answer arrives, which is after the replica
    // stored the spans: on a loaded machine the check above can run in between.
    wait_for("nothing pending", || router.pending_bytes() == 0).await;
}

#[tokio::test]
async fn traces_of_a_replica_that_went_down_reroute_after_the_membership_change() {
    let (a, b) = (replica().await, replica().await);
    let router = TraceRouter::new(options());
    router.set_endpoints(vec![a.addr, b.addr]);
    b.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    router.consume(mixed_request(0..100, 1)).unwrap();
    // A's share arrives; B's waits, retried, while B is still a member.
    let members = router.endpoints();
    let keys: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    let a_share = (0..100).filter(|t| members[placement::owner(&trace_id(*t), &keys)] == a.addr).count();
    wait_for("A's share", || a.replica.spans.lock().unwrap().len() == a_share).await;
    assert!(router.pending_bytes() > 0, "B's traces wait");
    router.set_endpoints(vec![a.addr]);
    wait_for("all 100 traces on A", || a.trace_ids().len() == 100).await;
    wait_for("nothing pending", || router.pending_bytes() == 0).await;
    // New spans of the moved traces follow them to A.
    router.consume(mixed_request(0..100, 2)).unwrap();
    wait_for("second spans", || a.replica.spans.lock().unwrap().len() == 200).await;
    assert!(a.trace_ids().values().all(|n| *n == 2));
}

#[tokio::test]
async fn spans_wait_for_a_first_member() {
    let a = replica().await;
    let router = TraceRouter::new(options());
    router.consume(mixed_request(0..10, 1)).unwrap();
    assert!(router.pending_bytes() > 0);
    router.set_endpoints(vec![a.addr]);
    wait_for("parked spans", || a.replica.spans.lock().unwrap().len() == 10).await;
}

#[tokio::test]
async fn a_full_router_answers_busy() {
    let router = TraceRouter::new(RouterOptions { max_pending_bytes: 100, ..options() });
    router.consume(mixed_request(0..10, 1)).unwrap();
    assert!(matches!(router.consume(mixed_request(0..10, 2)), Err(ConsumeError::Busy(_))));
}

#[tokio::test]
async fn members_come_from_dns() {
    let a = replica().await;
    let opts = RouterOptions { resolve_every: Duration::from_millis(50), ..RouterOptions::new(a.addr.to_string()) };
    let stop = CancellationToken::new();
    let (router, task) = TraceRouter::start(opts, stop.clone()).unwrap();
    router.consume(mixed_request(0..5, 1)).unwrap();
    wait_for("spans via DNS membership", || a.replica.spans.lock().unwrap().len() == 5).await;
    assert_eq!(router.endpoints(), vec![a.addr]);
    stop.cancel();
    task.await.unwrap();
    assert!(TraceRouter::start(RouterOptions::new("no-port"), CancellationToken::new()).is_err());
}

#[test]
fn removing_a_member_moves_only_its_traces() {
    let three: Vec<String> = ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"].map(String::from).to_vec();
    let two: Vec<String> = vec![three[0].clone(), three[2].clone()];
    let mut moved = HashSet::new();
    for t in 0..3000 {
        let before = &three[placement::owner(&trace_id(t), &three)];
        let after = &two[placement::owner(&trace_id(t), &two)];
        if before != after {
            assert_eq!(before, &three[1], "only the removed member's traces move");
            moved.insert(t);
        }
    }
    assert!((800..1200).contains(&moved.len()), "{}", moved.len());
}

#[test]
fn split_keeps_resource_and_scope_per_part() {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let mut req = mixed_request(0..50, 1);
    req.resource_spans[0].resource = Some(Resource { dropped_attributes_count: 7, ..Default::default() });
    req.resource_spans[0].scope_spans[0].scope =
        Some(InstrumentationScope { name: "lib".into(), ..Default::default() });
    let members: Vec<SocketAddr> = vec!["10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
    let parts = split_by_owner(req, &members);
    assert_eq!(parts.len(), 2);
    let mut total = 0;
    for (_, part) in &parts {
        assert_eq!(part.resource_spans[0].resource.as_ref().unwrap().dropped_attributes_count, 7);
        assert_eq!(part.resource_spans[0].scope_spans[0].scope.as_ref().unwrap().name, "lib");
        total += span_count(part);
    }
    assert_eq!(total, 50);
}
