//! Prints what would be shipped to stdout, one line per series sample, log entry or span.

use std::io::Write;

use lgtm_config::ExporterConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::Signal;
use crate::ack::Delivery;
use crate::metrics;
use crate::proto::{PushRequest, WriteRequest};
use crate::queue::{DurableQueue, Record};

pub async fn run(signal: Signal, cfg: ExporterConfig, queue: DurableQueue, stop: CancellationToken) {
    let name = signal.exporter_name();
    loop {
        let batch = tokio::select! {
            b = queue.next(cfg.batch.max_bytes.bytes() as usize, cfg.batch.max_items, cfg.batch.max_wait.get()) => b,
            _ = stop.cancelled() => None,
        };
        let Some(records) = batch else { break };
        let mut out = std::io::stdout().lock();
        for r in records {
            match render(signal, &r, &mut out) {
                Ok(()) => {
                    metrics::pipeline().sent.with_label_values(&[name]).inc_by(r.items as u64);
                    queue.complete(r.seq, Delivery::Accepted);
                }
                Err(e) => {
                    metrics::pipeline().failed.with_label_values(&[name, "decode"]).inc_by(r.items as u64);
                    queue.complete(r.seq, Delivery::Rejected(e));
                }
            }
        }
        let _ = out.flush();
    }
}

fn render(signal: Signal, r: &Record, out: &mut impl Write) -> Result<(), String> {
    match signal {
        Signal::Metrics => {
            // A record grouped by shard at the source holds its series after a header.
            let body = super::remote_write::routed::write_request(&r.payload).map_err(|e| e.to_string())?;
            let req = WriteRequest::decode(body.as_ref()).map_err(|e| e.to_string())?;
            for ts in req.timeseries {
                let name = ts.labels.iter().find(|l| l.name == "__name__").map(|l| l.value.as_str()).unwrap_or("");
                let labels: Vec<String> = ts
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect();
                for s in ts.samples {
                    let _ = writeln!(out, "metric {name}{{{}}} {} {}", labels.join(","), s.value, s.timestamp);
                }
            }
        }
        Signal::Logs => {
            let req = PushRequest::decode(r.payload.as_ref()).map_err(|e| e.to_string())?;
            for st in req.streams {
                for e in st.entries {
                    let ts = e.timestamp.map(|t| t.unix_nanos()).unwrap_or(0);
                    let _ = writeln!(out, "log {} {} {}", st.labels, ts, e.line);
                }
            }
        }
        Signal::Traces => {
            let req = ExportTraceServiceRequest::decode(r.payload.as_ref()).map_err(|e| e.to_string())?;
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|res| res.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                            Some(s.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        let _ = writeln!(
                            out,
                            "span trace_id={} span_id={} name={:?} service={:?} duration_ns={}",
                            hex(&s.trace_id),
                            hex(&s.span_id),
                            s.name,
                            service,
                            s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
