//! An in-process exposition server whose reply tests change between scrapes, a sink that
//! collects batches, and helpers to look into batches.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use lgtm_pipeline::proto::TimeSeries;
use lgtm_pipeline::SendError;
use lgtm_scrape::relabel::Relabeler;
use lgtm_scrape::target::populate;
use lgtm_scrape::{Batch, ScrapeOptions, SeriesSink, Target};

#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub delay: Duration,
}

impl Reply {
    pub fn text(body: &str) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: body.as_bytes().to_vec(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct ServerState {
    reply: Option<Reply>,
    requests: Vec<HeaderMap>,
}

pub struct Server {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl Server {
    pub async fn start(reply: Reply) -> Server {
        let state = Arc::new(Mutex::new(ServerState { reply: Some(reply), requests: Vec::new() }));
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let state = shared.clone();
            async move { respond(&state, headers).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { addr, state }
    }

    pub fn set(&self, reply: Reply) {
        self.state.lock().unwrap().reply = Some(reply);
    }

    pub fn set_body(&self, body: &str) {
        let mut s = self.state.lock().unwrap();
        let reply = s.reply.as_mut().unwrap();
        reply.body = body.as_bytes().to_vec();
    }

    pub fn requests(&self) -> Vec<HeaderMap> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn respond(state: &Mutex<ServerState>, headers: HeaderMap) -> Response<Body> {
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(headers.clone());
        s.reply.clone().unwrap()
    };
    tokio::time::sleep(reply.delay).await;
    let accepts_gzip = headers.get("accept-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"));
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap())
        .header("content-type", reply.content_type);
    let body = if reply.gzip && accepts_gzip {
        builder = builder.header("content-encoding", "gzip");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&reply.body).unwrap();
        enc.finish().unwrap()
    } else {
        reply.body
    };
    builder.body(Body::from(body)).unwrap()
}

/// A target for `addr` as static discovery would produce it.
pub fn target(addr: SocketAddr, options: ScrapeOptions) -> Arc<Target> {
    let discovered = BTreeMap::from([("__address__".to_string(), addr.to_string())]);
    let t = populate(&discovered, &BTreeMap::new(), &Arc::new(options), &Relabeler::default(), "test")
        .expect("valid target")
        .expect("not dropped");
    Arc::new(t)
}

pub fn options(job: &str) -> ScrapeOptions {
    ScrapeOptions {
        job: job.into(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
        ..ScrapeOptions::default()
    }
}

/// Collects every batch sent.
#[derive(Clone, Default)]
pub struct CollectingSink(pub Arc<Mutex<Vec<Vec<TimeSeries>>>>);

impl SeriesSink for CollectingSink {
    async fn send(&self, batch: Batch) -> Result<(), SendError> {
        let series = batch.decode().expect("a valid WriteRequest");
        self.0.lock().unwrap().push(series);
        Ok(())
    }
}

impl CollectingSink {
    pub fn batches(&self) -> Vec<Vec<TimeSeries>> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until a batch satisfies `pred`, or panics after `within`.
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&[TimeSeries]) -> bool) -> Vec<TimeSeries> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(b) = self.batches().into_iter().find(|b| pred(b)) {
                return b;
            }
            assert!(tokio::time::Instant::now() < deadline, "no matching batch within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn label<'a>(ts: &'a TimeSeries, name: &str) -> Option<&'a str> {
    ts.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
}

pub fn name(ts: &TimeSeries) -> &str {
    label(ts, "__name__").unwrap_or("")
}

/// The single sample value of the series named `metric` (panics unless exactly one).
pub fn value(batch: &[TimeSeries], metric: &str) -> f64 {
    let found: Vec<&TimeSeries> = batch.iter().filter(|t| name(t) == metric).collect();
    assert_eq!(found.len(), 1, "series {metric} in {batch:#?}");
    found[0].samples[0].value
}

pub fn names(batch: &[TimeSeries]) -> Vec<String> {
    let mut n: Vec<String> = batch.iter().map(|t| name(t).to_string()).collect();
    n.sort();
    n
}

pub const STALE_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(ts: &TimeSeries) -> bool {
    ts.samples.iter().all(|s| s.value.to_bits() == STALE_BITS)
}

/// Names of the series carrying a staleness marker.
pub fn stale_names(batch: &[TimeSeries]) -> Vec<String> {
    let mut n: Vec<String> = batch.iter().filter(|t| is_stale(t)).map(|t| name(t).to_string()).collect();
    n.sort();
    n
}

pub const SYNTHETIC: [&str; 5] = [
    "scrape_duration_seconds",
    "scrape_samples_post_metric_relabeling",
    "scrape_samples_scraped",
    "scrape_series_added",
    "up",
];
