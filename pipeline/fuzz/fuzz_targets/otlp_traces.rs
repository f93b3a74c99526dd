#![no_main]
//! Any byte string as an OTLP trace export body, decoded as the receivers do: protobuf (gRPC and
//! HTTP `application/x-protobuf`, prost with its recursion limit) and JSON (HTTP
//! `application/json`, serde). Decoding must fail cleanly or give a request that re-encodes to
//! the same bytes it decodes from.

use lgtm_pipeline::receiver::span_count;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        let _ = span_count(&req);
        let once = req.encode_to_vec();
        let again = ExportTraceServiceRequest::decode(once.as_slice()).expect("our own encoding decodes");
        assert_eq!(again.encode_to_vec(), once, "protobuf re-encoding is stable");
    }
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        let _ = span_count(&req);
        // What the HTTP receiver answers in JSON must serialize.
        let _ = serde_json::to_vec(&req).expect("a decoded request serializes");
        let _ = req.encode_to_vec();
    }
});
