//! A unary gRPC call whose request message the caller frames itself, over tonic's `Channel`
//! (connection, TLS, keep-alive, timeout and user agent as before).
//!
//! tonic compresses a request on every attempt, at gzip level 6 fixed, after copying the message
//! into a buffer of its own; that was 45% of the agent's CPU when ingesting traces. Here the
//! request is compressed once, straight from the queued records, at the configured level, with a
//! compressor kept for the next request ([`GzipPool`]); retries send the same bytes. The answer is
//! read by tonic ([`Streaming`]): status in headers or trailers, gzip, size limit, as before.

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status as DeflateStatus};
use tonic::codec::{CompressionEncoding, Decoder, Streaming};
use tonic::codegen::http::header::{CONTENT_TYPE, TE};
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Method, Uri, Version};
use tonic::codegen::Service;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// gRPC's message prefix: compressed flag and big-endian length.
const PREFIX: usize = 5;

/// RFC 1952 member header: magic, deflate, no flags, no modification time, no extra flags, OS
/// unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A gzip compressor kept between requests (its window and hash tables are allocated once).
///
/// Two encoders, each where it is the faster (`bench traces` requests of 512 spans, 150 KiB,
/// compressed one after the other on this 2-core VM, 2026-12-07): zlib-rs streams over the
/// parts and is the faster at level 1 (0.27 us per span against libdeflate's 0.48, output 7.9x
/// smaller than the input against 8.8x); libdeflate compresses one buffer, so the parts are
/// joined first, and is the faster from level 2 up (at 6: 1.00 us per span against 1.25, output
/// 9.0x smaller against 9.1x).
struct Gzip {
    encoder: Encoder,
    /// The compressed bytes, copied from here into a message of their exact size: a message
    /// buffer sized for the worst case (a quarter of a 1 MiB request) was a fresh mapping, page
    /// faults and an unmapping on every request (buffers from 128 KiB get their own mapping,
    /// `agent/src/memory.rs`). Kept for the next request up to [`KEEP_SCRATCH`].
    output: Vec<u8>,
}

enum Encoder {
    Zlib(Compress),
    Libdeflate {
        compressor: libdeflater::Compressor,
        /// The parts joined, kept for the next request up to [`KEEP_SCRATCH`].
        joined: Vec<u8>,
    },
}

/// Capacity of a compressor's buffers kept between requests (a request is at most
/// `batch.max_bytes`, 1 MiB by default, unless a single span is larger).
const KEEP_SCRATCH: usize = 2 << 20;

impl Gzip {
    /// `level`: 1 (fastest) to 9 (smallest).
    fn new(level: u32) -> Gzip {
        let encoder = match level.clamp(1, 9) {
            1 => Encoder::Zlib(Compress::new(Compression::new(1), false)),
            level => {
                let level = libdeflater::CompressionLvl::new(level as i32).unwrap_or_default();
                Encoder::Libdeflate { compressor: libdeflater::Compressor::new(level), joined: Vec::new() }
            }
        };
        Gzip { encoder, output: Vec::new() }
    }

    /// `parts`, one after the other, as one gzip member in a gRPC message (prefix included).
    /// `None` when the encoder failed (not expected; the caller then sends the parts
    /// uncompressed rather than drop them).
    fn message(&mut self, parts: &[&Bytes]) -> Option<Vec<u8>> {
        let output = &mut self.output;
        let len = match &mut self.encoder {
            Encoder::Zlib(deflate) => {
                output.clear();
                zlib(deflate, parts, output).then_some(output.len())
            }
            Encoder::Libdeflate { compressor, joined } => {
                joined.clear();
                parts.iter().for_each(|p| joined.extend_from_slice(p));
                let bound = compressor.gzip_compress_bound(joined.len());
                if output.len() < bound {
                    output.resize(bound, 0);
                }
                let compressed = compressor.gzip_compress(joined, &mut output[..bound]).ok();
                if joined.capacity() > KEEP_SCRATCH {
                    *joined = Vec::new();
                }
                compressed
            }
        };
        let framed = len.map(|len| {
            let mut framed = Vec::with_capacity(PREFIX + len);
            framed.push(1);
            framed.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            framed.extend_from_slice(&output[..len]);
            framed
        });
        if output.capacity() > KEEP_SCRATCH {
            *output = Vec::new();
        }
        framed
    }
}

/// The compressors of one exporter, shared by its senders: one is taken for each request being
/// compressed, and made when none is free. Compressing does not wait, so there are at most as
/// many as requests compressed at once (no more than the runtime's threads), not one per sender:
/// a zlib-rs compressor's state is about 320 KiB once used (VmRSS of 16 of them, each after
/// compressing a 150 KiB request of the trace bench, at level 1 or 6). The last one used is taken
/// first, and one left unused for [`GZIP_MAX_IDLE`] is freed when another is put back: after a
/// burst made several, a node's steady trickle of spans keeps one (`bench node` had four).
pub struct GzipPool {
    level: u32,
    /// Idle compressors and when each was put back, the last one used at the end.
    idle: std::sync::Mutex<Vec<(Gzip, std::time::Instant)>>,
}

/// A compressor not used for this long is freed (see [`GzipPool`]).
pub const GZIP_MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

impl GzipPool {
    /// `level`: 1 (fastest) to 9 (smallest).
    pub fn new(level: u32) -> GzipPool {
        GzipPool { level, idle: std::sync::Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Gzip {
        self.idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .map(|(gzip, _)| gzip)
            .unwrap_or_else(|| Gzip::new(self.level))
    }

    fn put(&self, gzip: Gzip) {
        self.put_at(gzip, std::time::Instant::now());
    }

    fn put_at(&self, gzip: Gzip, now: std::time::Instant) {
        let expired: Vec<(Gzip, std::time::Instant)> = match self.idle.lock() {
            Ok(mut idle) => {
                let keep_from = idle
                    .iter()
                    .position(|(_, at)| now.saturating_duration_since(*at) <= GZIP_MAX_IDLE)
                    .unwrap_or(idle.len());
                let expired = idle.drain(..keep_from).collect();
                idle.push((gzip, now));
                expired
            }
            Err(_) => Vec::new(),
        };
        // Freed outside the lock.
        drop(expired);
    }

    /// Compressors made so far and not in use.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// zlib-rs over `parts`, one deflate stream: `false` when deflate failed or stopped making
/// progress (neither happens with a stream reset and room to write).
fn zlib(deflate: &mut Compress, parts: &[&Bytes], out: &mut Vec<u8>) -> bool {
    deflate.reset();
    let mut crc = Crc::new();
    out.extend_from_slice(&GZIP_HEADER);
    for part in parts {
        crc.update(part);
        let mut input = &part[..];
        while !input.is_empty() {
            reserve(out);
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            if deflate.compress_vec(input, out, FlushCompress::None).is_err() {
                return false;
            }
            let used = (deflate.total_in() - before_in) as usize;
            if used == 0 && deflate.total_out() == before_out {
                return false;
            }
            input = &input[used..];
        }
    }
    loop {
        reserve(out);
        let before_out = deflate.total_out();
        match deflate.compress_vec(&[], out, FlushCompress::Finish) {
            Ok(DeflateStatus::StreamEnd) => break,
            Ok(_) if deflate.total_out() > before_out => {}
            _ => return false,
        }
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    true
}

/// Room for the compressor to write into: `compress_vec` writes only into spare capacity.
fn reserve(out: &mut Vec<u8>) {
    if out.capacity() - out.len() < 4096 {
        out.reserve(out.capacity().max(64 << 10));
    }
}

/// `parts` one after the other as one gRPC message, gzip-compressed with a compressor of `gzip`.
pub fn message(parts: &[&Bytes], gzip: Option<&GzipPool>) -> Bytes {
    if let Some(pool) = gzip {
        let mut gzip = pool.take();
        let framed = gzip.message(parts);
        pool.put(gzip);
        if let Some(framed) = framed {
            return Bytes::from(framed);
        }
    }
    // The flag says whether this message is compressed, whatever `grpc-encoding` says.
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(PREFIX + len);
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    parts.iter().for_each(|p| out.extend_from_slice(p));
    Bytes::from(out)
}

/// Sends `message` (framed by [`message`]; `compressed` as framed) to `path` with `headers` (the
/// request's metadata) and reads the one answer with `decoder`, at most `max_response` bytes.
/// Errors are tonic's: a status from the server, or one made from the transport failure (with
/// it as the status' source).
pub async fn unary<D>(
    channel: &Channel,
    path: &'static str,
    mut headers: HeaderMap,
    message: Bytes,
    compressed: bool,
    decoder: D,
    max_response: usize,
) -> Result<D::Item, Status>
where
    D: Decoder<Error = Status> + Send + 'static,
{
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if compressed {
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    headers.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
    let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(message)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static(path);
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;

    let mut channel = channel.clone();
    // As tonic's generated clients report a channel that is not ready.
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let response = channel.call(request).await.map_err(|e| Status::from_error(Box::new(e)))?;

    let encoding = match response.headers().get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => None,
        Some(b"gzip") => Some(CompressionEncoding::Gzip),
        Some(other) => {
            let other = String::from_utf8_lossy(other);
            return Err(Status::unimplemented(format!("answer compressed with {other:?}, which was not asked for")));
        }
    };
    // A status in the headers: an answer without a message ("trailers only").
    if let Some(status) = Status::from_header_map(response.headers()) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    let status_code = response.status();
    let mut answer = Streaming::new_response(decoder, response.into_body(), status_code, encoding, Some(max_response));
    let message = answer.message().await?.ok_or_else(|| Status::internal("Missing response message."))?;
    // A status in the trailers that is not OK comes out here.
    answer.trailers().await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn parts() -> Vec<Bytes> {
        let text: Vec<u8> =
            (0..300_000u32).flat_map(|i| format!("span {} of trace {}; ", i % 977, i / 6).into_bytes()).collect();
        vec![Bytes::from(text[..1000].to_vec()), Bytes::new(), Bytes::from(text[1000..].to_vec())]
    }

    fn unframe(message: &[u8]) -> (u8, &[u8]) {
        let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(message.len(), PREFIX + len, "the prefix gives the message's length");
        (message[0], &message[PREFIX..])
    }

    #[test]
    fn gzip_messages_decompress_to_the_parts_at_every_level_and_with_a_reused_compressor() {
        let parts = parts();
        let parts: Vec<&Bytes> = parts.iter().collect();
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        let mut sizes = Vec::new();
        for level in [1, 6, 9] {
            let gzip = GzipPool::new(level);
            for _ in 0..2 {
                let framed = message(&parts, Some(&gzip));
                let (flag, body) = unframe(&framed);
                assert_eq!(flag, 1);
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
                assert_eq!(out, whole, "level {level}");
                // One member, nothing after it.
                let mut multi = Vec::new();
                flate2::read::MultiGzDecoder::new(body).read_to_end(&mut multi).unwrap();
                assert_eq!(multi.len(), whole.len());
                sizes.push(body.len());
            }
            assert_eq!(gzip.idle(), 1, "one request after the other: one compressor, taken again");
        }
        assert!(sizes[0] > sizes[2], "level 1 is larger than level 6: {sizes:?}");
        assert_eq!(sizes[0], sizes[1], "the same bytes after reset");
    }

    /// Compressors a burst made are freed once unused for `GZIP_MAX_IDLE`, the last one used kept.
    #[test]
    fn compressors_left_unused_after_a_burst_are_freed() {
        let pool = GzipPool::new(1);
        let t0 = std::time::Instant::now();
        // Three requests compressed at once: three compressors.
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        for g in [a, b, c] {
            pool.put_at(g, t0);
        }
        assert_eq!(pool.idle(), 3);
        // Then one request at a time: the same compressor each time, the others idle.
        let one = pool.take();
        pool.put_at(one, t0 + std::time::Duration::from_secs(5));
        assert_eq!(pool.idle(), 3, "none idle for long yet");
        let one = pool.take();
        pool.put_at(one, t0 + GZIP_MAX_IDLE + std::time::Duration::from_secs(1));
        assert_eq!(pool.idle(), 1, "the two left unused since the burst are freed");
    }

    /// Data that does not compress (libdeflate's first try, into a quarter of the input, fails)
    /// and empty input still come out whole, at either encoder's levels.
    #[test]
    fn incompressible_and_empty_parts_come_out_whole() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        let empty = Bytes::new();
        for level in [1, 2, 6, 9] {
            let gzip = GzipPool::new(level);
            for parts in [vec![&noise, &empty, &noise], vec![], vec![&empty]] {
                let whole: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
                let framed = message(&parts, Some(&gzip));
                let (flag, body) = unframe(&framed);
                assert_eq!(flag, 1, "level {level}");
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
                assert_eq!(out, whole, "level {level}");
            }
        }
    }

    #[test]
    fn uncompressed_messages_are_the_parts() {
        let parts = parts();
        let parts: Vec<&Bytes> = parts.iter().collect();
        let framed = message(&parts, None);
        let (flag, body) = unframe(&framed);
        assert_eq!(flag, 0);
        assert_eq!(body, parts.iter().flat_map(|p| p.to_vec()).collect::<Vec<_>>());
        let empty = message(&[], None);
        assert_eq!(unframe(&empty), (0, &[][..]));
    }
}
