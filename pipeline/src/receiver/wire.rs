//! The protobuf wire format walked by hand, for the receivers that take a request in parts
//! ([`super::logs_parts`], [`super::metrics_parts`]): a message's fields in order, each with its
//! tag and, for length-delimited ones, its bytes; refused where prost refuses the field's framing.

/// One field of a message: its tag and, for length-delimited ones, the bytes of its value.
pub(super) struct Field<'a> {
    pub tag: u32,
    pub bytes: Option<&'a [u8]>,
    /// Where the value starts in the message.
    pub at: usize,
    /// The whole field, key included, in the message: `buf[key..end]` is a message of this one
    /// field.
    pub key: usize,
    pub end: usize,
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in 0..10 {
        let Some(&b) = buf.get(*at) else {
            return Err(format!("truncated varint at byte {at}"));
        };
        *at += 1;
        // The tenth byte holds the top bit only: more is an overflow, refused as prost does.
        if shift == 9 && b > 1 {
            return Err(format!("invalid varint ending at byte {at}"));
        }
        value |= u64::from(b & 0x7f) << (7 * shift);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(format!("invalid varint ending at byte {at}"))
}

/// The fields of the message `buf`, in order.
pub(super) fn fields(buf: &[u8]) -> impl Iterator<Item = Result<Field<'_>, String>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let key_at = at;
        let field = (|| {
            // A key over 32 bits is invalid to prost, even where the tag would fit.
            let key = u32::try_from(varint(buf, &mut at)?).map_err(|_| format!("invalid field key at byte {at}"))?;
            let tag = key >> 3;
            if tag == 0 {
                return Err(format!("invalid field key at byte {at}"));
            }
            let skip = |at: &mut usize, n: usize| {
                if buf.len() - *at < n {
                    return Err(format!("truncated at byte {at}"));
                }
                *at += n;
                Ok(())
            };
            match key & 7 {
                0 => varint(buf, &mut at).map(|_| Field { tag, bytes: None, at, key: key_at, end: at }),
                1 => skip(&mut at, 8).map(|_| Field { tag, bytes: None, at, key: key_at, end: at }),
                5 => skip(&mut at, 4).map(|_| Field { tag, bytes: None, at, key: key_at, end: at }),
                2 => {
                    let len = usize::try_from(varint(buf, &mut at)?).map_err(|_| format!("length at byte {at}"))?;
                    let start = at;
                    skip(&mut at, len)?;
                    Ok(Field { tag, bytes: Some(&buf[start..at]), at: start, key: key_at, end: at })
                }
                other => Err(format!("wire type {other} at byte {at} is not supported")),
            }
        })();
        if field.is_err() {
            at = buf.len();
        }
        Some(field)
    })
}

/// A message or string field's bytes, else an error.
pub(super) fn bytes_of<'a>(field: &Field<'a>, what: &str) -> Result<&'a [u8], String> {
    field.bytes.ok_or_else(|| format!("{what} (field {}) is not length-delimited", field.tag))
}
