//! `jaeger.thrift`'s `Batch`, `Process`, `Span`, `Tag`, `Log` and `SpanRef`, and `agent.thrift`'s
//! `emitBatch` call, decoded by hand over [`Protocol`]: there is no Thrift compiler at build time,
//! and the IDL is small and frozen. Unknown fields are skipped (newer clients may add some);
//! missing required fields that identify a span are errors.

use super::direct::ValueAt;
use super::model::{micros_to_nanos, span_id, trace_id, Batch, Log, Process, RefType, Span, SpanRef, Tag, TagValue};
use super::protocol::{Binary, Compact, DecodeError, Protocol, TType};

/// Message type of a oneway call (`emitBatch` is oneway).
const ONEWAY: u8 = 4;
const CALL: u8 = 1;

/// An agent-protocol datagram (port 6831): a compact `Agent.emitBatch(1: Batch)` call.
pub fn decode_compact_emit_batch(datagram: &[u8]) -> Result<Batch, DecodeError> {
    let mut p = Compact::new(datagram);
    let (name, kind) = p.message()?;
    emit_batch_args(&mut p, &name, kind)
}

/// An agent-protocol datagram (port 6832): a binary `Agent.emitBatch(1: Batch)` call.
pub fn decode_binary_emit_batch(datagram: &[u8]) -> Result<Batch, DecodeError> {
    let mut p = Binary::new(datagram);
    let (name, kind) = p.message()?;
    emit_batch_args(&mut p, &name, kind)
}

/// A collector-protocol body (`POST /api/traces`): a bare `Batch` in the binary protocol.
pub fn decode_binary_batch(body: &[u8]) -> Result<Batch, DecodeError> {
    batch(&mut Binary::new(body))
}

/// A collector-protocol body read one span at a time: `hand_on` gets the batch's process and the
/// spans read since the last call each time they took at least `part_bytes` of the body, and the
/// rest at the end; it returns false to stop reading (the next stage refused a part). Spans read
/// before the process (Thrift writes fields in id order, so only from unusual clients) wait for
/// it. Accepts and refuses what [`decode_binary_batch`] does, but a body broken after its first
/// part has had parts handed on: check it first with `part_bytes` 0 and a `hand_on` that drops.
pub fn binary_batch_in_parts(
    body: &[u8],
    part_bytes: usize,
    mut hand_on: impl FnMut(&Process, Vec<Span>) -> bool,
) -> Result<(), DecodeError> {
    let mut p = Binary::new(body);
    let mut process = None;
    let mut waiting = Vec::new();
    let mut handed = false;
    p.struct_begin();
    while let Some((t, id)) = p.field()? {
        match (id, t) {
            (1, TType::Struct) => process = Some(self::process(&mut p)?),
            (2, TType::List) => {
                let at = p.position();
                let (t, n) = p.list()?;
                if t != TType::Struct {
                    return Err(DecodeError::Invalid { what: "list element type", at });
                }
                let mut since = p.position();
                for _ in 0..n {
                    waiting.push(span(&mut p)?);
                    if p.position() - since >= part_bytes {
                        if let Some(process) = &process {
                            handed = true;
                            if !hand_on(process, std::mem::take(&mut waiting)) {
                                return Ok(());
                            }
                            since = p.position();
                        }
                    }
                }
            }
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    let process = process.ok_or(DecodeError::Missing("Batch.process"))?;
    if !waiting.is_empty() || !handed {
        hand_on(&process, waiting);
    }
    Ok(())
}

fn emit_batch_args<P: Protocol>(p: &mut P, name: &str, kind: u8) -> Result<Batch, DecodeError> {
    if name != "emitBatch" || (kind != ONEWAY && kind != CALL) {
        // `emitZipkinBatch` (Zipkin Thrift spans over the agent port) is not served.
        return Err(DecodeError::UnexpectedMessage(name.chars().take(64).collect()));
    }
    let mut out = None;
    p.struct_begin();
    while let Some((t, id)) = p.field()? {
        match (id, t) {
            (1, TType::Struct) => out = Some(batch(p)?),
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    out.ok_or(DecodeError::Missing("emitBatch.batch"))
}

fn batch<P: Protocol>(p: &mut P) -> Result<Batch, DecodeError> {
    let mut process = None;
    let mut spans = None;
    p.struct_begin();
    while let Some((t, id)) = p.field()? {
        match (id, t) {
            (1, TType::Struct) => process = Some(self::process(p)?),
            (2, TType::List) => spans = Some(list(p, TType::Struct, span)?),
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    Ok(Batch { process: process.ok_or(DecodeError::Missing("Batch.process"))?, spans: spans.unwrap_or_default() })
}

fn process<P: Protocol>(p: &mut P) -> Result<Process, DecodeError> {
    let mut out = Process::default();
    p.struct_begin();
    while let Some((t, id)) = p.field()? {
        match (id, t) {
            (1, TType::Binary) => out.service_name = p.string()?,
            (2, TType::List) => out.tags = list(p, TType::Struct, tag)?,
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    Ok(out)
}

fn span<P: Protocol>(p: &mut P) -> Result<Span, DecodeError> {
    let mut out = Span::default();
    let (mut low, mut high, mut id, mut seen) = (0i64, 0i64, 0i64, 0u8);
    let mut start = 0i64;
    let mut duration = 0i64;
    p.struct_begin();
    while let Some((t, fid)) = p.field()? {
        match (fid, t) {
            (1, TType::I64) => (low, seen) = (p.i64()?, seen | 1),
            (2, TType::I64) => high = p.i64()?,
            (3, TType::I64) => (id, seen) = (p.i64()?, seen | 2),
            (4, TType::I64) => out.parent_span_id = span_id(p.i64()?),
            (5, TType::Binary) => out.operation_name = p.string()?,
            (6, TType::List) => out.references = list(p, TType::Struct, span_ref)?,
            (7, TType::I32) => out.flags = p.i32()? as u32,
            (8, TType::I64) => start = p.i64()?,
            (9, TType::I64) => duration = p.i64()?,
            (10, TType::List) => out.tags = list(p, TType::Struct, tag)?,
            (11, TType::List) => out.logs = list(p, TType::Struct, log)?,
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    if seen & 1 == 0 {
        return Err(DecodeError::Missing("Span.traceIdLow"));
    }
    if seen & 2 == 0 {
        return Err(DecodeError::Missing("Span.spanId"));
    }
    out.trace_id = trace_id(high, low);
    out.span_id = span_id(id);
    out.start_unix_nano = micros_to_nanos(start);
    out.duration_nano = micros_to_nanos(duration);
    Ok(out)
}

pub(super) fn span_ref<P: Protocol>(p: &mut P) -> Result<SpanRef, DecodeError> {
    let (mut kind, mut low, mut high, mut id) = (0i32, 0i64, 0i64, 0i64);
    p.struct_begin();
    while let Some((t, fid)) = p.field()? {
        match (fid, t) {
            (1, TType::I32) => kind = p.i32()?,
            (2, TType::I64) => low = p.i64()?,
            (3, TType::I64) => high = p.i64()?,
            (4, TType::I64) => id = p.i64()?,
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    let ref_type = if kind == 0 { RefType::ChildOf } else { RefType::FollowsFrom };
    Ok(SpanRef { ref_type, trace_id: trace_id(high, low), span_id: span_id(id) })
}

fn tag<P: Protocol>(p: &mut P) -> Result<Tag, DecodeError> {
    // Read once, by the direct reader's parser, then copied out of the input.
    let at = super::direct::tag(p)?;
    let input = p.input();
    let key = std::str::from_utf8(&input[at.key]).expect("checked as read").to_string();
    let value = match at.value {
        ValueAt::Str(r) => TagValue::Str(String::from_utf8_lossy(&input[r]).into_owned()),
        ValueAt::Double(d) => TagValue::Double(d),
        ValueAt::Bool(b) => TagValue::Bool(b),
        ValueAt::Long(l) => TagValue::Long(l),
        ValueAt::Binary(r) => TagValue::Binary(input[r].to_vec()),
    };
    Ok(Tag { key, value })
}

fn log<P: Protocol>(p: &mut P) -> Result<Log, DecodeError> {
    let mut out = Log { time_unix_nano: 0, fields: Vec::new() };
    p.struct_begin();
    while let Some((t, fid)) = p.field()? {
        match (fid, t) {
            (1, TType::I64) => out.time_unix_nano = micros_to_nanos(p.i64()?),
            (2, TType::List) => out.fields = list(p, TType::Struct, tag)?,
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    Ok(out)
}

/// A list whose elements must be of type `want`; the count was checked against the bytes left,
/// so the preallocation is bounded by the input's size.
fn list<P: Protocol, T>(
    p: &mut P,
    want: TType,
    mut element: impl FnMut(&mut P) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let at = p.position();
    let (t, n) = p.list()?;
    if t != want {
        return Err(DecodeError::Invalid { what: "list element type", at });
    }
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(element(p)?);
    }
    Ok(out)
}
