#![no_main]
//! Any byte string as an OTLP/JSON traces, logs or metrics body, read item by item into protobuf as the
//! receivers read it (`receiver::otlp_json`). Differential against `opentelemetry-proto`'s serde
//! decoding of the whole request: what is read decodes with prost, and where both accept the body
//! they give the same request.

use lgtm_pipeline::receiver::otlp_json::{logs_to_protobuf, metrics_to_protobuf, traces_to_protobuf};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::de::DeserializeOwned;

fn check<M: Message + Default + DeserializeOwned>(data: &[u8], read: fn(&[u8]) -> Result<Vec<u8>, serde_json::Error>) {
    let Ok(ours) = read(data) else { return };
    let ours = M::decode(ours.as_slice()).expect("what the reader writes is protobuf prost decodes");
    if let Ok(whole) = serde_json::from_slice::<M>(data) {
        // Encoded forms compare NaN attribute values too.
        assert_eq!(ours.encode_to_vec(), whole.encode_to_vec(), "the same request as serde's");
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ExportTraceServiceRequest>(data, traces_to_protobuf);
    check::<ExportLogsServiceRequest>(data, logs_to_protobuf);
    check::<ExportMetricsServiceRequest>(data, metrics_to_protobuf);
});
