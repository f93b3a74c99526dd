#![no_main]
//! Any byte string as an OTLP trace export body, checked in the wire format as the receivers do
//! before keeping it encoded (`trace_wire::ValidTraces::parse`), against prost's decoding: both
//! refuse it, or both take it with the same spans; and the resource rewrite of a body taken
//! decodes to what decode + add the attribute + encode gives.

use bytes::Bytes;
use lgtm_pipeline::receiver::span_count;
use lgtm_pipeline::trace_wire::{add_resource_attribute, EncodedAttribute, ValidTraces};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const KEY: &str = "k8s.cluster.name";

fuzz_target!(|data: &[u8]| {
    let ours = ValidTraces::parse(Bytes::copy_from_slice(data));
    let theirs = ExportTraceServiceRequest::decode(data);
    let (valid, mut decoded) = match (ours, theirs) {
        (Ok(v), Ok(d)) => (v, d),
        (Err(_), Err(_)) => return,
        (ours, theirs) => panic!("parse: {ours:?}, prost: {theirs:?}"),
    };
    assert_eq!(valid.spans(), span_count(&decoded));

    let rewritten = valid.with_resource_attribute(&EncodedAttribute::string(KEY, "fuzz"));
    add_resource_attribute(&mut decoded, KEY, "fuzz");
    let again = ExportTraceServiceRequest::decode(&rewritten[..]).expect("the rewrite decodes");
    // Compared encoded: NaN doubles in attributes are not equal to themselves.
    assert_eq!(again.encode_to_vec(), decoded.encode_to_vec());
});
