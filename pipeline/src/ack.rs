//! End-to-end acknowledgements: the receiving half goes to the source, the sending half travels
//! with the record through the queue and is resolved when the exporter knows the outcome.

use tokio::sync::oneshot;

/// The final outcome of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The backend accepted it.
    Accepted,
    /// The backend refused it with a non-retryable error (e.g. HTTP 400); it will never be
    /// accepted, so a source may move past it. Counted in `lgtm_agent_exporter_failed_total`.
    Rejected(String),
    /// The queue evicted it to stay under its disk limit (`when_full: drop_oldest`). Counted in
    /// `lgtm_agent_dropped_total`.
    Evicted,
    /// The exporter is disabled; the batch was discarded and counted.
    Discarded,
}

/// The source's half: await it to learn the outcome. If the agent stops before the outcome is
/// known, it resolves to `None`, and a source must not treat the batch as delivered.
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Delivery>);

impl Ack {
    /// Resolves with the outcome, or `None` if the record was left in the queue at shutdown.
    pub async fn outcome(self) -> Option<Delivery> {
        self.0.await.ok()
    }

    /// A pair: the sender travels with the record.
    pub fn pair() -> (AckSender, Ack) {
        let (tx, rx) = oneshot::channel();
        (AckSender(tx), Ack(rx))
    }

    /// Non-blocking check.
    pub fn try_outcome(&mut self) -> Option<Delivery> {
        self.0.try_recv().ok()
    }
}

/// The pipeline's half.
#[derive(Debug)]
pub struct AckSender(oneshot::Sender<Delivery>);

impl AckSender {
    pub fn resolve(self, d: Delivery) {
        // The source may have stopped waiting; that is not an error.
        let _ = self.0.send(d);
    }
}
