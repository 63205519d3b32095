//! [`WriteBatch`]: an atomic group of puts and deletes, and its byte encoding,
//! which is also the payload of a commit-log record.
//!
//! ## Format (do not change: on disk, inside log records)
//! ```text
//! ops     := op*                              (the count is stored beside it)
//! op      := tag:u8 key_len:varint key
//!            [expires_at_ms:u64le]            if tag = 2
//!            [value_len:varint value]         if tag = 1 or 2
//! tag     := 0 delete | 1 put | 2 put with expiry
//! ```
//! A batch is applied all-or-nothing: it is one log record, and its operations
//! become visible to readers together.

use crate::coding::{DecodeResult, Reader, put_len_prefixed, put_u64, put_varint};
use crate::types::Kind;

/// Largest key the encoding accepts at all; `Options::key_bytes_max` is usually
/// much lower.
pub(crate) const KEY_BYTES_LIMIT: usize = 1 << 24;
/// Largest value the encoding accepts at all.
pub(crate) const VALUE_BYTES_LIMIT: usize = 1 << 30;

/// An atomic batch of writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
    user_bytes: u64,
}

/// One decoded operation, borrowing from the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchOp<'a> {
    pub kind: Kind,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expires_at_ms: Option<u64>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch whose encoding can grow to `bytes` without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        WriteBatch {
            rep: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Encoded bytes of one put of these sizes (for `with_capacity`).
    pub fn put_bytes(key_len: usize, value_len: usize) -> usize {
        1 + 10 + key_len + 8 + 10 + value_len
    }

    /// Adds a put. `expires_at_ms` is an absolute Unix time in milliseconds.
    pub fn put(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> &mut Self {
        match expires_at_ms {
            None => {
                self.rep.push(Kind::Put as u8);
                put_len_prefixed(&mut self.rep, key);
            }
            Some(t) => {
                self.rep.push(Kind::PutExpiring as u8);
                put_len_prefixed(&mut self.rep, key);
                put_u64(&mut self.rep, t);
            }
        }
        put_len_prefixed(&mut self.rep, value);
        self.count += 1;
        self.user_bytes += (key.len() + value.len()) as u64;
        self
    }

    /// Adds a delete (an engine tombstone).
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.rep.push(Kind::Delete as u8);
        put_len_prefixed(&mut self.rep, key);
        self.count += 1;
        self.user_bytes += key.len() as u64;
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the encoded operations in bytes.
    pub fn encoded_bytes(&self) -> usize {
        self.rep.len()
    }

    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
        self.user_bytes = 0;
    }

    pub(crate) fn user_bytes(&self) -> u64 {
        self.user_bytes
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Iterates over the operations. The encoding was produced by this type, so
    /// errors only arise for bytes read back from disk (see [`decode_ops`]).
    pub(crate) fn ops(&self) -> OpsIter<'_> {
        OpsIter {
            r: Reader::new(&self.rep),
            left: self.count,
        }
    }
}

/// An iterator over encoded operations.
pub(crate) struct OpsIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for OpsIter<'a> {
    type Item = DecodeResult<BatchOp<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(decode_op(&mut self.r))
    }
}

fn decode_op<'a>(r: &mut Reader<'a>) -> DecodeResult<BatchOp<'a>> {
    let at = r.pos();
    let tag = r.u8()?;
    let kind = Kind::from_u8(tag).ok_or(crate::coding::Malformed {
        offset: at,
        detail: "unknown operation tag",
    })?;
    let key = r.len_prefixed(KEY_BYTES_LIMIT)?;
    let (value, expires_at_ms): (&[u8], _) = match kind {
        Kind::Delete => (&[], None),
        Kind::Put => (r.len_prefixed(VALUE_BYTES_LIMIT)?, None),
        Kind::PutExpiring => {
            let t = r.u64()?;
            (r.len_prefixed(VALUE_BYTES_LIMIT)?, Some(t))
        }
    };
    Ok(BatchOp {
        kind,
        key,
        value,
        expires_at_ms,
    })
}

/// Decodes `count` operations from `bytes`, which must hold exactly them.
pub(crate) fn decode_ops(bytes: &[u8], count: u32) -> DecodeResult<Vec<BatchOp<'_>>> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        out.push(decode_op(&mut r)?);
    }
    if !r.is_empty() {
        return Err(crate::coding::Malformed {
            offset: r.pos(),
            detail: "trailing bytes after the last operation",
        });
    }
    Ok(out)
}

/// Appends the encoding of a batch with its count (the log record payload).
pub(crate) fn encode_payload(buf: &mut Vec<u8>, batch: &WriteBatch) {
    put_varint(buf, u64::from(batch.count));
    buf.extend_from_slice(&batch.rep);
}

/// Splits a log record payload into its operations.
pub(crate) fn decode_payload(payload: &[u8]) -> DecodeResult<Vec<BatchOp<'_>>> {
    let mut r = Reader::new(payload);
    let count = r.varint()?;
    if count == 0 || count > u64::from(u32::MAX) {
        return Err(crate::coding::Malformed {
            offset: 0,
            detail: "operation count out of range",
        });
    }
    let start = r.pos();
    decode_ops(&payload[start..], count as u32).map_err(|mut m| {
        m.offset += start;
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn batch_round_trips() {
        let mut b = WriteBatch::new();
        b.put(b"k1", b"v1", None)
            .delete(b"k2")
            .put(b"k3", b"", Some(77));
        assert_eq!(b.len(), 3);
        let mut payload = Vec::new();
        encode_payload(&mut payload, &b);
        let ops = decode_payload(&payload).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            (ops[0].kind, ops[0].key, ops[0].value),
            (Kind::Put, &b"k1"[..], &b"v1"[..])
        );
        assert_eq!((ops[1].kind, ops[1].key), (Kind::Delete, &b"k2"[..]));
        assert_eq!(
            (ops[2].kind, ops[2].expires_at_ms),
            (Kind::PutExpiring, Some(77))
        );
        let via_iter: Vec<_> = b.ops().collect::<Result<_, _>>().unwrap();
        assert_eq!(via_iter, ops);
    }

    #[test]
    fn payload_with_trailing_garbage_or_zero_count_is_rejected() {
        let mut b = WriteBatch::new();
        b.put(b"k", b"v", None);
        let mut payload = Vec::new();
        encode_payload(&mut payload, &b);
        payload.push(0);
        assert!(decode_payload(&payload).is_err());
        assert!(decode_payload(&[0]).is_err());
    }

    proptest! {
        #[test]
        fn decode_payload_never_panics(bytes: Vec<u8>) {
            let _ = decode_payload(&bytes);
        }
    }
}
