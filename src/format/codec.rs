//! Little-endian byte encoding helpers shared by every on-disk format.

use super::FormatError;

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Enc { buf: Vec::new() }
    }
    pub fn with_capacity(n: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A string as u16 length + UTF-8 bytes.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let b = s.as_bytes();
        debug_assert!(b.len() <= u16::MAX as usize);
        self.buf.extend_from_slice(&(b.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(b);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads little-endian fields from a byte slice; every read is bounds-checked.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, pos: 0, what }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated {
                what: self.what,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.take(n)
    }
    /// `out.len()` little-endian u64 values in a row (one bounds check for all).
    pub fn u64s(&mut self, out: &mut [u64]) -> Result<(), FormatError> {
        let b = self.take(out.len() * 8)?;
        for (o, w) in out.iter_mut().zip(b.chunks_exact(8)) {
            *o = u64::from_le_bytes(w.try_into().unwrap());
        }
        Ok(())
    }
    pub fn str(&mut self) -> Result<String, FormatError> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadString { what: self.what })
    }
    /// A flag byte: 0 or 1 (anything else would decode as `true` and be written back as 1,
    /// so it is refused as damage).
    pub fn flag(&mut self) -> Result<bool, FormatError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(FormatError::Invalid {
                what: self.what,
                detail: format!("flag byte at offset {} is {v}, not 0 or 1", self.pos - 1),
            }),
        }
    }
    /// A reserved word: must be zero (writers write zero; anything else is damage or a
    /// format this version does not know, and accepting it would not round-trip).
    pub fn reserved_u32(&mut self) -> Result<(), FormatError> {
        match self.u32()? {
            0 => Ok(()),
            v => Err(FormatError::Invalid {
                what: self.what,
                detail: format!("reserved word at offset {} is {v:#x}, not 0", self.pos - 4),
            }),
        }
    }
    /// The rest of a fixed-size header is zero padding.
    pub fn zero_padding(&mut self) -> Result<(), FormatError> {
        let rest = self.take(self.remaining())?;
        match rest.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(FormatError::Invalid {
                what: self.what,
                detail: format!(
                    "padding byte at offset {} is not 0",
                    self.pos - rest.len() + i
                ),
            }),
        }
    }
    /// A count that is about to size an allocation: refuse counts the buffer cannot hold.
    pub fn count(&mut self, min_item_size: usize) -> Result<usize, FormatError> {
        let n = self.u64()? as usize;
        if n.saturating_mul(min_item_size.max(1)) > self.remaining() {
            return Err(FormatError::Truncated {
                what: self.what,
                need: n.saturating_mul(min_item_size.max(1)),
                have: self.remaining(),
            });
        }
        Ok(n)
    }
}
