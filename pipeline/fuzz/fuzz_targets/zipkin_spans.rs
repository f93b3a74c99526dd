#![no_main]
//! Any byte string as a Zipkin `POST /api/v2/spans` body, read as the receiver reads it: the JSON
//! array and the protobuf `ListOfSpans`, each span by span into the OTLP builder. Reading must
//! fail cleanly or give spans whose conversion counts as many spans as were read.

use lgtm_pipeline::receiver::span_count;
use lgtm_pipeline::receiver::zipkin::{json, proto, translate::OtlpBuilder};
use libfuzzer_sys::fuzz_target;

fn read(data: &[u8], reader: fn(&[u8], &mut dyn FnMut(lgtm_pipeline::receiver::zipkin::model::Span) -> Result<(), String>) -> Result<(), String>) {
    let mut builder = OtlpBuilder::default();
    let mut read = 0usize;
    let ok = reader(data, &mut |span| {
        builder.push(span);
        read += 1;
        Ok(())
    });
    if ok.is_ok() {
        assert_eq!(builder.spans(), read);
        let req = builder.finish();
        assert_eq!(span_count(&req), read, "every span read is in the request");
    }
}

fuzz_target!(|data: &[u8]| {
    read(data, |d, take| json::for_each(d, take));
    read(data, |d, take| proto::for_each(d, take));
});
