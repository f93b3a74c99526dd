//! A request checked as prost decodes it, without keeping it: for the receivers that take a
//! request in parts ([`super::logs_parts`], [`super::metrics_parts`]).
//!
//! Decoding a record or a data point on its own is not the same check as decoding it in its
//! request: prost stops at 100 nested messages counted from the request, so a record nested 98
//! deep (an `AnyValue` in a key-value list in an `AnyValue`...) decodes alone and is refused in
//! its request (the `pipeline:logs_parts` fuzz target found it). A [`Skim`] is a prost `Message`
//! that decodes as the request's own type does, with the same recursion budget at every level,
//! but each field into a fresh message dropped at once: it holds one record or one point at a
//! time. Writing `merge_field` by hand is what prost's derive does; it is the only way to pass
//! the decode context down.

use std::marker::PhantomData;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{message, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// The messages whose children are skimmed in turn; every other field is decoded into a fresh
/// message of the level's type.
#[derive(Debug, Clone, Copy)]
pub(super) enum Skim {
    LogsRequest,
    ResourceLogs,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
}

impl Skim {
    /// Checks `body` as `ExportLogsServiceRequest::decode` or
    /// `ExportMetricsServiceRequest::decode` (`self` the request level) would: the error is
    /// prost's.
    pub(super) fn check(mut self, body: &[u8]) -> Result<(), String> {
        self.merge(body).map_err(|e| e.to_string())
    }
}

/// A message decoded field by field, each into a fresh `M` dropped at once: the leaves (a scope
/// of records, a metric's data), whose fields are records or points.
struct Each<M>(PhantomData<fn() -> M>);

impl<M> Default for Each<M> {
    fn default() -> Self {
        Each(PhantomData)
    }
}

impl<M> std::fmt::Debug for Each<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Each")
    }
}

impl<M: Message + Default> Message for Each<M> {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        M::default().merge_field(tag, wire, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {}
}

fn each<M: Message + Default>(wire: WireType, buf: &mut impl Buf, ctx: DecodeContext) -> Result<(), DecodeError> {
    message::merge(wire, &mut Each::<M>::default(), buf, ctx)
}

impl Message for Skim {
    fn encode_raw(&self, _: &mut impl BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use Skim as S;
        // Where prost's derived code names the message and field of an error, so does this.
        let at = |message: &'static str, field: &'static str| {
            move |mut e: DecodeError| {
                e.push(message, field);
                e
            }
        };
        match (*self, tag) {
            (S::LogsRequest, 1) => message::merge(wire, &mut S::ResourceLogs, buf, ctx)
                .map_err(at("ExportLogsServiceRequest", "resource_logs")),
            (S::LogsRequest, _) => ExportLogsServiceRequest::default().merge_field(tag, wire, buf, ctx),
            (S::ResourceLogs, 2) => each::<ScopeLogs>(wire, buf, ctx).map_err(at("ResourceLogs", "scope_logs")),
            (S::ResourceLogs, _) => ResourceLogs::default().merge_field(tag, wire, buf, ctx),
            (S::MetricsRequest, 1) => message::merge(wire, &mut S::ResourceMetrics, buf, ctx)
                .map_err(at("ExportMetricsServiceRequest", "resource_metrics")),
            (S::MetricsRequest, _) => ExportMetricsServiceRequest::default().merge_field(tag, wire, buf, ctx),
            (S::ResourceMetrics, 2) => {
                message::merge(wire, &mut S::ScopeMetrics, buf, ctx).map_err(at("ResourceMetrics", "scope_metrics"))
            }
            (S::ResourceMetrics, _) => ResourceMetrics::default().merge_field(tag, wire, buf, ctx),
            (S::ScopeMetrics, 2) => {
                message::merge(wire, &mut S::Metric, buf, ctx).map_err(at("ScopeMetrics", "metrics"))
            }
            (S::ScopeMetrics, _) => ScopeMetrics::default().merge_field(tag, wire, buf, ctx),
            // The variants of `Metric.data` (a oneof: prost decodes each field of a variant as
            // that variant's message, whichever came before).
            (S::Metric, 5) => each::<Gauge>(wire, buf, ctx).map_err(at("Metric", "data")),
            (S::Metric, 7) => each::<Sum>(wire, buf, ctx).map_err(at("Metric", "data")),
            (S::Metric, 9) => each::<Histogram>(wire, buf, ctx).map_err(at("Metric", "data")),
            (S::Metric, 10) => each::<ExponentialHistogram>(wire, buf, ctx).map_err(at("Metric", "data")),
            (S::Metric, 11) => each::<Summary>(wire, buf, ctx).map_err(at("Metric", "data")),
            (S::Metric, _) => Metric::default().merge_field(tag, wire, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};

    /// An `AnyValue` nested `depth` messages deep (each level a key-value list holding the next).
    fn nested(depth: usize) -> AnyValue {
        let mut value = AnyValue { value: Some(any_value::Value::IntValue(1)) };
        for _ in 0..depth {
            let kv = KeyValue { key: "k".into(), value: Some(value), ..Default::default() };
            value = AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![kv] })) };
        }
        value
    }

    fn logs(depth: usize) -> Vec<u8> {
        let record = LogRecord { body: Some(nested(depth)), ..Default::default() };
        let scope = ScopeLogs { log_records: vec![record], ..Default::default() };
        let resource = ResourceLogs { scope_logs: vec![scope], ..Default::default() };
        ExportLogsServiceRequest { resource_logs: vec![resource] }.encode_to_vec()
    }

    fn metrics(depth: usize) -> Vec<u8> {
        let point = NumberDataPoint {
            attributes: vec![KeyValue { key: "a".into(), value: Some(nested(depth)), ..Default::default() }],
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        };
        let metric = Metric {
            name: "m".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
            ..Default::default()
        };
        let scope = ScopeMetrics { metrics: vec![metric], ..Default::default() };
        let resource = ResourceMetrics { scope_metrics: vec![scope], ..Default::default() };
        ExportMetricsServiceRequest { resource_metrics: vec![resource] }.encode_to_vec()
    }

    /// At every depth around prost's limit, a skim accepts exactly what prost accepts.
    #[test]
    fn the_recursion_limit_is_prosts_at_every_level() {
        let mut refused = (0, 0);
        for depth in 25..40 {
            let body = logs(depth);
            let prost = ExportLogsServiceRequest::decode(&body[..]).is_ok();
            assert_eq!(Skim::LogsRequest.check(&body).is_ok(), prost, "logs nested {depth}");
            refused.0 += usize::from(!prost);
            let body = metrics(depth);
            let prost = ExportMetricsServiceRequest::decode(&body[..]).is_ok();
            assert_eq!(Skim::MetricsRequest.check(&body).is_ok(), prost, "metrics nested {depth}");
            refused.1 += usize::from(!prost);
        }
        // The range crosses the limit for both: some depths accepted, some refused.
        assert!(refused.0 > 0 && refused.0 < 15 && refused.1 > 0 && refused.1 < 15, "{refused:?}");
    }

    #[test]
    fn prosts_errors_are_kept() {
        let mut body = logs(1);
        body.truncate(body.len() - 1);
        assert_eq!(
            Skim::LogsRequest.check(&body).unwrap_err(),
            ExportLogsServiceRequest::decode(&body[..]).unwrap_err().to_string()
        );
        let mut body = metrics(1);
        body.truncate(body.len() - 1);
        let prost = ExportMetricsServiceRequest::decode(&body[..]).unwrap_err().to_string();
        assert_eq!(Skim::MetricsRequest.check(&body).unwrap_err(), prost);
    }
}
