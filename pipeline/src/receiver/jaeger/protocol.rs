//! The two Thrift protocols Jaeger uses, reading side: compact (agent UDP 6831) and binary (agent
//! UDP 6832, collector HTTP). Written here rather than taken from the `thrift` crate because input
//! comes from the network: every length is checked against the bytes that remain before anything
//! is allocated, nesting is bounded, and any inconsistency is an error, never a panic or a huge
//! allocation. The writing side ([`super::encode`]) serves tests and the benchmark.

/// Field and element types, common to both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    Bool,
    Byte,
    I16,
    I32,
    I64,
    Double,
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("invalid {what} at byte {at}")]
    Invalid { what: &'static str, at: usize },
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("required field {0} is missing")]
    Missing(&'static str),
    #[error("unexpected message {0:?}")]
    UnexpectedMessage(String),
}

/// How deep structs, lists and maps may nest in what is skipped.
pub const MAX_DEPTH: usize = 32;

/// What the struct decoders need from a protocol.
pub trait Protocol {
    /// The next field's type and id, or `None` at the struct's end.
    fn field(&mut self) -> Result<Option<(TType, i16)>, DecodeError>;
    fn struct_begin(&mut self);
    fn struct_end(&mut self);
    fn bool(&mut self, in_field: Option<bool>) -> Result<bool, DecodeError>;
    fn byte(&mut self) -> Result<i8, DecodeError>;
    fn i16(&mut self) -> Result<i16, DecodeError>;
    fn i32(&mut self) -> Result<i32, DecodeError>;
    fn i64(&mut self) -> Result<i64, DecodeError>;
    fn double(&mut self) -> Result<f64, DecodeError>;
    fn binary(&mut self) -> Result<&[u8], DecodeError>;
    /// Element type and count; the count is at most the bytes left (every element takes one).
    fn list(&mut self) -> Result<(TType, usize), DecodeError>;
    /// Key type, value type and count.
    fn map(&mut self) -> Result<(TType, TType, usize), DecodeError>;
    fn bytes(&mut self, n: usize) -> Result<&[u8], DecodeError>;
    fn position(&self) -> usize;
    /// The whole buffer being read (what [`Protocol::position`] counts in).
    fn input(&self) -> &[u8];
    /// The value of the boolean carried in the field header (compact protocol), if any.
    fn field_bool(&self) -> Option<bool> {
        None
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.position();
        let raw = self.binary()?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(DecodeError::Invalid { what: "UTF-8 string", at }),
        }
    }

    /// Skips a value of type `t`.
    fn skip(&mut self, t: TType, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match t {
            TType::Bool => {
                let b = self.field_bool();
                self.bool(b).map(drop)
            }
            TType::Byte => self.byte().map(drop),
            TType::I16 => self.i16().map(drop),
            TType::I32 => self.i32().map(drop),
            TType::I64 => self.i64().map(drop),
            TType::Double => self.double().map(drop),
            TType::Binary => self.binary().map(drop),
            TType::Uuid => self.bytes(16).map(drop),
            TType::Struct => {
                self.struct_begin();
                while let Some((ft, _)) = self.field()? {
                    self.skip(ft, depth + 1)?;
                }
                self.struct_end();
                Ok(())
            }
            TType::List | TType::Set => {
                let (et, n) = self.list()?;
                for _ in 0..n {
                    self.skip_element(et, depth + 1)?;
                }
                Ok(())
            }
            TType::Map => {
                let (kt, vt, n) = self.map()?;
                for _ in 0..n {
                    self.skip_element(kt, depth + 1)?;
                    self.skip_element(vt, depth + 1)?;
                }
                Ok(())
            }
        }
    }

    /// Skips a list element or map entry (a bool there is a byte of its own in both protocols).
    fn skip_element(&mut self, t: TType, depth: usize) -> Result<(), DecodeError> {
        if t == TType::Bool {
            return self.bool(None).map(drop);
        }
        self.skip(t, depth)
    }
}

/// Bytes checked as UTF-8.
fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cursor over a buffer.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn count(&self, n: i64) -> Result<usize, DecodeError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(DecodeError::Invalid { what: "collection size", at: self.pos }),
        }
    }
}

/// Thrift compact protocol (zigzag varints, field id deltas).
pub struct Compact<'a> {
    cur: Cursor<'a>,
    last_field: Vec<i16>,
    current: i16,
    pending_bool: Option<bool>,
}

impl<'a> Compact<'a> {
    pub fn new(buf: &'a [u8]) -> Compact<'a> {
        Compact { cur: Cursor { buf, pos: 0 }, last_field: Vec::new(), current: 0, pending_bool: None }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.cur.u8()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid { what: "varint", at: self.cur.pos })
    }

    fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn ttype(&self, nibble: u8) -> Result<TType, DecodeError> {
        Ok(match nibble {
            1 | 2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::Binary,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            13 => TType::Uuid,
            _ => return Err(DecodeError::Invalid { what: "compact type", at: self.cur.pos }),
        })
    }

    /// A message header: `(name, type)`; type 1 is a call, 4 a oneway call.
    pub fn message(&mut self) -> Result<(String, u8), DecodeError> {
        let (name, kind) = self.message_name()?;
        Ok((utf8(&self.cur.buf[name]), kind))
    }

    /// [`Compact::message`] with the name (valid UTF-8) as its range of the buffer.
    pub fn message_name(&mut self) -> Result<(std::ops::Range<usize>, u8), DecodeError> {
        if self.cur.u8()? != 0x82 {
            return Err(DecodeError::Invalid { what: "compact protocol id", at: 0 });
        }
        let vt = self.cur.u8()?;
        if vt & 0x1f != 1 {
            return Err(DecodeError::Invalid { what: "compact protocol version", at: 1 });
        }
        self.varint()?; // sequence id
        let at = self.cur.pos;
        let n = self.binary()?.len();
        let name = self.cur.pos - n..self.cur.pos;
        if std::str::from_utf8(&self.cur.buf[name.clone()]).is_err() {
            return Err(DecodeError::Invalid { what: "UTF-8 string", at });
        }
        Ok((name, vt >> 5))
    }
}

impl Protocol for Compact<'_> {
    fn field(&mut self) -> Result<Option<(TType, i16)>, DecodeError> {
        let b = self.cur.u8()?;
        if b == 0 {
            return Ok(None);
        }
        let t = self.ttype(b & 0x0f)?;
        let delta = b >> 4;
        let id = if delta == 0 {
            i16::try_from(self.zigzag()?).map_err(|_| DecodeError::Invalid { what: "field id", at: self.cur.pos })?
        } else {
            self.current.wrapping_add(i16::from(delta))
        };
        self.current = id;
        self.pending_bool = if t == TType::Bool { Some(b & 0x0f == 1) } else { None };
        Ok(Some((t, id)))
    }

    fn struct_begin(&mut self) {
        self.last_field.push(self.current);
        self.current = 0;
    }

    fn struct_end(&mut self) {
        self.current = self.last_field.pop().unwrap_or(0);
    }

    fn field_bool(&self) -> Option<bool> {
        self.pending_bool
    }

    fn bool(&mut self, in_field: Option<bool>) -> Result<bool, DecodeError> {
        match in_field {
            Some(b) => Ok(b),
            None => Ok(self.cur.u8()? == 1),
        }
    }

    fn byte(&mut self) -> Result<i8, DecodeError> {
        Ok(self.cur.u8()? as i8)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let v = self.zigzag()?;
        i16::try_from(v).map_err(|_| DecodeError::Invalid { what: "i16", at: self.cur.pos })
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let v = self.zigzag()?;
        i32::try_from(v).map_err(|_| DecodeError::Invalid { what: "i32", at: self.cur.pos })
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.zigzag()
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let b = self.cur.take(8)?;
        Ok(f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn binary(&mut self) -> Result<&[u8], DecodeError> {
        let n = self.varint()?;
        let n = self.cur.count(i64::try_from(n).unwrap_or(i64::MAX))?;
        self.cur.take(n)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.cur.take(n)
    }

    fn list(&mut self) -> Result<(TType, usize), DecodeError> {
        let b = self.cur.u8()?;
        let t = self.ttype(b & 0x0f)?;
        let n = match b >> 4 {
            15 => i64::try_from(self.varint()?).unwrap_or(i64::MAX),
            n => i64::from(n),
        };
        Ok((t, self.cur.count(n)?))
    }

    fn map(&mut self) -> Result<(TType, TType, usize), DecodeError> {
        let n = i64::try_from(self.varint()?).unwrap_or(i64::MAX);
        let n = self.cur.count(n)?;
        if n == 0 {
            return Ok((TType::Byte, TType::Byte, 0));
        }
        let kv = self.cur.u8()?;
        Ok((self.ttype(kv >> 4)?, self.ttype(kv & 0x0f)?, n))
    }

    fn position(&self) -> usize {
        self.cur.pos
    }

    fn input(&self) -> &[u8] {
        self.cur.buf
    }
}

/// Thrift binary protocol (big-endian fixed-width integers).
pub struct Binary<'a> {
    cur: Cursor<'a>,
}

impl<'a> Binary<'a> {
    pub fn new(buf: &'a [u8]) -> Binary<'a> {
        Binary { cur: Cursor { buf, pos: 0 } }
    }

    fn ttype(&self, b: u8) -> Result<TType, DecodeError> {
        Ok(match b {
            2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::Binary,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            16 => TType::Uuid,
            _ => return Err(DecodeError::Invalid { what: "binary type", at: self.cur.pos }),
        })
    }

    /// A message header, strict (versioned) or not: `(name, type)`.
    pub fn message(&mut self) -> Result<(String, u8), DecodeError> {
        let (name, kind) = self.message_name()?;
        Ok((utf8(&self.cur.buf[name]), kind))
    }

    /// [`Binary::message`] with the name (valid UTF-8) as its range of the buffer.
    pub fn message_name(&mut self) -> Result<(std::ops::Range<usize>, u8), DecodeError> {
        let first = self.i32()?;
        if first < 0 {
            if (first as u32) & 0xffff_0000 != 0x8001_0000 {
                return Err(DecodeError::Invalid { what: "binary protocol version", at: 0 });
            }
            let name = self.utf8_name(4, |p| p.binary().map(<[u8]>::len))?;
            self.i32()?; // sequence id
            Ok((name, (first & 0xff) as u8))
        } else {
            let n = self.cur.count(i64::from(first))?;
            let name = self.utf8_name(4, |p| p.cur.take(n).map(<[u8]>::len))?;
            let t = self.cur.u8()?;
            self.i32()?;
            Ok((name, t))
        }
    }

    /// The range of the bytes `read` reads, which must be UTF-8 (else an error at `at`).
    fn utf8_name(
        &mut self,
        at: usize,
        read: impl FnOnce(&mut Self) -> Result<usize, DecodeError>,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        let n = read(self)?;
        let name = self.cur.pos - n..self.cur.pos;
        match std::str::from_utf8(&self.cur.buf[name.clone()]) {
            Ok(_) => Ok(name),
            Err(_) => Err(DecodeError::Invalid { what: "UTF-8 string", at }),
        }
    }
}

impl Protocol for Binary<'_> {
    fn field(&mut self) -> Result<Option<(TType, i16)>, DecodeError> {
        let b = self.cur.u8()?;
        if b == 0 {
            return Ok(None);
        }
        let t = self.ttype(b)?;
        Ok(Some((t, self.i16()?)))
    }

    fn struct_begin(&mut self) {}

    fn struct_end(&mut self) {}

    fn bool(&mut self, _in_field: Option<bool>) -> Result<bool, DecodeError> {
        Ok(self.cur.u8()? != 0)
    }

    fn byte(&mut self) -> Result<i8, DecodeError> {
        Ok(self.cur.u8()? as i8)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.cur.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.cur.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.cur.take(8)?;
        Ok(i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let b = self.cur.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn binary(&mut self) -> Result<&[u8], DecodeError> {
        let n = self.i32()?;
        let n = self.cur.count(i64::from(n))?;
        self.cur.take(n)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.cur.take(n)
    }

    fn list(&mut self) -> Result<(TType, usize), DecodeError> {
        let t = self.cur.u8()?;
        let t = self.ttype(t)?;
        let n = self.i32()?;
        Ok((t, self.cur.count(i64::from(n))?))
    }

    fn map(&mut self) -> Result<(TType, TType, usize), DecodeError> {
        let k = self.cur.u8()?;
        let v = self.cur.u8()?;
        let (k, v) = (self.ttype(k)?, self.ttype(v)?);
        let n = self.i32()?;
        Ok((k, v, self.cur.count(i64::from(n))?))
    }

    fn position(&self) -> usize {
        self.cur.pos
    }

    fn input(&self) -> &[u8] {
        self.cur.buf
    }
}
