//! Cutting queued trace records into requests a backend takes.
//!
//! Tempo (like every gRPC server built on grpc-go) refuses a message larger than its receive limit
//! (4 MiB by default) with RESOURCE_EXHAUSTED "grpc: received message after decompression larger
//! than max": resending it can never work. So no request is built larger than the exporter's
//! `batch.max_bytes` where the data allows: a record too large is cut by `ResourceSpans` (byte
//! ranges of the record, nothing decoded), and a `ResourceSpans` still too large by spans (decoded
//! with prost: rare, and the only way to repeat the resource on each part). When the backend
//! still says "larger than max", [`halve`] cuts a request in two, down to a single span.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

use crate::trace_wire::{self, EncodedAttribute};

/// Part of one queued record: the encoding of an `ExportTraceServiceRequest` (field 1 only, so
/// pieces one after the other are one request) and how many spans it holds; and what is sent
/// of it: its bytes with the cluster attribute added to every resource that lacks it
/// ([`trace_wire::resource_attribute_parts`]).
#[derive(Debug, Clone)]
pub struct Piece {
    pub bytes: Bytes,
    pub spans: u64,
    /// Index of the record it comes from, in the exporter's batch.
    pub record: usize,
    /// What is sent: slices of `bytes` and the added attribute, one after the other.
    pub parts: Vec<Bytes>,
    /// Length of `parts`.
    pub len: usize,
}

impl Piece {
    pub fn new(bytes: Bytes, spans: u64, record: usize, attribute: Option<&EncodedAttribute>) -> Piece {
        let mut parts = Vec::new();
        let len = match attribute {
            Some(attribute) => trace_wire::resource_attribute_parts(&bytes, attribute, &mut parts),
            None => {
                parts.push(bytes.clone());
                bytes.len()
            }
        };
        Piece { bytes, spans, record, parts, len }
    }
}

/// Bytes a field's key and length prefix may take around a message.
const FRAMING: usize = 6;

/// The pieces of `payload` (`spans` spans), each at most `max_bytes` once `attribute` is added,
/// unless a single span is larger; a record within the bound is one piece, shared, not copied.
pub fn pieces_of(
    record: usize,
    payload: &Bytes,
    spans: u64,
    max_bytes: usize,
    attribute: Option<&EncodedAttribute>,
) -> Vec<Piece> {
    let whole = Piece::new(payload.clone(), spans, record, attribute);
    if whole.len <= max_bytes {
        return vec![whole];
    }
    let Ok(ranges) = trace_wire::resource_spans_ranges(payload) else {
        return vec![whole];
    };
    let mut out = Vec::new();
    for range in ranges {
        let one = payload.slice(range);
        let piece = Piece::new(one.clone(), count_spans(&one), record, attribute);
        if piece.len <= max_bytes {
            out.push(piece);
        } else {
            // The attribute goes on each part of the resource's spans: leave room for it.
            let room = max_bytes.saturating_sub(piece.len - one.len());
            match decode_one(&one) {
                Some(rs) => out.extend(
                    split_spans(rs, room).into_iter().map(|(bytes, spans)| Piece::new(bytes, spans, record, attribute)),
                ),
                None => out.push(piece),
            }
        }
    }
    out
}

/// Groups pieces into requests of at most `max_bytes` as sent (a piece larger than that goes
/// alone).
pub fn group(pieces: Vec<Piece>, max_bytes: usize) -> Vec<Vec<Piece>> {
    let mut out: Vec<Vec<Piece>> = Vec::new();
    let mut size = 0;
    for p in pieces {
        match out.last_mut() {
            Some(last) if size + p.len <= max_bytes => {
                size += p.len;
                last.push(p);
            }
            _ => {
                size = p.len;
                out.push(vec![p]);
            }
        }
    }
    out
}

/// A request cut in two halves: by pieces, else by `ResourceSpans`, else by spans. `None` for a
/// single span.
pub fn halve(mut request: Vec<Piece>, attribute: Option<&EncodedAttribute>) -> Option<(Vec<Piece>, Vec<Piece>)> {
    if request.len() > 1 {
        let second = request.split_off(request.len() / 2);
        return Some((request, second));
    }
    let piece = request.pop()?;
    let record = piece.record;
    let ranges = trace_wire::resource_spans_ranges(&piece.bytes).ok()?;
    if ranges.len() > 1 {
        let mid = ranges.len() / 2;
        let first = piece.bytes.slice(ranges[0].start..ranges[mid - 1].end);
        let second = piece.bytes.slice(ranges[mid].start..ranges[ranges.len() - 1].end);
        return Some((
            vec![Piece::new(first.clone(), count_spans(&first), record, attribute)],
            vec![Piece::new(second.clone(), count_spans(&second), record, attribute)],
        ));
    }
    let rs = decode_one(&piece.bytes)?;
    let mut parts = split_spans(rs, piece.bytes.len().div_ceil(2));
    if parts.len() < 2 {
        return None;
    }
    let second = parts.split_off(parts.len() / 2);
    let as_pieces = |parts: Vec<(Bytes, u64)>| {
        parts.into_iter().map(|(bytes, spans)| Piece::new(bytes, spans, record, attribute)).collect::<Vec<_>>()
    };
    Some((as_pieces(parts), as_pieces(second)))
}

fn count_spans(bytes: &[u8]) -> u64 {
    ExportTraceServiceRequest::decode(bytes)
        .map(|r| r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum())
        .unwrap_or(0)
}

/// The one `ResourceSpans` of a request that holds exactly one.
fn decode_one(bytes: &[u8]) -> Option<ResourceSpans> {
    let mut req = ExportTraceServiceRequest::decode(bytes).ok()?;
    (req.resource_spans.len() == 1).then(|| req.resource_spans.pop()).flatten()
}

/// `rs` as requests of about `max_bytes` at most, each with the resource and the scopes of its
/// spans; a span larger than that alone. Each with its span count.
fn split_spans(rs: ResourceSpans, max_bytes: usize) -> Vec<(Bytes, u64)> {
    let empty = ResourceSpans { resource: rs.resource.clone(), schema_url: rs.schema_url.clone(), scope_spans: vec![] };
    let base_len = empty.encoded_len() + FRAMING;
    let mut out = Vec::new();
    let mut current = empty.clone();
    let (mut len, mut spans) = (base_len, 0u64);
    let flush = |current: &mut ResourceSpans, spans: &mut u64, out: &mut Vec<(Bytes, u64)>| {
        let rs = std::mem::replace(current, empty.clone());
        let req = ExportTraceServiceRequest { resource_spans: vec![rs] };
        out.push((Bytes::from(req.encode_to_vec()), std::mem::take(spans)));
    };
    for ss in rs.scope_spans {
        let scope = ScopeSpans { scope: ss.scope.clone(), schema_url: ss.schema_url.clone(), spans: vec![] };
        let scope_len = scope.encoded_len() + FRAMING;
        let mut scope_open = false;
        for span in ss.spans {
            let span_len = span.encoded_len() + FRAMING;
            if spans > 0 && len + span_len + if scope_open { 0 } else { scope_len } > max_bytes {
                flush(&mut current, &mut spans, &mut out);
                len = base_len;
                scope_open = false;
            }
            if !scope_open {
                current.scope_spans.push(scope.clone());
                len += scope_len;
                scope_open = true;
            }
            current.scope_spans.last_mut().expect("just pushed").spans.push(span);
            len += span_len;
            spans += 1;
        }
    }
    if spans > 0 {
        flush(&mut current, &mut spans, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn request(resources: usize, spans_each: usize, name_len: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![trace_wire::string_attribute("service.name", &format!("svc-{r}"))],
                        ..Default::default()
                    }),
                    scope_spans: (0..2)
                        .map(|s| ScopeSpans {
                            scope: Some(InstrumentationScope { name: format!("scope-{s}"), ..Default::default() }),
                            spans: (0..spans_each / 2)
                                .map(|i| Span {
                                    trace_id: vec![r as u8; 16],
                                    span_id: vec![i as u8 + 1; 8],
                                    name: format!("{r}/{s}/{i}/{}", "x".repeat(name_len)),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// (resource, scope, span name) of every span, in order.
    fn spans_of(pieces: &[Piece]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for p in pieces {
            let req = ExportTraceServiceRequest::decode(p.bytes.as_ref()).expect("a piece decodes");
            assert_eq!(p.spans, count_spans(&p.bytes), "span count of a piece");
            for rs in req.resource_spans {
                let resource = format!("{:?}", rs.resource);
                for ss in rs.scope_spans {
                    let scope = format!("{:?}", ss.scope);
                    out.extend(ss.spans.into_iter().map(|s| (resource.clone(), scope.clone(), s.name)));
                }
            }
        }
        out
    }

    #[test]
    fn a_record_over_the_bound_is_cut_by_resource_then_by_span_and_loses_nothing() {
        let req = request(3, 40, 1000);
        let bytes = Bytes::from(req.encode_to_vec());
        let whole = vec![Piece::new(bytes.clone(), 120, 0, None)];
        for max in [bytes.len(), 60_000, 20_000, 5_000, 500] {
            let pieces = pieces_of(0, &bytes, 120, max, None);
            assert_eq!(spans_of(&pieces), spans_of(&whole), "max {max}");
            for p in &pieces {
                assert!(p.bytes.len() <= max.max(1_200), "a piece of {} bytes for max {max}", p.bytes.len());
            }
            let requests = group(pieces, max);
            assert!(requests.iter().all(|r| r.iter().map(|p| p.bytes.len()).sum::<usize>() <= max.max(1_200)));
        }
    }

    /// With the cluster attribute added as pieces are sent: requests stay within the bound as
    /// sent, nothing is lost, and every resource carries the attribute once (the client's where
    /// it set one).
    #[test]
    fn pieces_with_the_cluster_attribute_stay_within_the_bound_as_sent() {
        let mut req = request(3, 40, 1000);
        // The client set its own on the first resource.
        let theirs = trace_wire::string_attribute(trace_wire::CLUSTER_ATTRIBUTE, "theirs");
        req.resource_spans[0].resource.as_mut().unwrap().attributes.push(theirs);
        let bytes = Bytes::from(req.encode_to_vec());
        let attribute = EncodedAttribute::string(trace_wire::CLUSTER_ATTRIBUTE, "ours");
        let whole = vec![Piece::new(bytes.clone(), 120, 0, None)];
        for max in [bytes.len() + 1_000, bytes.len(), 60_000, 20_000, 5_000, 500] {
            let pieces = pieces_of(0, &bytes, 120, max, Some(&attribute));
            assert_eq!(spans_of(&pieces), spans_of(&whole), "max {max}");
            let mut requests = group(pieces, max);
            // Halving (the backend's "larger than max") keeps the attribute too.
            if let Some((a, b)) = halve(requests.pop().unwrap(), Some(&attribute)) {
                requests.extend([a, b]);
            }
            for r in &requests {
                let sent: Vec<u8> = r.iter().flat_map(|p| &p.parts).flat_map(|b| b.to_vec()).collect();
                assert_eq!(sent.len(), r.iter().map(|p| p.len).sum::<usize>());
                assert!(sent.len() <= max.max(1_300), "a request of {} bytes for max {max}", sent.len());
                let decoded = ExportTraceServiceRequest::decode(&sent[..]).unwrap();
                for rs in decoded.resource_spans {
                    let values: Vec<String> = rs
                        .resource
                        .unwrap()
                        .attributes
                        .iter()
                        .filter(|kv| kv.key == trace_wire::CLUSTER_ATTRIBUTE)
                        .map(|kv| format!("{:?}", kv.value))
                        .collect();
                    assert_eq!(values.len(), 1, "max {max}: {values:?}");
                    let service = format!("{:?}", rs.scope_spans.first().map(|ss| &ss.spans[0].trace_id));
                    let first_resource = service.contains("[0, 0,");
                    assert!(values[0].contains(if first_resource { "theirs" } else { "ours" }), "{values:?}");
                }
            }
        }
    }

    #[test]
    fn halving_ends_at_a_single_span() {
        let req = request(2, 4, 10);
        let bytes = Bytes::from(req.encode_to_vec());
        let mut work = vec![vec![Piece::new(bytes.clone(), 8, 0, None)]];
        let mut singles = Vec::new();
        while let Some(r) = work.pop() {
            match halve(r.clone(), None) {
                Some((a, b)) => {
                    work.push(b);
                    work.push(a);
                }
                None => singles.extend(r),
            }
        }
        assert_eq!(singles.len(), 8);
        assert!(singles.iter().all(|p| p.spans == 1));
        assert_eq!(spans_of(&singles), spans_of(&[Piece::new(bytes, 8, 0, None)]));
    }
}
