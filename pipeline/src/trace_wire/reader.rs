//! The protobuf wire format, read from a byte slice without allocating.
//!
//! What is accepted is what prost 0.14 accepts (the receivers decoded with prost before, and the
//! differential property test and fuzz target hold the two together): varints of at most 10
//! bytes whose 10th byte is 0 or 1, keys that fit 32 bits with a tag of at least 1 and a wire
//! type of 0 to 5, lengths that do not run past the end, end-group keys only closing their own
//! group.
//!
//! Written here rather than taken from a crate: prost keeps its wire helpers in a `doc(hidden)`
//! module (not a stable API), and the crates that read the wire format without a schema
//! (quick-protobuf, rust-protobuf's `CodedInputStream`) either allocate on unknown fields or
//! differ from prost in what they accept, and matching prost is the point.

use super::WireError;

/// The six wire types of the protobuf encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    SixtyFourBit,
    LengthDelimited,
    StartGroup,
    EndGroup,
    ThirtyTwoBit,
}

/// A cursor over one message's bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Offset of the next byte in this reader's slice.
    #[inline]
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        // Keys, lengths and most scalars of OTLP fit one byte.
        match self.buf.get(self.pos) {
            Some(&byte) if byte < 0x80 => {
                self.pos += 1;
                Ok(u64::from(byte))
            }
            _ => self.varint_slow(),
        }
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError::Truncated { at: self.pos });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                // The 10th byte holds bit 63 only: anything more overflows 64 bits.
                if i == 9 && byte > 1 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(WireError::InvalidVarint { at: self.pos })
    }

    /// A field key: its tag and wire type.
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, WireType), WireError> {
        let at = self.pos;
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| WireError::InvalidKey { at })?;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return Err(WireError::InvalidKey { at }),
        };
        let tag = key >> 3;
        if tag == 0 {
            return Err(WireError::InvalidKey { at });
        }
        Ok((tag, wire_type))
    }

    /// The next `len` bytes.
    #[inline]
    pub(super) fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(WireError::Truncated { at: self.pos });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// The payload of a length-delimited field whose key was just read.
    #[inline]
    pub(super) fn length_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        self.take(len)
    }

    /// Steps over the value of a field the schema does not know. `depth_left` is prost's
    /// recursion budget: skipping needs one, and each nested group takes one more.
    pub(super) fn skip(&mut self, wire_type: WireType, tag: u32, depth_left: u32) -> Result<(), WireError> {
        if depth_left == 0 {
            return Err(WireError::TooDeep { at: self.pos });
        }
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::SixtyFourBit => self.take(8).map(drop),
            WireType::ThirtyTwoBit => self.take(4).map(drop),
            WireType::LengthDelimited => self.length_delimited().map(drop),
            WireType::StartGroup => loop {
                let at = self.pos;
                match self.key()? {
                    (inner, WireType::EndGroup) if inner == tag => return Ok(()),
                    (_, WireType::EndGroup) => return Err(WireError::UnexpectedEndGroup { at }),
                    (inner, wire_type) => self.skip(wire_type, inner, depth_left - 1)?,
                }
            },
            WireType::EndGroup => Err(WireError::UnexpectedEndGroup { at: self.pos }),
        }
    }
}

/// One occurrence of a length-delimited field in a message's bytes.
pub(super) struct Occurrence<'a> {
    /// Offset of its key.
    pub(super) start: usize,
    /// Offset just past it.
    pub(super) end: usize,
    pub(super) body: &'a [u8],
}

/// The occurrences of length-delimited field `tag` in a message's bytes, in order; other fields
/// (and `tag` with another wire type) are skipped. Yields one error and stops where the bytes do
/// not read.
pub(super) fn occurrences(message: &[u8], tag: u32) -> impl Iterator<Item = Result<Occurrence<'_>, WireError>> {
    let mut r = Reader::new(message);
    let mut failed = false;
    std::iter::from_fn(move || {
        while !failed && !r.is_empty() {
            let start = r.pos();
            let next = r.key().and_then(|(t, wire_type)| {
                if t == tag && wire_type == WireType::LengthDelimited {
                    r.length_delimited().map(Some)
                } else {
                    r.skip(wire_type, t, super::RECURSION_LIMIT).map(|()| None)
                }
            });
            match next {
                Ok(Some(body)) => return Some(Ok(Occurrence { start, end: r.pos(), body })),
                Ok(None) => {}
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    })
}
