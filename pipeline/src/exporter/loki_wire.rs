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

/// Calls `on_stream` with the selector of each stream of an encoded `PushRequest` and
/// `on_entry` with each of its encoded `entries` fields (key and length included), in order,
/// while they return `true`. `false` when a callback stopped the walk or the bytes do not read.
pub fn walk(request: &[u8], mut on_stream: impl FnMut(&[u8]) -> bool, mut on_entry: impl FnMut(&[u8]) -> bool) -> bool {
    let mut buf: &[u8] = request;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else { return false };
        if tag != 1 || wire_type != WireType::LengthDelimited {
            if skip(&mut buf, wire_type).is_err() {
                return false;
            }
            continue;
        }
        let Ok(len) = decode_varint(&mut buf) else { return false };
        let len = len as usize;
        if len > buf.len() {
            return false;
        }
        let mut stream = &buf[..len];
        buf.advance(len);
        let whole = stream;
        while !stream.is_empty() {
            let start = whole.len() - stream.len();
            let Ok((tag, wire_type)) = decode_key(&mut stream) else { return false };
            if skip(&mut stream, wire_type).is_err() {
                return false;
            }
            let field = &whole[start..whole.len() - stream.len()];
            let go_on = match (tag, wire_type) {
                (1, WireType::LengthDelimited) => {
                    let mut f = &field[1..];
                    let Ok(n) = decode_varint(&mut f) else { return false };
                    on_stream(&f[..n as usize])
                }
                (2, WireType::LengthDelimited) => on_entry(field),
                _ => true,
            };
            if !go_on {
                return false;
            }
        }
    }
    true
}

/// The body of one encoded `entries` field (without its key and length).
fn entry_body(field: &[u8]) -> Option<&[u8]> {
    let mut buf = field;
    decode_key(&mut buf).ok()?;
    let n = decode_varint(&mut buf).ok()? as usize;
    buf.get(..n)
}

/// The timestamp (Unix nanoseconds; 0 if absent) and the line's length of one encoded `entries`
/// field; `None` if it does not read.
pub fn entry_time_and_len(field: &[u8]) -> Option<(i64, usize)> {
    let mut b = entry_body(field)?;
    let (mut ts, mut len) = (0i64, 0usize);
    while !b.is_empty() {
        let (tag, wire_type) = decode_key(&mut b).ok()?;
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                let n = decode_varint(&mut b).ok()? as usize;
                let mut t = b.get(..n)?;
                b.advance(n);
                let (mut secs, mut nanos) = (0i64, 0i64);
                while !t.is_empty() {
                    let (tag, wire_type) = decode_key(&mut t).ok()?;
                    match (tag, wire_type) {
                        (1, WireType::Varint) => secs = decode_varint(&mut t).ok()? as i64,
                        (2, WireType::Varint) => nanos = i64::from(decode_varint(&mut t).ok()? as i32),
                        _ => skip(&mut t, wire_type).ok()?,
                    }
                }
                ts = secs.saturating_mul(1_000_000_000).saturating_add(nanos);
            }
            (2, WireType::LengthDelimited) => {
                len = decode_varint(&mut b).ok()? as usize;
                if len > b.len() {
                    return None;
                }
                b.advance(len);
            }
            _ => skip(&mut b, wire_type).ok()?,
        }
    }
    Some((ts, len))
}

/// One encoded `entries` field with its line cut to at most `max` bytes, at a UTF-8 character
/// boundary (the line is a protobuf `string`); the other fields as they were.
pub fn truncate_entry(field: &[u8], max: usize) -> Bytes {
    let Some(body) = entry_body(field) else { return Bytes::copy_from_slice(field) };
    let mut kept = Vec::with_capacity(body.len().min(max + 64));
    let mut b = body;
    while !b.is_empty() {
        let start = body.len() - b.len();
        let Ok((tag, wire_type)) = decode_key(&mut b) else { return Bytes::copy_from_slice(field) };
        if tag == 2 && wire_type == WireType::LengthDelimited {
            let Ok(n) = decode_varint(&mut b) else { return Bytes::copy_from_slice(field) };
            let Some(line) = b.get(..n as usize) else { return Bytes::copy_from_slice(field) };
            b.advance(n as usize);
            let mut cut = max.min(line.len());
            while cut > 0 && cut < line.len() && (line[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            encode_key(2, WireType::LengthDelimited, &mut kept);
            encode_varint(cut as u64, &mut kept);
            kept.extend_from_slice(&line[..cut]);
            continue;
        }
        if skip(&mut b, wire_type).is_err() {
            return Bytes::copy_from_slice(field);
        }
        kept.extend_from_slice(&body[start..body.len() - b.len()]);
    }
    let mut out = Vec::with_capacity(kept.len() + 6);
    encode_key(2, WireType::LengthDelimited, &mut out);
    encode_varint(kept.len() as u64, &mut out);
    out.extend_from_slice(&kept);
    Bytes::from(out)
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

    #[test]
    fn walk_sees_every_stream_and_entry_and_reads_their_time_and_length() {
        let req = request();
        let bytes = req.encode_to_vec();
        let seen = std::cell::RefCell::new(Vec::new());
        let whole = walk(
            &bytes,
            |l| {
                seen.borrow_mut().push(String::from_utf8_lossy(l).into_owned());
                true
            },
            |e| {
                seen.borrow_mut().push(format!("{:?}", entry_time_and_len(e)));
                true
            },
        );
        assert!(whole);
        let seen = seen.into_inner();
        let ns = |i: i64| 1_700_000_000_000_000_000 + i;
        assert_eq!(
            seen,
            vec![
                r#"{app="a"}"#.to_string(),
                format!("{:?}", Some((ns(1), 6))),
                format!("{:?}", Some((ns(2), 6))),
                r#"{app="b"}"#.to_string(),
                format!("{:?}", Some((ns(3), 6))),
            ]
        );
        let mut n = 0;
        assert!(
            !walk(
                &bytes,
                |_| true,
                |_| {
                    n += 1;
                    n < 2
                }
            ),
            "stopped by the callback"
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn a_truncated_entry_keeps_its_time_and_metadata_and_cuts_on_a_character() {
        let entry = EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(-5)),
            line: "aé€b".into(), // 1 + 2 + 3 + 1 bytes
            structured_metadata: vec![LabelPairAdapter { name: "stream".into(), value: "stderr".into() }],
        };
        let req = PushRequest {
            streams: vec![StreamAdapter { labels: "{a=\"1\"}".into(), entries: vec![entry.clone()], hash: 0 }],
        };
        let bytes = Bytes::from(req.encode_to_vec());
        let field = streams(&bytes).unwrap()[0].entries[0].clone();
        for (max, line) in [(0, ""), (1, "a"), (2, "a"), (3, "aé"), (5, "aé"), (6, "aé€"), (7, "aé€b"), (100, "aé€b")]
        {
            let cut = truncate_entry(&field, max);
            let mut out = Vec::new();
            encode_stream(&mut out, b"{a=\"1\"}", &[cut], false);
            let back = PushRequest::decode(out.as_slice()).unwrap();
            let mut expected = entry.clone();
            expected.line = line.into();
            assert_eq!(back.streams[0].entries, vec![expected], "max {max}");
        }
        assert_eq!(entry_time_and_len(&field), Some((-5, 7)));
    }
}
