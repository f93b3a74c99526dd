#![no_main]
//! Any byte string as an OTLP logs export body (protobuf and JSON, as the receivers decode it),
//! then converted to Loki streams as the receiver does. The conversion must not panic, must keep
//! every record, and must hand Loki each stream's entries in timestamp order.

use lgtm_pipeline::receiver::loki::convert;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

fn check(req: &ExportLogsServiceRequest) {
    let records: usize = req.resource_logs.iter().flat_map(|rl| &rl.scope_logs).map(|sl| sl.log_records.len()).sum();
    let converted = convert(req, "fuzz");
    assert_eq!(converted.entries, records, "every record becomes one entry");
    let shipped: usize = converted.streams.iter().map(|s| s.entries.len()).sum();
    assert_eq!(shipped, records);
    for stream in &converted.streams {
        assert!(stream.labels.starts_with('{') && stream.labels.ends_with('}'));
        let times: Vec<i64> = stream.entries.iter().map(|e| e.timestamp.map_or(0, |t| t.unix_nanos())).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "entries out of order");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportLogsServiceRequest::decode(data) {
        check(&req);
    }
    if let Ok(req) = serde_json::from_slice::<ExportLogsServiceRequest>(data) {
        check(&req);
    }
});
