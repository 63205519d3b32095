//! The per-table bloom filter: lets a point read skip a table that cannot
//! hold the key without touching its data blocks.
//!
//! ## Format (do not change: on disk)
//! ```text
//! filter := lines[m] probes:u8           m >= 1 lines of 64 bytes (512 bits)
//! ```
//! A blocked ("cache-local") filter: every probe of a key falls into one
//! 64-byte line, so a lookup costs one cache miss instead of one per probe.
//! Hashing: `h = xxh3_64_with_seed(key, BLOOM_SEED)`; the line is
//! `((h >> 32) * m) >> 32`; with `x = h as u32`, probe j (0 <= j < probes)
//! sets bit `x_j >> 23` of the line (bit i is byte i/8, bit i%8), where
//! `x_0 = x` and `x_{j+1} = x_j * 0x9E3779B9 mod 2^32`. With 10 bits per key
//! and 7 probes the false-positive rate is about 1%.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::coding::{DecodeResult, Malformed};

/// Do not change: on disk.
pub(crate) const BLOOM_SEED: u64 = 0x7269_6e67_6b76_0001;
const PROBES_MAX: u8 = 30;

/// The hash a filter is built from and probed with.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, BLOOM_SEED)
}

const LINE_BYTES: usize = 64;
const LINE_BITS_LOG2: u32 = 9;
const PROBE_MUL: u32 = 0x9E37_79B9;

fn line_of(hash: u64, lines: usize) -> usize {
    (((hash >> 32) * lines as u64) >> 32) as usize
}

/// Builds a filter from key hashes.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let bits_per_key = bits_per_key.max(1) as usize;
    // ln 2 * bits per key probes minimises the false-positive rate.
    let probes = ((bits_per_key as f64) * 0.69)
        .round()
        .clamp(1.0, f64::from(PROBES_MAX)) as u8;
    let lines = (hashes.len() * bits_per_key)
        .div_ceil(LINE_BYTES * 8)
        .max(1);
    let mut out = vec![0u8; lines * LINE_BYTES + 1];
    for &h in hashes {
        let base = line_of(h, lines) * LINE_BYTES;
        let mut x = h as u32;
        for _ in 0..probes {
            let bit = (x >> (32 - LINE_BITS_LOG2)) as usize;
            out[base + bit / 8] |= 1 << (bit % 8);
            x = x.wrapping_mul(PROBE_MUL);
        }
    }
    out[lines * LINE_BYTES] = probes;
    out
}

/// A decoded filter.
#[derive(Debug, Clone)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    lines: usize,
    probes: u8,
}

impl Bloom {
    pub fn parse(bytes: &[u8]) -> DecodeResult<Bloom> {
        let Some((&probes, bits)) = bytes.split_last() else {
            return Err(Malformed {
                offset: 0,
                detail: "empty bloom filter",
            });
        };
        if bits.is_empty() || bits.len() % LINE_BYTES != 0 || probes == 0 || probes > PROBES_MAX {
            return Err(Malformed {
                offset: bits.len(),
                detail: "bloom filter size or probe count out of range",
            });
        }
        Ok(Bloom {
            bits: bits.to_vec(),
            lines: bits.len() / LINE_BYTES,
            probes,
        })
    }

    /// False only when the key is certainly absent.
    pub fn may_contain(&self, hash: u64) -> bool {
        let base = line_of(hash, self.lines) * LINE_BYTES;
        let Some(line) = self.bits.get(base..base + LINE_BYTES) else {
            return true;
        };
        let mut x = hash as u32;
        for _ in 0..self.probes {
            let bit = (x >> (32 - LINE_BITS_LOG2)) as usize;
            if line[bit / 8] & (1 << (bit % 8)) == 0 {
                return false;
            }
            x = x.wrapping_mul(PROBE_MUL);
        }
        true
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let bloom = Bloom::parse(&build(&hashes, 10)).unwrap();
        for h in &hashes {
            assert!(bloom.may_contain(*h));
        }
        let fp = (0..10_000u32)
            .filter(|i| bloom.may_contain(key_hash(format!("other-{i}").as_bytes())))
            .count();
        eprintln!("bloom false positives: {fp} / 10000");
        // Expect ~1% (100); allow noise but catch a broken filter.
        assert!(fp < 180, "false positives: {fp}");
        assert!(fp > 10, "suspiciously few false positives: {fp}");
    }

    #[test]
    fn hashing_is_stable() {
        // Pinned: the filter format depends on this exact function and seed.
        assert_eq!(
            key_hash(b"ringkv"),
            xxh3_64_with_seed(b"ringkv", 0x7269_6e67_6b76_0001)
        );
        let f = build(&[key_hash(b"a")], 10);
        assert_eq!(f.len(), 65);
        assert_eq!(*f.last().unwrap(), 7);
    }

    #[test]
    fn empty_filter_rejects_everything() {
        let bloom = Bloom::parse(&build(&[], 10)).unwrap();
        assert!(!bloom.may_contain(key_hash(b"x")));
    }

    proptest! {
        #[test]
        fn arbitrary_filters_never_panic(bytes: Vec<u8>, h: u64) {
            if let Ok(b) = Bloom::parse(&bytes) {
                let _ = b.may_contain(h);
            }
        }
    }
}
