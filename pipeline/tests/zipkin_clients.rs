//! The OpenTelemetry Python Zipkin JSON exporter against the Zipkin receiver: the OTLP spans that
//! come out are the spans that were sent (attributes as text: Zipkin tags are strings).

mod clients;

use std::sync::Arc;

use clients::{assert_same, send, zipkin_python, Collect, Typing};
use lgtm_config::OtlpConfig;
use lgtm_pipeline::receiver::zipkin::ZipkinReceiver;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn python_zipkin_json_exporter_arrives_as_the_same_otlp_spans() {
    let Some(python) = zipkin_python() else { return };
    let collect = Arc::new(Collect::default());
    let cfg = OtlpConfig { zipkin: "127.0.0.1:0".into(), ..OtlpConfig::default() };
    let receiver = ZipkinReceiver::bind(&cfg, collect.clone()).await.expect("bind");
    let port = receiver.addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(receiver.run(stop.clone()));
    let sent = tokio::task::spawn_blocking(move || send(&python, "zipkin", port)).await.unwrap();
    let got = collect.wait_for(sent.len()).await;
    assert_same(&sent, &got, Typing::Text);
    stop.cancel();
}
