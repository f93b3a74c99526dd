//! The writing side of the Thrift protocols, for `Batch` only: what a Jaeger client sends. Used by
//! tests and the `jaeger` benchmark to play a client; the agent itself never writes Thrift.

use super::model::{Batch, Log, Process, RefType, Span, SpanRef, Tag, TagValue};

/// `emitBatch(batch)` as a compact-protocol oneway message (a 6831 datagram).
pub fn compact_emit_batch(batch: &Batch) -> Vec<u8> {
    let mut w = CompactWriter { out: Vec::with_capacity(512), last: Vec::new(), current: 0 };
    w.out.extend_from_slice(&[0x82, (4 << 5) | 1]);
    w.varint(1);
    w.binary(b"emitBatch");
    w.begin();
    w.field(1, 12);
    write_batch(&mut w, batch);
    w.stop();
    w.out
}

/// `emitBatch(batch)` as a strict binary-protocol oneway message (a 6832 datagram).
pub fn binary_emit_batch(batch: &Batch) -> Vec<u8> {
    let mut w = BinaryWriter { out: Vec::with_capacity(512) };
    w.out.extend_from_slice(&(0x8001_0000u32 | 4).to_be_bytes());
    w.binary(b"emitBatch");
    w.out.extend_from_slice(&1i32.to_be_bytes());
    w.begin();
    w.field(1, 12);
    write_batch(&mut w, batch);
    w.stop();
    w.out
}

/// A bare `Batch` in the binary protocol (the body of `POST /api/traces`).
pub fn binary_batch(batch: &Batch) -> Vec<u8> {
    let mut w = BinaryWriter { out: Vec::with_capacity(512) };
    write_batch(&mut w, batch);
    w.out
}

/// Types by their binary-protocol numbers; the compact writer maps them.
trait Writer {
    fn begin(&mut self);
    fn field(&mut self, id: i16, binary_type: u8);
    fn stop(&mut self);
    fn i32(&mut self, v: i32);
    fn i64(&mut self, v: i64);
    fn double(&mut self, v: f64);
    fn bool_field(&mut self, id: i16, v: bool);
    fn binary(&mut self, v: &[u8]);
    fn list(&mut self, binary_type: u8, n: usize);
}

fn write_batch<W: Writer>(w: &mut W, b: &Batch) {
    w.begin();
    w.field(1, 12);
    write_process(w, &b.process);
    w.field(2, 15);
    w.list(12, b.spans.len());
    for s in &b.spans {
        write_span(w, s);
    }
    w.stop();
}

fn write_process<W: Writer>(w: &mut W, p: &Process) {
    w.begin();
    w.field(1, 11);
    w.binary(p.service_name.as_bytes());
    if !p.tags.is_empty() {
        w.field(2, 15);
        write_tags(w, &p.tags);
    }
    w.stop();
}

fn write_span<W: Writer>(w: &mut W, s: &Span) {
    let id = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    w.begin();
    w.field(1, 10);
    w.i64(id(&s.trace_id[8..]));
    w.field(2, 10);
    w.i64(id(&s.trace_id[..8]));
    w.field(3, 10);
    w.i64(id(&s.span_id));
    w.field(4, 10);
    w.i64(id(&s.parent_span_id));
    w.field(5, 11);
    w.binary(s.operation_name.as_bytes());
    if !s.references.is_empty() {
        w.field(6, 15);
        w.list(12, s.references.len());
        for r in &s.references {
            write_ref(w, r);
        }
    }
    w.field(7, 8);
    w.i32(s.flags as i32);
    w.field(8, 10);
    w.i64((s.start_unix_nano / 1000) as i64);
    w.field(9, 10);
    w.i64((s.duration_nano / 1000) as i64);
    if !s.tags.is_empty() {
        w.field(10, 15);
        write_tags(w, &s.tags);
    }
    if !s.logs.is_empty() {
        w.field(11, 15);
        w.list(12, s.logs.len());
        for l in &s.logs {
            write_log(w, l);
        }
    }
    w.stop();
}

fn write_ref<W: Writer>(w: &mut W, r: &SpanRef) {
    let id = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    w.begin();
    w.field(1, 8);
    w.i32(if r.ref_type == RefType::ChildOf { 0 } else { 1 });
    w.field(2, 10);
    w.i64(id(&r.trace_id[8..]));
    w.field(3, 10);
    w.i64(id(&r.trace_id[..8]));
    w.field(4, 10);
    w.i64(id(&r.span_id));
    w.stop();
}

fn write_log<W: Writer>(w: &mut W, l: &Log) {
    w.begin();
    w.field(1, 10);
    w.i64((l.time_unix_nano / 1000) as i64);
    w.field(2, 15);
    write_tags(w, &l.fields);
    w.stop();
}

fn write_tags<W: Writer>(w: &mut W, tags: &[Tag]) {
    w.list(12, tags.len());
    for t in tags {
        w.begin();
        w.field(1, 11);
        w.binary(t.key.as_bytes());
        w.field(2, 8);
        match &t.value {
            TagValue::Str(s) => {
                w.i32(0);
                w.field(3, 11);
                w.binary(s.as_bytes());
            }
            TagValue::Double(d) => {
                w.i32(1);
                w.field(4, 4);
                w.double(*d);
            }
            TagValue::Bool(b) => {
                w.i32(2);
                w.bool_field(5, *b);
            }
            TagValue::Long(l) => {
                w.i32(3);
                w.field(6, 10);
                w.i64(*l);
            }
            TagValue::Binary(b) => {
                w.i32(4);
                w.field(7, 11);
                w.binary(b);
            }
        }
        w.stop();
    }
}

struct CompactWriter {
    out: Vec<u8>,
    last: Vec<i16>,
    current: i16,
}

impl CompactWriter {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn compact_type(binary_type: u8) -> u8 {
        match binary_type {
            2 => 1,
            3 => 3,
            4 => 7,
            6 => 4,
            8 => 5,
            10 => 6,
            11 => 8,
            12 => 12,
            13 => 11,
            14 => 10,
            _ => 9,
        }
    }

    fn field_header(&mut self, id: i16, compact_type: u8) {
        let delta = id - self.current;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | compact_type);
        } else {
            self.out.push(compact_type);
            self.zigzag(i64::from(id));
        }
        self.current = id;
    }
}

impl Writer for CompactWriter {
    fn begin(&mut self) {
        self.last.push(self.current);
        self.current = 0;
    }
    fn field(&mut self, id: i16, binary_type: u8) {
        self.field_header(id, Self::compact_type(binary_type));
    }
    fn stop(&mut self) {
        self.out.push(0);
        self.current = self.last.pop().unwrap_or(0);
    }
    fn i32(&mut self, v: i32) {
        self.zigzag(i64::from(v));
    }
    fn i64(&mut self, v: i64) {
        self.zigzag(v);
    }
    fn double(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bool_field(&mut self, id: i16, v: bool) {
        self.field_header(id, if v { 1 } else { 2 });
    }
    fn binary(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
    }
    fn list(&mut self, binary_type: u8, n: usize) {
        let t = Self::compact_type(binary_type);
        if n < 15 {
            self.out.push(((n as u8) << 4) | t);
        } else {
            self.out.push(0xf0 | t);
            self.varint(n as u64);
        }
    }
}

struct BinaryWriter {
    out: Vec<u8>,
}

impl Writer for BinaryWriter {
    fn begin(&mut self) {}
    fn field(&mut self, id: i16, binary_type: u8) {
        self.out.push(binary_type);
        self.out.extend_from_slice(&id.to_be_bytes());
    }
    fn stop(&mut self) {
        self.out.push(0);
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn double(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn bool_field(&mut self, id: i16, v: bool) {
        self.field(id, 2);
        self.out.push(u8::from(v));
    }
    fn binary(&mut self, v: &[u8]) {
        self.i32(v.len() as i32);
        self.out.extend_from_slice(v);
    }
    fn list(&mut self, binary_type: u8, n: usize) {
        self.out.push(binary_type);
        self.i32(n as i32);
    }
}
