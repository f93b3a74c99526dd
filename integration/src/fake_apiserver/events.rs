//! A steady source of `events.k8s.io/v1` Events for the events-shipping tests: each Event's
//! note carries its sequence number (`seq=<n>`), so what arrives at Loki tells which were lost
//! or shipped twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::FakeApiServer;

/// The Event of `seq`, about Pod `shop/web-0`, happening now.
pub fn event(seq: u64) -> Value {
    // A MicroTime, as the API server writes it: microseconds.
    let nanos = crate::bench_outage::lines::rfc3339_nanos(std::time::SystemTime::now());
    let event_time = format!("{}Z", &nanos[..nanos.len() - 4]);
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("web-0.{seq}"), "namespace": "shop"},
        "eventTime": event_time,
        "reason": "Tick", "type": "Normal", "note": format!("seq={seq}"),
        "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop"}})
}

/// The `seq` an event line shipped to Loki carries (`... msg="seq=<n>"`).
pub fn seq_of_line(line: &str) -> Option<u64> {
    line.split("msg=\"seq=").nth(1)?.trim_end_matches('"').parse().ok()
}

/// Creates Event 0, 1, 2, ... every `every` until [`EventTicker::stop`].
pub struct EventTicker {
    running: Arc<AtomicBool>,
    created: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl EventTicker {
    pub fn start(server: Arc<FakeApiServer>, every: Duration) -> EventTicker {
        let running = Arc::new(AtomicBool::new(true));
        let created = Arc::new(AtomicU64::new(0));
        let (r, c) = (running.clone(), created.clone());
        let task = tokio::spawn(async move {
            while r.load(Ordering::SeqCst) {
                let seq = c.load(Ordering::SeqCst);
                server.apply(event(seq)).expect("create event");
                c.store(seq + 1, Ordering::SeqCst);
                tokio::time::sleep(every).await;
            }
        });
        EventTicker { running, created, task }
    }

    /// Stops creating; returns how many Events were created (seq `0..n`).
    pub async fn stop(self) -> u64 {
        self.running.store(false, Ordering::SeqCst);
        self.task.await.expect("event ticker");
        self.created.load(Ordering::SeqCst)
    }
}
