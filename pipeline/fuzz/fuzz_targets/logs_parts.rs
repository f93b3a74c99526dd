#![no_main]
//! Any byte string as an OTLP/protobuf logs body taken in parts, as the receivers take it
//! (`receiver::logs_parts`). Differential against prost: a body prost refuses is refused; a body
//! the plan accepts, prost accepts too, and the parts hold exactly the body's records, in order,
//! each under its own resource and scope.

use lgtm_pipeline::receiver::logs_parts::plan;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

/// Each record with its resource and scope, all encoded (bytes compare NaNs too).
fn flatten(req: &ExportLogsServiceRequest) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let resource = rl.resource.as_ref().map(Message::encode_to_vec).unwrap_or_default();
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref().map(Message::encode_to_vec).unwrap_or_default();
            for r in &sl.log_records {
                out.push((resource.clone(), scope.clone(), r.encode_to_vec()));
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the part size, so that parts cut records in every place.
    let Some((&size, body)) = data.split_first() else { return };
    let whole = ExportLogsServiceRequest::decode(body);
    let Ok(parts) = plan(body, usize::from(size)) else { return };
    let whole = whole.expect("a body the plan accepts is one prost accepts");
    let from_parts: Vec<_> = parts.iter().flat_map(|p| flatten(&p.decode(body))).collect();
    assert_eq!(from_parts, flatten(&whole), "the parts hold the body's records in order");
});
