//! Loki push: each batch of queued `PushRequest`s is sent as one snappy-compressed protobuf POST
//! to `/loki/api/v1/push`. One request at a time, so the entries of a stream arrive in order.

use lgtm_config::ExporterConfig;
use tokio_util::sync::CancellationToken;

use super::http::{snappy, HttpSender};
use super::outcome::{concatenate, release, Reporter};
use super::retry::{Decision, Retrier};
use crate::queue::DurableQueue;

const EXPORTER: &str = "loki";

const PROTOCOL_HEADERS: &[(&str, &str)] = &[("Content-Type", "application/x-protobuf")];

pub async fn run(cfg: ExporterConfig, tenant: String, queue: DurableQueue, stop: CancellationToken) {
    let Some(sender) = HttpSender::new_until_stopped(EXPORTER, &cfg, &tenant, PROTOCOL_HEADERS, &stop).await else {
        return;
    };
    let retrier = Retrier::new(EXPORTER, &cfg.retry, stop.clone());
    let reporter = Reporter::new(EXPORTER);
    loop {
        let batch = tokio::select! {
            b = queue.next(cfg.batch.max_bytes.bytes() as usize, cfg.batch.max_items, cfg.batch.max_wait.get()) => b,
            _ = stop.cancelled() => None,
        };
        let Some(records) = batch else { break };
        if stop.is_cancelled() {
            release(&queue, &records);
            break;
        }
        let decision = match snappy(&concatenate(&records)) {
            Ok(body) => retrier.run(|| sender.post(body.clone())).await,
            Err(message) => Some(Decision::Rejected { reason: "encode".into(), message }),
        };
        reporter.settle(&queue, &records, decision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::testing::{fast_config, push_and_run, Capture};
    use crate::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
    use crate::Delivery;
    use prost::Message;

    fn push(labels: &str, lines: &[&str]) -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: labels.into(),
                entries: lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64)),
                        line: l.to_string(),
                        structured_metadata: vec![],
                    })
                    .collect(),
                hash: 0,
            }],
        }
    }

    #[tokio::test]
    async fn push_is_snappy_protobuf_with_tenant_and_extra_headers() {
        let capture = Capture::start(vec![]).await;
        let mut cfg = fast_config(&capture.url("/loki/api/v1/push"));
        cfg.headers.insert("X-Extra".into(), "yes".into());
        let records = vec![
            push(r#"{app="a"}"#, &["one", "two"]).encode_to_vec(),
            push(r#"{app="b"}"#, &["three"]).encode_to_vec(),
        ];
        let acks = push_and_run(run, cfg, "team-logs", records, 3).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");

        let reqs = capture.requests();
        let all_streams: Vec<StreamAdapter> = reqs
            .iter()
            .flat_map(|r| {
                assert_eq!(r.path, "/loki/api/v1/push");
                assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
                assert_eq!(r.header("x-scope-orgid"), Some("team-logs"));
                assert_eq!(r.header("x-extra"), Some("yes"));
                let raw = snap::raw::Decoder::new().decompress_vec(&r.body).expect("snappy block");
                PushRequest::decode(raw.as_slice()).expect("PushRequest").streams
            })
            .collect();
        let lines: Vec<(&str, &str)> =
            all_streams.iter().flat_map(|s| s.entries.iter().map(|e| (s.labels.as_str(), e.line.as_str()))).collect();
        assert_eq!(lines, vec![(r#"{app="a"}"#, "one"), (r#"{app="a"}"#, "two"), (r#"{app="b"}"#, "three")]);
    }

    #[tokio::test]
    async fn bad_request_is_rejected_not_retried() {
        let capture = Capture::start(vec![(400, "entry too far behind").into()]).await;
        let cfg = fast_config(&capture.url("/loki/api/v1/push"));
        let acks = push_and_run(run, cfg, "t", vec![push("{a=\"1\"}", &["x"]).encode_to_vec()], 1).await;
        match &acks[0] {
            Some(Delivery::Rejected(msg)) => assert!(msg.contains("entry too far behind"), "{msg}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(capture.requests().len(), 1);
    }
}
