#![no_main]
//! Any byte string as what the Jaeger receivers read: an agent `emitBatch` datagram in Thrift
//! compact and in Thrift binary (UDP), and a collector `Batch` in Thrift binary (HTTP). Each
//! reader must fail cleanly or give a batch that converts to OTLP.

use lgtm_pipeline::receiver::jaeger::{thrift, translate};
use lgtm_pipeline::receiver::span_count;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for decoded in [
        thrift::decode_compact_emit_batch(data),
        thrift::decode_binary_emit_batch(data),
        thrift::decode_binary_batch(data),
    ] {
        if let Ok(batch) = decoded {
            let spans = batch.spans.len();
            let req = translate::to_otlp(batch);
            assert_eq!(span_count(&req), spans, "every span of the batch is converted");
        }
    }
});
