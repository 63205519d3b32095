//! Block frames: compression and checksum around every block of an SSTable
//! (data, index, filter and meta blocks alike).
//!
//! ## Format (do not change: on disk)
//! ```text
//! frame    := payload codec:u8 crc:u32le          crc = crc32c(payload ‖ codec)
//! payload  := raw                                 codec 0 (none)
//!           | raw_len:varint lz4_block            codec 1 (lz4 block format)
//!           | raw_len:varint zstd_frame           codec 2 (zstd)
//! ```
//! A block is stored uncompressed whenever compression would not save at least
//! an eighth of it.

use bytes::Bytes;

use crate::coding::{Malformed, Reader, get_u32_at, put_u32, put_varint};
use crate::options::Compression;

/// Bytes after the payload: codec byte and checksum.
pub(crate) const FRAME_TRAILER_BYTES: usize = 5;
/// The largest decompressed block a reader will allocate for.
pub(crate) const BLOCK_RAW_BYTES_MAX: usize = 1 << 30;

const CODEC_NONE: u8 = 0;
const CODEC_LZ4: u8 = 1;
const CODEC_ZSTD: u8 = 2;

/// Why a frame could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    Malformed(Malformed),
    /// A codec this build cannot decode.
    #[cfg_attr(feature = "zstd", allow(dead_code))]
    Unsupported(&'static str),
}

impl From<Malformed> for FrameError {
    fn from(m: Malformed) -> Self {
        FrameError::Malformed(m)
    }
}

fn malformed(offset: usize, detail: &'static str) -> FrameError {
    FrameError::Malformed(Malformed { offset, detail })
}

/// Frames `raw` into `out` with the chosen compression.
pub(crate) fn encode(raw: &[u8], compression: Compression, zstd_level: i32, out: &mut Vec<u8>) {
    let start = out.len();
    let codec = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            put_varint(out, raw.len() as u64);
            let body = out.len();
            out.resize(
                body + lz4_flex::block::get_maximum_output_size(raw.len()),
                0,
            );
            match lz4_flex::block::compress_into(raw, &mut out[body..]) {
                Ok(n) => {
                    out.truncate(body + n);
                    Some(CODEC_LZ4)
                }
                Err(_) => None,
            }
        }
        Compression::Zstd => zstd_compress(raw, zstd_level, out),
    };
    let codec = match codec {
        Some(c) if (out.len() - start) < raw.len() - raw.len() / 8 => c,
        _ => {
            out.truncate(start);
            out.extend_from_slice(raw);
            CODEC_NONE
        }
    };
    out.push(codec);
    let crc = crc32c::crc32c(&out[start..]);
    put_u32(out, crc);
}

#[cfg(feature = "zstd")]
fn zstd_compress(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Option<u8> {
    put_varint(out, raw.len() as u64);
    let z = zstd::bulk::compress(raw, level).ok()?;
    out.extend_from_slice(&z);
    Some(CODEC_ZSTD)
}

#[cfg(not(feature = "zstd"))]
fn zstd_compress(_raw: &[u8], _level: i32, _out: &mut Vec<u8>) -> Option<u8> {
    None
}

/// Verifies and decompresses a frame.
pub(crate) fn decode(frame: &[u8]) -> Result<Bytes, FrameError> {
    if frame.len() < FRAME_TRAILER_BYTES {
        return Err(malformed(0, "frame shorter than its trailer"));
    }
    let body_end = frame.len() - 4;
    let want = get_u32_at(frame, body_end).unwrap_or(0);
    if crc32c::crc32c(&frame[..body_end]) != want {
        return Err(malformed(body_end, "block checksum mismatch"));
    }
    let codec = frame[body_end - 1];
    let payload = &frame[..body_end - 1];
    match codec {
        CODEC_NONE => Ok(Bytes::copy_from_slice(payload)),
        CODEC_LZ4 => {
            let mut r = Reader::new(payload);
            let raw_len = r.varint_len(BLOCK_RAW_BYTES_MAX)?;
            let body = &payload[r.pos()..];
            // lz4 cannot expand data by more than 255x: a larger claim is garbage.
            if raw_len > body.len().saturating_mul(255).saturating_add(16) {
                return Err(malformed(0, "lz4 block states an impossible length"));
            }
            let mut raw = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(body, &mut raw) {
                Ok(n) if n == raw_len => Ok(Bytes::from(raw)),
                _ => Err(malformed(
                    0,
                    "lz4 block does not decompress to its stated length",
                )),
            }
        }
        CODEC_ZSTD => zstd_decompress(payload),
        _ => Err(malformed(body_end - 1, "unknown compression codec")),
    }
}

#[cfg(feature = "zstd")]
fn zstd_decompress(payload: &[u8]) -> Result<Bytes, FrameError> {
    let mut r = Reader::new(payload);
    let raw_len = r.varint_len(BLOCK_RAW_BYTES_MAX)?;
    let body = &payload[r.pos()..];
    match zstd::bulk::decompress(body, raw_len) {
        Ok(raw) if raw.len() == raw_len => Ok(Bytes::from(raw)),
        _ => Err(malformed(
            0,
            "zstd block does not decompress to its stated length",
        )),
    }
}

#[cfg(not(feature = "zstd"))]
fn zstd_decompress(_payload: &[u8]) -> Result<Bytes, FrameError> {
    Err(FrameError::Unsupported(
        "zstd blocks need the `zstd` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compressible() -> Vec<u8> {
        (0..4000u32).map(|i| (i % 7) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips_and_compresses() {
        let raw = compressible();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut out = Vec::new();
            encode(&raw, c, 3, &mut out);
            if c != Compression::None {
                assert!(out.len() < raw.len() / 2, "{c:?} did not compress");
            }
            assert_eq!(decode(&out).unwrap().as_ref(), raw.as_slice());
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut x = 0x1234_5678u32;
        let raw: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        encode(&raw, Compression::Lz4, 3, &mut out);
        assert_eq!(out.len(), raw.len() + FRAME_TRAILER_BYTES);
        assert_eq!(out[raw.len()], CODEC_NONE);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let raw = compressible();
        let mut out = Vec::new();
        encode(&raw, Compression::Lz4, 3, &mut out);
        for pos in 0..out.len() {
            let mut bad = out.clone();
            bad[pos] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {pos} undetected");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes: Vec<u8>) {
            let _ = decode(&bytes);
        }

        #[test]
        fn frames_with_valid_checksums_but_garbage_never_panic(body: Vec<u8>, codec in 0u8..4) {
            let mut f = body;
            f.push(codec);
            let crc = crc32c::crc32c(&f);
            f.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(&f);
        }
    }
}
