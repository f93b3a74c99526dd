#![no_main]
//! Any byte string as an OTLP/protobuf metrics body taken in parts, as the receivers take it
//! (`receiver::metrics_parts`). Differential against prost: a body the plan accepts, prost accepts
//! too (what prost refuses is refused), and the parts hold exactly the body's data points, in
//! order, each under its own resource, scope and metric (the metric's other fields and its data's
//! temporality and monotonicity as prost keeps them).

use lgtm_pipeline::receiver::metrics_parts::plan;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

/// Each data point with its resource, scope and metric (without its points), all encoded (bytes
/// compare NaNs too).
fn flatten(req: &ExportMetricsServiceRequest) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let mut resource = rm.clone();
        resource.scope_metrics.clear();
        let resource = resource.encode_to_vec();
        for sm in &rm.scope_metrics {
            let mut scope = sm.clone();
            scope.metrics.clear();
            let scope = scope.encode_to_vec();
            for m in &sm.metrics {
                let mut bare = m.clone();
                let points: Vec<Vec<u8>> = match &mut bare.data {
                    None => vec![],
                    Some(Data::Gauge(d)) => d.data_points.drain(..).map(|p| p.encode_to_vec()).collect(),
                    Some(Data::Sum(d)) => d.data_points.drain(..).map(|p| p.encode_to_vec()).collect(),
                    Some(Data::Histogram(d)) => d.data_points.drain(..).map(|p| p.encode_to_vec()).collect(),
                    Some(Data::ExponentialHistogram(d)) => d.data_points.drain(..).map(|p| p.encode_to_vec()).collect(),
                    Some(Data::Summary(d)) => d.data_points.drain(..).map(|p| p.encode_to_vec()).collect(),
                };
                let bare = bare.encode_to_vec();
                for p in points {
                    out.push((resource.clone(), scope.clone(), bare.clone(), p));
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the part size, so that parts cut metrics in every place.
    let Some((&size, body)) = data.split_first() else { return };
    let whole = ExportMetricsServiceRequest::decode(body);
    let Ok(parts) = plan(body, usize::from(size)) else { return };
    let whole = whole.expect("a body the plan accepts is one prost accepts");
    let decoded: Vec<_> = parts.iter().map(|p| p.decode(body)).collect();
    let from_parts: Vec<_> = decoded.iter().flat_map(|d| flatten(&d.request)).collect();
    assert_eq!(from_parts, flatten(&whole), "the parts hold the body's points in order");
    // Every resource of the request, once, in order (each gets its target_info).
    let mut resources: Vec<usize> = decoded.iter().flat_map(|d| d.resources.iter().copied()).collect();
    resources.dedup();
    assert_eq!(resources, (0..whole.resource_metrics.len()).collect::<Vec<_>>());
});
