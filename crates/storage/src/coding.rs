//! Byte-level helpers shared by every on-disk format: little-endian fixed-width
//! integers, LEB128 varints and a bounds-checked [`Reader`].
//!
//! Owns nothing persistent. Every decoder in the crate reads through [`Reader`],
//! so arbitrary bytes produce a [`Malformed`] error instead of a panic.

/// Why a byte string failed to decode, and where (offset inside the decoded
/// slice). Callers turn it into [`crate::Error::Corruption`] with the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub offset: usize,
    pub detail: &'static str,
}

pub(crate) type DecodeResult<T> = std::result::Result<T, Malformed>;

/// The longest varint-encoded u64 (10 bytes of 7 bits).
pub(crate) const VARINT64_BYTES_MAX: usize = 10;

pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// The first 16 bytes of a key, big-endian, zero-padded. Comparing prefixes
/// first orders keys correctly whenever the prefixes differ (a zero-padded
/// shorter key is a prefix of the longer one up to the first difference), and
/// spares searches a pointer chase to the key bytes on most comparisons (the
/// cache miss that dominated memtable inserts and index searches). Sixteen
/// bytes rather than eight because keys often share a namespace of five to
/// ten bytes (`user:`, `session:`, `key:0000`): with eight, every comparison
/// among such keys fell through to the bytes.
pub(crate) fn key_prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// Writes `bytes` prefixed with its varint length.
pub(crate) fn put_len_prefixed(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Reads a little-endian u32 at `at` from a slice known to be long enough.
/// Returns `None` when it is not.
pub(crate) fn get_u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Some(u32::from_le_bytes(a))
}

pub(crate) fn get_u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// A cursor over a byte slice whose every read is bounds-checked.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn fail<T>(&self, detail: &'static str) -> DecodeResult<T> {
        Err(Malformed {
            offset: self.pos,
            detail,
        })
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.fail("truncated: expected a byte"),
        }
    }

    #[cfg(test)]
    pub fn u32(&mut self) -> DecodeResult<u32> {
        match get_u32_at(self.buf, self.pos) {
            Some(v) => {
                self.pos += 4;
                Ok(v)
            }
            None => self.fail("truncated: expected u32"),
        }
    }

    pub fn u64(&mut self) -> DecodeResult<u64> {
        match get_u64_at(self.buf, self.pos) {
            Some(v) => {
                self.pos += 8;
                Ok(v)
            }
            None => self.fail("truncated: expected u64"),
        }
    }

    pub fn varint(&mut self) -> DecodeResult<u64> {
        // Fast path: most lengths fit in one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut v: u64 = 0;
        for i in 0..VARINT64_BYTES_MAX {
            let Some(&b) = self.buf.get(self.pos + i) else {
                return self.fail("truncated varint");
            };
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return self.fail("varint overflows u64");
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    /// A varint that must fit in `usize` and be at most `max`.
    pub fn varint_len(&mut self, max: usize) -> DecodeResult<usize> {
        let v = self.varint()?;
        if v > max as u64 {
            return self.fail("length out of range");
        }
        Ok(v as usize)
    }

    pub fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
        {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => self.fail("truncated: byte string runs past the end"),
        }
    }

    pub fn len_prefixed(&mut self, max: usize) -> DecodeResult<&'a [u8]> {
        let n = self.varint_len(max)?;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader::new(&b);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn reader_rejects_truncation_and_overflow() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        // 10th byte > 1 overflows u64.
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert!(Reader::new(&b).varint().is_err());
        assert!(Reader::new(&[1, 2, 3]).u32().is_err());
        assert!(Reader::new(&[5, 1]).len_prefixed(100).is_err());
        assert!(Reader::new(&[5, 1, 1, 1, 1, 1]).len_prefixed(4).is_err());
    }

    proptest! {
        #[test]
        fn varint_round_trips(v: u64) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            prop_assert_eq!(Reader::new(&b).varint(), Ok(v));
        }

        #[test]
        fn reader_never_panics(bytes: Vec<u8>) {
            let mut r = Reader::new(&bytes);
            let _ = r.varint();
            let _ = r.len_prefixed(1 << 20);
            let _ = r.u64();
            let _ = r.u32();
            let _ = r.u8();
        }
    }
}
