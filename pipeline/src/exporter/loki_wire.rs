//! A queued Loki `PushRequest` cut into its streams and entries without decoding them, and
//! requests put back together from such parts: what the Loki exporter needs when a request has
//! to be taken apart (a stream held back, a request too large, structured metadata refused).
//! The common path sends queued records as they are and never comes here.
//!
//! `PushRequest { repeated StreamAdapter streams = 1 }`, `StreamAdapter { string labels = 1;
//! repeated EntryAdapter entries = 2; uint64 hash = 3 }`, `EntryAdapter { Timestamp timestamp = 1;
//! string line = 2; repeated LabelPairAdapter structured_metadata = 3 }`. The wire helpers are
//! prost's (as the log tailer's batch builder uses them).

use bytes::{Buf, Bytes};
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};

#[derive(Debug, thiserror::Error)]
#[error("not a PushRequest: {0}")]
pub struct WireError(&'static str);

/// One stream of a request: its selector text and its entries, each the whole encoded
/// `entries` field (key and length included).
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub labels: Bytes,
    pub entries: Vec<Bytes>,
}

/// Reads a length-delimited field's body at the front of `buf`, as a slice of `whole` (which
/// `buf` is the tail of).
fn length_delimited(whole: &Bytes, buf: &mut &[u8]) -> Result<Bytes, WireError> {
    let len = decode_varint(buf).map_err(|_| WireError("bad length"))? as usize;
    if len > buf.len() {
        return Err(WireError("length past the end"));
    }
    let start = whole.len() - buf.len();
    buf.advance(len);
    Ok(whole.slice(start..start + len))
}

fn skip(buf: &mut &[u8], wire_type: WireType) -> Result<(), WireError> {
    let n = match wire_type {
        WireType::Varint => {
            decode_varint(buf).map_err(|_| WireError("bad varint"))?;
            0
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => decode_varint(buf).map_err(|_| WireError("bad length"))? as usize,
        _ => return Err(WireError("groups are not used by Loki")),
    };
    if n > buf.len() {
        return Err(WireError("field past the end"));
    }
    buf.advance(n);
    Ok(())
}

/// The streams of an encoded `PushRequest`, in order (a stream may appear more than once).
pub fn streams(request: &Bytes) -> Result<Vec<Stream>, WireError> {
    let mut out = Vec::new();
    let mut buf: &[u8] = request;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| WireError("bad key"))?;
        if tag != 1 || wire_type != WireType::LengthDelimited {
            skip(&mut buf, wire_type)?;
            continue;
        }
        let stream = length_delimited(request, &mut buf)?;
        out.push(stream_of(&stream)?);
    }
    Ok(out)
}

/// Calls `f` with the selector and the encoded size of every stream of an encoded `PushRequest`
/// (see [`for_each_labels`]).
pub fn for_each_stream(request: &[u8], mut f: impl FnMut(&[u8], usize)) {
    let mut buf: &[u8] = request;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else { return };
        if tag != 1 || wire_type != WireType::LengthDelimited {
            if skip(&mut buf, wire_type).is_err() {
                return;
            }
            continue;
        }
        let Ok(len) = decode_varint(&mut buf) else { return };
        let len = len as usize;
        if len > buf.len() {
            return;
        }
        if let Some(labels) = labels_of(&buf[..len]) {
            f(labels, len);
        }
        buf.advance(len);
    }
}

/// The selector of one encoded `StreamAdapter`.
fn labels_of(mut stream: &[u8]) -> Option<&[u8]> {
    while !stream.is_empty() {
        let (tag, wire_type) = decode_key(&mut stream).ok()?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            let n = decode_varint(&mut stream).ok()? as usize;
            return stream.get(..n);
        }
        skip(&mut stream, wire_type).ok()?;
    }
    None
}

/// Calls `f` with the selector of every stream of an encoded `PushRequest`, reading only each
/// stream's first fields (the labels come first in every encoder we know).
pub fn for_each_labels(request: &[u8], mut f: impl FnMut(&[u8])) {
    for_each_stream(request, |labels, _| f(labels));
}

fn stream_of(stream: &Bytes) -> Result<Stream, WireError> {
    let mut labels = Bytes::new();
    let mut entries = Vec::new();
    let mut buf: &[u8] = stream;
    while !buf.is_empty() {
        let start = stream.len() - buf.len();
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| WireError("bad key"))?;
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => labels = length_delimited(stream, &mut buf)?,
            (2, WireType::LengthDelimited) => {
                length_delimited(stream, &mut buf)?;
                entries.push(stream.slice(start..stream.len() - buf.len()));
            }
            // The hash (3) is Loki's own business; anything else is not ours.
            _ => skip(&mut buf, wire_type)?,
        }
    }
    Ok(Stream { labels, entries })
}

/// Appends `stream` as a `streams` field of a `PushRequest`, its entries without their
/// structured metadata when `strip_metadata`.
pub fn encode_stream(out: &mut Vec<u8>, labels: &[u8], entries: &[Bytes], strip_metadata: bool) {
    let mut body = Vec::with_capacity(labels.len() + entries.iter().map(Bytes::len).sum::<usize>() + 8);
    encode_key(1, WireType::LengthDelimited, &mut body);
    encode_varint(labels.len() as u64, &mut body);
    body.extend_from_slice(labels);
    for e in entries {
        if strip_metadata {
            strip_entry(e, &mut body);
        } else {
            body.extend_from_slice(e);
        }
    }
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(&body);
}

/// Copies one encoded `entries` field without the entry's `structured_metadata` (3).
fn strip_entry(field: &Bytes, out: &mut Vec<u8>) {
    let mut buf: &[u8] = field;
    let body = decode_key(&mut buf).ok().and_then(|_| length_delimited(field, &mut buf).ok());
    let Some(body) = body else {
        out.extend_from_slice(field);
        return;
    };
    let mut kept = Vec::with_capacity(body.len());
    let mut b: &[u8] = &body;
    while !b.is_empty() {
        let start = body.len() - b.len();
        let Ok((tag, wire_type)) = decode_key(&mut b) else { break };
        if skip(&mut b, wire_type).is_err() {
            break;
        }
        if tag != 3 {
            kept.extend_from_slice(&body[start..body.len() - b.len()]);
        }
    }
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(kept.len() as u64, out);
    out.extend_from_slice(&kept);
}

/// Whether one encoded `entries` field carries structured metadata.
pub fn has_metadata(field: &Bytes) -> bool {
    let mut buf: &[u8] = field;
    let Some(body) = decode_key(&mut buf).ok().and_then(|_| length_delimited(field, &mut buf).ok()) else {
        return false;
    };
    let mut b: &[u8] = &body;
    while !b.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut b) else { return false };
        if tag == 3 {
            return true;
        }
        if skip(&mut b, wire_type).is_err() {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

    fn request() -> PushRequest {
        let entry = |i: i64, meta: bool| EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i)),
            line: format!("line {i}"),
            structured_metadata: if meta {
                vec![LabelPairAdapter { name: "stream".into(), value: "stderr".into() }]
            } else {
                vec![]
            },
        };
        PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{app="a"}"#.into(),
                    entries: vec![entry(1, true), entry(2, false)],
                    hash: 7,
                },
                StreamAdapter { labels: r#"{app="b"}"#.into(), entries: vec![entry(3, true)], hash: 0 },
            ],
        }
    }

    #[test]
    fn streams_put_back_together_decode_as_the_request() {
        let req = request();
        let bytes = Bytes::from(req.encode_to_vec());
        let streams = streams(&bytes).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].entries.len(), 2);
        let mut out = Vec::new();
        for s in &streams {
            encode_stream(&mut out, &s.labels, &s.entries, false);
        }
        let mut expected = req.clone();
        expected.streams.iter_mut().for_each(|s| s.hash = 0);
        assert_eq!(PushRequest::decode(out.as_slice()).unwrap(), expected);

        let mut seen = Vec::new();
        for_each_labels(&bytes, |l| seen.push(String::from_utf8_lossy(l).into_owned()));
        assert_eq!(seen, vec![r#"{app="a"}"#, r#"{app="b"}"#]);
        let mut sizes = Vec::new();
        for_each_stream(&bytes, |l, n| sizes.push((String::from_utf8_lossy(l).into_owned(), n)));
        let expected_sizes: Vec<(String, usize)> =
            req.streams.iter().map(|s| (s.labels.clone(), s.encoded_len())).collect();
        assert_eq!(sizes, expected_sizes);
        assert!(has_metadata(&streams[0].entries[0]));
        assert!(!has_metadata(&streams[0].entries[1]));
        let mut stripped = Vec::new();
        for s in &streams {
            encode_stream(&mut stripped, &s.labels, &s.entries, true);
        }
        expected.streams.iter_mut().flat_map(|s| &mut s.entries).for_each(|e| e.structured_metadata.clear());
        assert_eq!(PushRequest::decode(stripped.as_slice()).unwrap(), expected);
        assert!(self::streams(&Bytes::from_static(&[0x0a, 0x05, 0x0a])).is_err(), "truncated");
    }
}
