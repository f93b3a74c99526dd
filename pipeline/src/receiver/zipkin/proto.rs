//! `zipkin.proto3.ListOfSpans` as prost derives written by hand (field numbers from zipkin.proto;
//! no protoc at build time).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::model::{Annotation, Endpoint, Kind, Span};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    #[prost(map = "string, string", tag = "11")]
    pub tags: HashMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Parses a `POST /api/v2/spans` protobuf body.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    for_each(body, |s| {
        spans.push(s);
        Ok(())
    })?;
    Ok(spans)
}

/// Parses a `ListOfSpans` one span at a time (field 1 entries, each decoded on its own), handing
/// each to `take` at once: only one span's decoded protobuf form is held. Other fields are skipped
/// as protobuf allows; an error of `take` is returned as it is.
pub fn for_each(mut body: &[u8], mut take: impl FnMut(Span) -> Result<(), String>) -> Result<(), String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let invalid = |e: prost::DecodeError| format!("invalid Zipkin protobuf: {e}");
    let truncated = || "invalid Zipkin protobuf: truncated field".to_string();
    while !body.is_empty() {
        let (tag, wire_type) = decode_key(&mut body).map_err(invalid)?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut body).map_err(invalid)?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut body).map_err(invalid)?).map_err(|_| truncated())?;
                if len > body.len() {
                    return Err(truncated());
                }
                if tag == 1 {
                    let (entry, rest) = body.split_at(len);
                    body = rest;
                    let proto = <ProtoSpan as prost::Message>::decode(entry).map_err(invalid)?;
                    take(span(proto)?)?;
                    0
                } else {
                    len
                }
            }
            other => return Err(format!("invalid Zipkin protobuf: wire type {other:?} is not supported")),
        };
        if skip > body.len() {
            return Err(truncated());
        }
        body = &body[skip..];
    }
    Ok(())
}

fn span(s: ProtoSpan) -> Result<Span, String> {
    let trace_id = match s.trace_id.len() {
        16 => s.trace_id.as_slice().try_into().unwrap_or([0; 16]),
        8 => {
            let mut id = [0; 16];
            id[8..].copy_from_slice(&s.trace_id);
            id
        }
        n => return Err(format!("trace_id of {n} bytes (8 or 16 expected)")),
    };
    let id: [u8; 8] = s.id.as_slice().try_into().map_err(|_| format!("id of {} bytes (8 expected)", s.id.len()))?;
    let parent_id = match s.parent_id.len() {
        0 => None,
        8 => s.parent_id.as_slice().try_into().ok().filter(|p| *p != [0; 8]),
        n => return Err(format!("parent_id of {n} bytes (8 expected)")),
    };
    let mut tags: Vec<(String, String)> = s.tags.into_iter().collect();
    tags.sort();
    Ok(Span {
        trace_id,
        id,
        parent_id,
        kind: match s.kind {
            1 => Kind::Client,
            2 => Kind::Server,
            3 => Kind::Producer,
            4 => Kind::Consumer,
            _ => Kind::Unspecified,
        },
        name: s.name,
        timestamp_us: s.timestamp,
        duration_us: s.duration,
        local_endpoint: s.local_endpoint.map(endpoint),
        remote_endpoint: s.remote_endpoint.map(endpoint),
        annotations: s
            .annotations
            .into_iter()
            .map(|a| Annotation { timestamp_us: a.timestamp, value: a.value })
            .collect(),
        tags,
        shared: s.shared,
    })
}

fn endpoint(e: ProtoEndpoint) -> Endpoint {
    let ip = if let Ok(v4) = <[u8; 4]>::try_from(e.ipv4.as_slice()) {
        Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(e.ipv6.as_slice()) {
        Ipv6Addr::from(v6).to_string()
    } else {
        String::new()
    };
    Endpoint { service_name: e.service_name, ip, port: u16::try_from(e.port).unwrap_or(0) }
}
