//! A Loki push receiver that checks every line against the generator and can go down: its
//! listener closed (connection refused) or answering 503, then back on the same port.
//!
//! It keeps one bit per (file, line), grown as lines arrive, and a per-file cursor below which
//! every line has arrived; nothing else is kept, so it runs for hours at tens of MiB/s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use lgtm_pipeline::proto::PushRequest;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::lines;

/// A line number beyond this is not a generated line (and would make the bitmap huge).
const MAX_LINE: u64 = 1 << 32;

/// What the receiver counted.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests accepted.
    pub pushes: u64,
    /// Entries received, valid or not.
    pub entries: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// Entries that are no generated line or differ from it.
    pub altered: u64,
    /// Requests answered 503 while down.
    pub refused_503: u64,
}

#[derive(Default)]
struct Seen {
    bits: Vec<Vec<u64>>,
    /// Per file: every line below it has arrived.
    complete_below: Vec<u64>,
    unique_per_file: Vec<u64>,
    counts: Counts,
}

impl Seen {
    fn mark(&mut self, f: usize, n: u64) {
        if f >= self.bits.len() {
            self.bits.resize_with(f + 1, Vec::new);
            self.complete_below.resize(f + 1, 0);
            self.unique_per_file.resize(f + 1, 0);
        }
        let words = &mut self.bits[f];
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if word >= words.len() {
            let grown = (word + 1).max(words.len() * 2);
            words.resize(grown, 0);
        }
        if words[word] & bit != 0 {
            self.counts.duplicates += 1;
        } else {
            words[word] |= bit;
            self.counts.unique += 1;
            self.unique_per_file[f] += 1;
        }
    }

    /// Advances and returns the cursor of file `f`.
    fn complete_below(&mut self, f: usize) -> u64 {
        let Some(words) = self.bits.get(f) else { return 0 };
        let mut n = self.complete_below[f];
        while let Some(w) = words.get((n / 64) as usize) {
            let bit = 1u64 << (n % 64);
            if w & bit == 0 {
                break;
            }
            n = if n.is_multiple_of(64) && *w == u64::MAX { n + 64 } else { n + 1 };
        }
        self.complete_below[f] = n;
        n
    }
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Seen>>,
    failing: Arc<AtomicBool>,
    line_bytes: Arc<AtomicU64>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The receiver and its port, which outlives each listener.
pub struct CheckingLoki {
    pub addr: SocketAddr,
    shared: Shared,
    server: Option<Server>,
}

/// How the receiver is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DownMode {
    /// The listener is closed: connections are refused.
    Refused,
    /// The listener stays; every push is answered 503.
    Unavailable,
}

impl CheckingLoki {
    pub async fn start() -> anyhow::Result<CheckingLoki> {
        let shared = Shared {
            seen: Arc::default(),
            failing: Arc::new(AtomicBool::new(false)),
            line_bytes: Arc::new(AtomicU64::new(0)),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding the Loki receiver")?;
        let addr = listener.local_addr()?;
        let server = serve(listener, shared.clone());
        Ok(CheckingLoki { addr, shared, server: Some(server) })
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    pub async fn go_down(&mut self, mode: DownMode) {
        match mode {
            DownMode::Unavailable => self.shared.failing.store(true, Ordering::Release),
            DownMode::Refused => {
                if let Some(s) = self.server.take() {
                    stop(s).await;
                }
            }
        }
    }

    /// Accepts pushes again, on the same port.
    pub async fn come_back(&mut self) -> anyhow::Result<()> {
        self.shared.failing.store(false, Ordering::Release);
        if self.server.is_none() {
            let listener = tokio::net::TcpListener::bind(self.addr)
                .await
                .with_context(|| format!("binding the Loki receiver again on {}", self.addr))?;
            self.server = Some(serve(listener, self.shared.clone()));
        }
        Ok(())
    }

    pub fn counts(&self) -> Counts {
        self.shared.seen().counts.clone()
    }

    pub fn line_bytes(&self) -> u64 {
        self.shared.line_bytes.load(Ordering::Relaxed)
    }

    /// Unique lines received per file (files that sent nothing are missing at the end).
    pub fn unique_per_file(&self) -> Vec<u64> {
        self.shared.seen().unique_per_file.clone()
    }

    /// Whether every line below `lines[f]` of every file `f` has arrived.
    pub fn has_all_below(&self, lines: &[u64]) -> bool {
        let mut seen = self.shared.seen();
        lines.iter().enumerate().all(|(f, n)| seen.complete_below(f) >= *n)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            stop(s).await;
        }
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Shared) -> Server {
    let app =
        Router::new().route("/loki/api/v1/push", post(push)).layer(DefaultBodyLimit::disable()).with_state(shared);
    let (stop, task) = crate::serve_until_stopped(listener, app);
    Server { stop, task }
}

/// Closes the listener at once; requests in flight get a few seconds to finish.
async fn stop(server: Server) {
    let _ = server.stop.send(());
    let mut task = server.task;
    if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
        task.abort();
    }
}

async fn push(State(shared): State<Shared>, body: Bytes) -> (StatusCode, &'static str) {
    if shared.failing.load(Ordering::Acquire) {
        shared.seen().counts.refused_503 += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the outage bench");
    }
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&body) else {
        return (StatusCode::BAD_REQUEST, "not a snappy block");
    };
    let Ok(request) = PushRequest::decode(raw.as_slice()) else {
        return (StatusCode::BAD_REQUEST, "not a PushRequest");
    };
    let mut ids = Vec::with_capacity(4096);
    let (mut altered, mut line_bytes) = (0u64, 0u64);
    let mut expected = Vec::with_capacity(512);
    for entry in request.streams.iter().flat_map(|s| &s.entries) {
        let line = entry.line.as_bytes();
        line_bytes += line.len() as u64;
        match lines::id_of(line) {
            Some((f, n)) if n < MAX_LINE => {
                lines::message(f, n, &mut expected);
                if expected == line {
                    ids.push((f as usize, n));
                } else {
                    altered += 1;
                }
            }
            _ => altered += 1,
        }
    }
    shared.line_bytes.fetch_add(line_bytes, Ordering::Relaxed);
    let mut seen = shared.seen();
    seen.counts.pushes += 1;
    seen.counts.entries += ids.len() as u64 + altered;
    seen.counts.altered += altered;
    for (f, n) in ids {
        seen.mark(f, n);
    }
    (StatusCode::NO_CONTENT, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_stops_at_the_first_gap_and_moves_when_it_fills() {
        let mut seen = Seen::default();
        for n in (0..200).filter(|n| *n != 130) {
            seen.mark(2, n);
        }
        seen.mark(2, 5);
        assert_eq!(seen.complete_below(0), 0);
        assert_eq!(seen.complete_below(2), 130);
        seen.mark(2, 130);
        assert_eq!(seen.complete_below(2), 200);
        assert_eq!((seen.counts.unique, seen.counts.duplicates), (200, 1));
        assert_eq!(seen.unique_per_file, vec![0, 0, 200]);
    }
}
