#![no_main]
//! Any byte string as what the Jaeger receivers read: an agent `emitBatch` datagram in Thrift
//! compact and in Thrift binary (UDP), and a collector `Batch` in Thrift binary (HTTP). Each
//! reader must fail cleanly or give a batch that converts to OTLP; the UDP datagrams read
//! straight into OTLP bytes (`direct`, what the UDP receivers use) must be refused exactly when
//! the struct decoder refuses them, and otherwise be, byte for byte, prost's encoding of the
//! struct path's request. The input is fed twice to one builder, so that the second datagram is
//! merged into the first one's resource.

use lgtm_pipeline::receiver::jaeger::direct::{RequestBuilder, Thrift};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use lgtm_pipeline::receiver::jaeger::{thrift, translate};
use lgtm_pipeline::receiver::span_count;
use libfuzzer_sys::fuzz_target;
use prost::Message;

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
    for protocol in [Thrift::Compact, Thrift::Binary] {
        let decoded = match protocol {
            Thrift::Compact => thrift::decode_compact_emit_batch(data),
            Thrift::Binary => thrift::decode_binary_emit_batch(data),
        };
        let mut builder = RequestBuilder::new();
        let first = builder.add(data, protocol);
        let second = builder.add(data, protocol);
        assert_eq!(first.is_ok(), decoded.is_ok(), "{protocol:?}: refused by one reader only: {decoded:?} vs {first:?}");
        assert_eq!(first, second);
        let (bytes, spans) = builder.finish();
        match decoded {
            Ok(batch) => {
                let mut want = translate::to_otlp(batch);
                // The second datagram's spans under the first one's resource and scopes.
                for rs in &mut want.resource_spans {
                    for ss in &mut rs.scope_spans {
                        let again = ss.spans.clone();
                        ss.spans.extend(again);
                    }
                }
                assert_eq!(spans, span_count(&want));
                if bytes != want.encode_to_vec() {
                    let got = ExportTraceServiceRequest::decode(&bytes[..]);
                    panic!("{protocol:?}: the direct request differs:\n{got:?}\nwant {want:?}");
                }
            }
            Err(_) => assert!(bytes.is_empty() && spans == 0, "a refused datagram leaves nothing"),
        }
    }
});
