//! The OpenTelemetry Python Jaeger exporter (agent UDP compact and collector HTTP) against the
//! Jaeger receivers: the OTLP spans that come out are the spans that were sent.

mod clients;

use std::sync::Arc;

use clients::{assert_same, attr, jaeger_python, send, Collect, Typing};
use lgtm_config::OtlpConfig;
use lgtm_pipeline::receiver::jaeger::JaegerReceiver;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio_util::sync::CancellationToken;

fn config() -> OtlpConfig {
    let mut cfg = OtlpConfig::default();
    cfg.jaeger.thrift_compact = "127.0.0.1:0".into();
    cfg.jaeger.thrift_binary = "127.0.0.1:0".into();
    cfg.jaeger.thrift_http = "127.0.0.1:0".into();
    cfg.jaeger.grpc = "127.0.0.1:0".into();
    cfg
}

async fn start() -> (Arc<Collect>, JaegerReceiverAddrs, CancellationToken) {
    let collect = Arc::new(Collect::default());
    let receiver = JaegerReceiver::bind(&config(), collect.clone()).await.expect("bind");
    let addrs = JaegerReceiverAddrs {
        compact: receiver.thrift_compact_addr().unwrap().port(),
        http: receiver.thrift_http_addr().unwrap().port(),
    };
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));
    (collect, addrs, stop)
}

struct JaegerReceiverAddrs {
    compact: u16,
    http: u16,
}

#[tokio::test]
async fn python_jaeger_agent_exporter_over_udp_compact_arrives_as_the_same_otlp_spans() {
    let Some(python) = jaeger_python() else { return };
    let (collect, addrs, stop) = start().await;
    let port = addrs.compact;
    let sent = tokio::task::spawn_blocking(move || send(&python, "jaeger-agent", port)).await.unwrap();
    let got = collect.wait_for(sent.len()).await;
    assert_same(&sent, &got, Typing::Typed);
    // This exporter sends resource attributes other than service.name as span tags, not process
    // tags; they stay span attributes (process tags -> resource is covered by the unit tests).
    for (_, span) in &got {
        assert_eq!(attr(&span.attributes, "deployment.environment"), Some(&Value::StringValue("test".into())));
    }
    stop.cancel();
}

#[tokio::test]
async fn python_jaeger_collector_exporter_over_http_arrives_as_the_same_otlp_spans() {
    let Some(python) = jaeger_python() else { return };
    let (collect, addrs, stop) = start().await;
    let port = addrs.http;
    let sent = tokio::task::spawn_blocking(move || send(&python, "jaeger-collector", port)).await.unwrap();
    let got = collect.wait_for(sent.len()).await;
    assert_same(&sent, &got, Typing::Typed);
    stop.cancel();
}
