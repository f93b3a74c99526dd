//! The fields of one message of a checked request, for consumers that read spans without
//! decoding them (the tail sampler reads trace IDs, times, status and a few attributes).
//!
//! Only for bytes [`super::ValidTraces::parse`] checked (or prost encoded): reading stops at the
//! first field that does not read, which checked bytes never have. What a field means is the
//! caller's (the OTLP tags); how prost decodes repeated occurrences is too: the last occurrence of
//! a scalar wins, occurrences of a message field merge, a `repeated` field appends.

use super::reader::{Reader, WireType};
use super::RECURSION_LIMIT;

/// The value of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// A nested message, string or bytes: the payload, without key and length.
    LengthDelimited(&'a [u8]),
    /// A group (no OTLP field is one: an unknown field), stepped over.
    Group,
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub tag: u32,
    pub value: Value<'a>,
    /// The field's bytes in the message, key (and length) included: copied as they are, they are
    /// the same field in another message of the same type.
    pub raw: &'a [u8],
}

/// The fields of `message` in order.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { message, reader: Reader::new(message) }
}

/// Iterator of [`fields`].
pub struct Fields<'a> {
    message: &'a [u8],
    reader: Reader<'a>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        let r = &mut self.reader;
        if r.is_empty() {
            return None;
        }
        let start = r.pos();
        let read = r.key().and_then(|(tag, wire_type)| {
            let value = match wire_type {
                WireType::Varint => Value::Varint(r.varint()?),
                WireType::SixtyFourBit => Value::Fixed64(u64::from_le_bytes(r.take(8)?.try_into().unwrap_or_default())),
                WireType::ThirtyTwoBit => Value::Fixed32(u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default())),
                WireType::LengthDelimited => Value::LengthDelimited(r.length_delimited()?),
                WireType::StartGroup | WireType::EndGroup => {
                    r.skip(wire_type, tag, RECURSION_LIMIT)?;
                    Value::Group
                }
            };
            Ok(Field { tag, value, raw: &self.message[start..r.pos()] })
        });
        match read {
            Ok(field) => Some(field),
            Err(_) => {
                // Not expected of checked bytes; stop rather than loop.
                self.reader = Reader::new(&[]);
                None
            }
        }
    }
}

/// Writes the key and length of length-delimited field `tag` (< 16).
pub fn put_length_delimited(out: &mut Vec<u8>, tag: u8, len: usize) {
    super::put_field(out, tag, len);
}

/// The bytes of a length-delimited field of `len` payload bytes (tag < 16): key, length, payload.
pub fn length_delimited_len(len: usize) -> usize {
    super::field_len(len)
}
