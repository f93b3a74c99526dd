//! Zipkin v2 JSON: an array of spans with hex ids, microsecond times and string tags.
//! Lenient where clients differ: ids shorter than 16/32 hex digits are left-padded, and tag values
//! that are numbers or booleans are taken as their text.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{Annotation, Endpoint, Kind, Span};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    shared: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    timestamp: u64,
    value: String,
}

/// Parses a `POST /api/v2/spans` JSON body.
pub fn decode(body: &[u8]) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    for_each(body, |s| {
        spans.push(s);
        Ok(())
    })?;
    Ok(spans)
}

/// Parses a `POST /api/v2/spans` JSON body one span at a time, handing each to `take` as soon as
/// it is read: only one span's JSON form is ever held, whatever the array's length. An error of
/// `take` stops the parse and is returned as it is.
pub fn for_each(body: &[u8], take: impl FnMut(Span) -> Result<(), String>) -> Result<(), String> {
    let mut taken_error = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let result =
        serde::Deserializer::deserialize_seq(&mut de, Spans { take, error: &mut taken_error }).and_then(|()| de.end());
    if let Some(e) = taken_error {
        return Err(e);
    }
    result.map_err(|e| format!("invalid Zipkin JSON: {e}"))
}

/// The array's visitor: each element converted and handed over before the next is read.
struct Spans<'e, F> {
    take: F,
    /// Why `take` refused, told apart from a JSON error.
    error: &'e mut Option<String>,
}

impl<'de, F: FnMut(Span) -> Result<(), String>> serde::de::Visitor<'de> for Spans<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of Zipkin v2 spans")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(json) = seq.next_element::<JsonSpan>()? {
            let converted = span(json).map_err(serde::de::Error::custom)?;
            if let Err(e) = (self.take)(converted) {
                *self.error = Some(e.clone());
                return Err(serde::de::Error::custom(e));
            }
        }
        Ok(())
    }
}

fn span(s: JsonSpan) -> Result<Span, String> {
    let trace_id = hex_id::<16>("traceId", &s.trace_id)?;
    let id = hex_id::<8>("id", &s.id)?;
    let parent_id = match s.parent_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(hex_id::<8>("parentId", p)?).filter(|p| *p != [0; 8]),
    };
    let tags = s
        .tags
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    Ok(Span {
        trace_id,
        id,
        parent_id,
        kind: kind(s.kind.as_deref()),
        name: s.name.unwrap_or_default(),
        timestamp_us: s.timestamp.unwrap_or(0),
        duration_us: s.duration.unwrap_or(0),
        local_endpoint: s.local_endpoint.map(endpoint),
        remote_endpoint: s.remote_endpoint.map(endpoint),
        annotations: s
            .annotations
            .into_iter()
            .map(|a| Annotation { timestamp_us: a.timestamp, value: a.value })
            .collect(),
        tags,
        shared: s.shared.unwrap_or(false),
    })
}

fn endpoint(e: JsonEndpoint) -> Endpoint {
    Endpoint {
        service_name: e.service_name.unwrap_or_default(),
        ip: e.ipv4.filter(|s| !s.is_empty()).or(e.ipv6).unwrap_or_default(),
        port: e.port.unwrap_or(0),
    }
}

pub(super) fn kind(k: Option<&str>) -> Kind {
    match k.map(str::to_ascii_uppercase).as_deref() {
        Some("CLIENT") => Kind::Client,
        Some("SERVER") => Kind::Server,
        Some("PRODUCER") => Kind::Producer,
        Some("CONSUMER") => Kind::Consumer,
        _ => Kind::Unspecified,
    }
}

/// A hex id of at most `N` bytes, left-padded with zeros.
fn hex_id<const N: usize>(field: &str, hex: &str) -> Result<[u8; N], String> {
    let bad = || {
        format!("{field} {:?} is not a hex id of at most {} digits", hex.chars().take(40).collect::<String>(), N * 2)
    };
    if hex.is_empty() || hex.len() > N * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    let digits: Vec<u8> = hex.bytes().map(|b| (b as char).to_digit(16).unwrap_or(0) as u8).collect();
    // Right-aligned: the last digit is the low nibble of the last byte.
    for (i, d) in digits.iter().rev().enumerate() {
        out[N - 1 - i / 2] |= if i % 2 == 0 { *d } else { *d << 4 };
    }
    Ok(out)
}
