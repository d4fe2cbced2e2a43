//! Canonical binary encoding used by signed records.
//!
//! Fixed-width big-endian integers, length-prefixed byte strings with explicit maximum lengths,
//! and no optional encodings: every value has exactly one encoding, so a signature over the bytes
//! is a signature over the value. [`Reader`] refuses anything a [`Writer`] could not have produced
//! (over-long fields, invalid UTF-8, trailing bytes).

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside `field`.
    #[error("truncated input while reading {0}")]
    Truncated(&'static str),
    /// A length prefix exceeds the field's maximum.
    #[error("{field} is {len} bytes, more than the maximum {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// A tag or version this implementation does not know.
    #[error("unknown {field} {value}")]
    Unknown {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A value that decodes but is not valid (e.g. a malformed key).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Appends canonical encodings to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-size bytes, no prefix.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Bytes with a u32 length prefix. Callers keep `v` within the field's maximum, which the
    /// reader enforces; a value longer than `u32::MAX` cannot occur for bounded fields.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.fixed(v)
    }

    /// UTF-8 text with a u32 length prefix.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

/// Reads canonical encodings from a slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Read from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// What is not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Whether everything was read (for records that grew fields at their end).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, field)?[0])
    }

    /// Big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Fixed-size bytes.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], CodecError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(CodecError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    /// Length-prefixed UTF-8 text of at most `max` bytes.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(field, max)?).map_err(|_| CodecError::Utf8(field))
    }

    /// Fail unless the whole input was consumed.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.buf.is_empty() { Ok(()) } else { Err(CodecError::Trailing(self.buf.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut w = Writer::new();
        w.u8(7).u16(513).u32(70_000).u64(u64::MAX).fixed(&[1, 2, 3]).bytes(b"abc").str("héllo");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 513);
        assert_eq!(r.u32("c").unwrap(), 70_000);
        assert_eq!(r.u64("d").unwrap(), u64::MAX);
        assert_eq!(r.array::<3>("e").unwrap(), [1, 2, 3]);
        assert_eq!(r.bytes("f", 3).unwrap(), b"abc");
        assert_eq!(r.str("g", 16).unwrap(), "héllo");
        r.finish().unwrap();

        let mut r = Reader::new(&bytes[..bytes.len() - 1]);
        r.array::<18>("skip").unwrap();
        assert_eq!(r.bytes("f", 2), Err(CodecError::TooLong { field: "f", len: 3, max: 2 }));
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut r = Reader::new(&trailing);
        r.array::<18>("fixed part").unwrap();
        r.bytes("f", 3).unwrap();
        r.str("g", 16).unwrap();
        assert_eq!(r.finish(), Err(CodecError::Trailing(1)));
        assert_eq!(Reader::new(&[0, 0, 0, 2, 0xff, 0xfe]).str("s", 9), Err(CodecError::Utf8("s")));
        assert_eq!(Reader::new(&[1]).u16("x"), Err(CodecError::Truncated("x")));
    }
}
