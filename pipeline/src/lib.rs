//! What both modes share between a source and a backend.
//!
//! Data comes in through the sinks of [`Pipeline`] ([`MetricsSink`], [`LogsSink`], [`TracesSink`]):
//! a source hands over a batch and gets back an [`Ack`] that resolves once the backend accepted
//! (or definitively refused) that batch. Each sink feeds one exporter through its own
//! [`queue::DurableQueue`] (bounded memory, spilling to disk segments under `data_dir`). The
//! exporters ([`exporter`]) batch queued records by size and age, send them to Mimir (remote write),
//! Loki (push) or Tempo (OTLP/gRPC), retry what is retryable, and report the outcome back to the
//! queue, which resolves the acknowledgements in order.
//!
//! What it does not do: discover, scrape, tail or sample. No source calls an exporter directly, and
//! no exporter knows which source a batch came from.

pub mod ack;
pub mod backoff;
pub mod exporter;
pub mod health;
pub mod metrics;
pub mod proto;
pub mod queue;
pub mod receiver;
pub mod route;
mod sink;
pub mod tls;
pub mod trace_wire;

pub use ack::{Ack, Delivery};
pub use sink::{
    export_queue_gauges, queue_dir, LogsSink, MetricsSink, Pipeline, PipelineHandle, SendError, TracesSink,
};
