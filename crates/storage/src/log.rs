//! The commit log: record encoding and segment replay.
//!
//! Owns the byte format of log records and the rules that decide, on recovery,
//! whether a bad record is a torn tail (dropped) or corruption (an error naming
//! file and offset). Appending, group commit and segment rotation live in
//! `engine/write.rs`; this module only encodes and decodes.
//!
//! ## Format (do not change: on disk)
//! A log is a sequence of segment files `NNNNNN.log`, each a sequence of records:
//! ```text
//! record       := header_crc:u32le len:u32le first_seq:u64le payload_crc:u32le payload[len]
//! header_crc   := crc32c(len ‖ first_seq ‖ payload_crc)          (the 16 bytes after it)
//! payload_crc  := crc32c(payload)
//! payload      := op_count:varint ops                           (see batch.rs)
//! ```
//! The i-th operation of a record has sequence number `first_seq + i`; sequence
//! numbers strictly increase through the log. `len` is at least 1 and at most
//! [`LOG_RECORD_BYTES_MAX`].
//!
//! ## Torn tails
//! Only the last segment may end in a torn write. A bad record at offset X of
//! the last segment is a torn tail when nothing but zeros follows it: the file
//! ends inside its header, or its header is bad and only zeros follow the header,
//! or its header is good and it runs past the end of the file, or its payload
//! is bad and only zeros follow it. (A crash can persist a prefix of the last
//! write, possibly with the rest of the file's new length reading as zeros.)
//! Anything else is corruption: an error, or with `salvage` a loud skip.

use std::path::Path;

use crate::batch::{BatchOp, WriteBatch, decode_payload, encode_payload};
use crate::coding::{get_u32_at, get_u64_at};
use crate::error::{Error, Result};

/// Bytes of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 20;
/// The largest payload a record may carry. Do not lower: on disk.
pub(crate) const LOG_RECORD_BYTES_MAX: usize = 1 << 30;

/// Appends one record holding `batch` whose first operation gets `first_seq`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, first_seq: u64, batch: &WriteBatch) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    encode_payload(buf, batch);
    let len = (buf.len() - start - RECORD_HEADER_BYTES) as u32;
    let payload_crc = crc32c::crc32c(&buf[start + RECORD_HEADER_BYTES..]);
    buf[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&first_seq.to_le_bytes());
    buf[start + 16..start + 20].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start + 4..start + 20]);
    buf[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
}

/// What replaying one segment found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentReplay {
    /// Good records applied.
    pub records: u64,
    /// Offset just past the last good record.
    pub valid_bytes: u64,
    /// Where a torn tail started, and why it was judged torn.
    pub torn_at: Option<(u64, &'static str)>,
    /// Bytes skipped as corrupt in salvage mode.
    pub salvaged_bytes: u64,
    /// Highest sequence number seen (0 if none).
    pub last_seq: u64,
}

enum Check {
    Good {
        first_seq: u64,
        end: usize,
    },
    /// Bad record; `after` is where the bytes that decide "torn or corrupt" begin.
    Bad {
        detail: &'static str,
        after: usize,
        past_eof: bool,
    },
}

fn check_record(data: &[u8], at: usize) -> Check {
    let rest = data.len() - at;
    if rest < RECORD_HEADER_BYTES {
        return Check::Bad {
            detail: "truncated record header",
            after: data.len(),
            past_eof: true,
        };
    }
    let (Some(header_crc), Some(len), Some(first_seq), Some(payload_crc)) = (
        get_u32_at(data, at),
        get_u32_at(data, at + 4),
        get_u64_at(data, at + 8),
        get_u32_at(data, at + 16),
    ) else {
        return Check::Bad {
            detail: "truncated record header",
            after: data.len(),
            past_eof: true,
        };
    };
    let header_end = at + RECORD_HEADER_BYTES;
    if crc32c::crc32c(&data[at + 4..header_end]) != header_crc {
        return Check::Bad {
            detail: "record header checksum mismatch",
            after: header_end,
            past_eof: false,
        };
    }
    let len = len as usize;
    if len == 0 || len > LOG_RECORD_BYTES_MAX {
        return Check::Bad {
            detail: "record length out of range",
            after: header_end,
            past_eof: false,
        };
    }
    let end = header_end + len;
    if end > data.len() {
        return Check::Bad {
            detail: "record runs past the end of the segment",
            after: data.len(),
            past_eof: true,
        };
    }
    if crc32c::crc32c(&data[header_end..end]) != payload_crc {
        return Check::Bad {
            detail: "record payload checksum mismatch",
            after: end,
            past_eof: false,
        };
    }
    Check::Good { first_seq, end }
}

/// Replays one segment's bytes, calling `apply(first_seq, ops)` for every good
/// record in order. `prev_seq` is the highest sequence number replayed so far
/// (records must continue above it).
pub(crate) fn replay_segment(
    data: &[u8],
    file: &Path,
    is_last: bool,
    salvage: bool,
    prev_seq: u64,
    mut apply: impl FnMut(u64, &[BatchOp<'_>]) -> Result<()>,
) -> Result<SegmentReplay> {
    let mut out = SegmentReplay {
        last_seq: prev_seq,
        ..SegmentReplay::default()
    };
    let mut at = 0usize;
    while at < data.len() {
        let problem = match check_record(data, at) {
            Check::Good { first_seq, end } => {
                let payload = &data[at + RECORD_HEADER_BYTES..end];
                match decode_payload(payload) {
                    Err(m) => Some((
                        at,
                        format!(
                            "record payload does not decode: {} at +{}",
                            m.detail, m.offset
                        ),
                        end,
                    )),
                    Ok(_) if first_seq <= out.last_seq => Some((
                        at,
                        format!(
                            "sequence number {first_seq} does not follow {}",
                            out.last_seq
                        ),
                        end,
                    )),
                    Ok(ops) => {
                        apply(first_seq, &ops)?;
                        out.records += 1;
                        out.last_seq = first_seq + ops.len() as u64 - 1;
                        at = end;
                        out.valid_bytes = at as u64;
                        None
                    }
                }
            }
            Check::Bad {
                detail,
                after,
                past_eof,
            } => {
                let zeros_after = data[after.min(data.len())..].iter().all(|&b| b == 0);
                if is_last && (past_eof || zeros_after) {
                    out.torn_at = Some((at as u64, detail));
                    tracing::warn!(
                        file = %file.display(),
                        offset = at,
                        dropped_bytes = data.len() - at,
                        "dropping torn tail of the commit log: {detail}"
                    );
                    return Ok(out);
                }
                let skip_to = if past_eof {
                    data.len()
                } else {
                    resync(data, at + 1)
                };
                Some((at, detail.to_string(), skip_to))
            }
        };
        if let Some((bad_at, detail, skip_to)) = problem {
            if !salvage {
                return Err(Error::corruption(file, bad_at as u64, detail));
            }
            // Skip to the next record that checks out, loudly.
            let next = resync(data, skip_to.max(bad_at + 1)).min(data.len());
            tracing::error!(
                file = %file.display(),
                offset = bad_at,
                skipped_bytes = next - bad_at,
                "salvage: skipping corrupt commit-log bytes: {detail}"
            );
            out.salvaged_bytes += (next - bad_at) as u64;
            at = next;
        }
    }
    Ok(out)
}

/// The first offset at or after `from` where a good record starts, or the end.
fn resync(data: &[u8], from: usize) -> usize {
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= data.len() {
        if let Check::Good { .. } = check_record(data, at) {
            return at;
        }
        at += 1;
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn batch(i: u32) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(
            format!("key{i}").as_bytes(),
            format!("value{i}").as_bytes(),
            None,
        );
        b
    }

    /// Three records with first sequence numbers 1, 2, 3; returns bytes and
    /// record start offsets.
    fn three() -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..3 {
            starts.push(buf.len());
            encode_record(&mut buf, u64::from(i) + 1, &batch(i));
        }
        (buf, starts)
    }

    fn replay(data: &[u8], is_last: bool, salvage: bool) -> Result<(SegmentReplay, Vec<u64>)> {
        let mut seqs = Vec::new();
        let r = replay_segment(
            data,
            &PathBuf::from("000001.log"),
            is_last,
            salvage,
            0,
            |s, ops| {
                assert_eq!(ops.len(), 1);
                seqs.push(s);
                Ok(())
            },
        )?;
        Ok((r, seqs))
    }

    #[test]
    fn replays_every_good_record() {
        let (buf, _) = three();
        let (r, seqs) = replay(&buf, true, false).unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(r.valid_bytes, buf.len() as u64);
        assert_eq!(r.torn_at, None);
        assert_eq!(r.last_seq, 3);
    }

    #[test]
    fn every_prefix_of_the_last_segment_is_a_clean_torn_tail() {
        let (buf, starts) = three();
        for cut in 0..buf.len() {
            let (r, seqs) = replay(&buf[..cut], true, false).unwrap();
            let complete = starts
                .iter()
                .skip(1)
                .chain([&buf.len()])
                .filter(|&&e| e <= cut)
                .count();
            assert_eq!(seqs.len(), complete, "cut at {cut}");
            assert_eq!(
                r.torn_at.is_some(),
                !starts.contains(&cut) && cut != buf.len()
            );
            // Zero-filled to full length: still torn, never corruption.
            let mut z = buf[..cut].to_vec();
            z.resize(buf.len(), 0);
            let (_, zs) = replay(&z, true, false).unwrap();
            assert_eq!(zs.len(), complete, "zero fill after {cut}");
        }
    }

    #[test]
    fn a_torn_record_in_a_non_last_segment_is_corruption() {
        let (buf, starts) = three();
        let err = replay(&buf[..buf.len() - 1], false, false).unwrap_err();
        match err {
            Error::Corruption { offset, .. } => assert_eq!(offset, starts[2] as u64),
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn a_flipped_byte_before_the_tail_is_corruption_naming_the_offset() {
        let (buf, starts) = three();
        for pos in 0..starts[2] {
            let mut bad = buf.clone();
            bad[pos] ^= 0x5a;
            let err = replay(&bad, true, false).unwrap_err();
            let Error::Corruption { offset, file, .. } = err else {
                panic!("expected corruption for flip at {pos}");
            };
            assert_eq!(file, PathBuf::from("000001.log"));
            let rec = if pos < starts[1] {
                starts[0]
            } else {
                starts[1]
            };
            assert_eq!(offset, rec as u64, "flip at {pos}");
        }
    }

    #[test]
    fn salvage_skips_the_corrupt_record_and_keeps_the_rest() {
        let (mut buf, starts) = three();
        buf[starts[1] + RECORD_HEADER_BYTES + 2] ^= 1;
        let (r, seqs) = replay(&buf, true, true).unwrap();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(r.salvaged_bytes, (starts[2] - starts[1]) as u64);
        // A smashed header is skipped by scanning for the next good record.
        let (mut buf, starts) = three();
        buf[starts[1] + 5] ^= 0xff;
        let (_, seqs) = replay(&buf, true, true).unwrap();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn sequence_numbers_must_increase() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 5, &batch(0));
        encode_record(&mut buf, 5, &batch(1));
        assert!(replay(&buf, true, false).unwrap_err().is_corruption());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>, is_last: bool, salvage: bool) {
            let _ = replay_segment(&bytes, &PathBuf::from("x.log"), is_last, salvage, 0, |_, _| Ok(()));
        }

        #[test]
        fn mutated_logs_never_panic(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..4)) {
            let (mut buf, _) = three();
            for (pos, x) in flips {
                let n = buf.len();
                buf[pos % n] ^= x;
            }
            let _ = replay_segment(&buf, &PathBuf::from("x.log"), true, false, 0, |_, _| Ok(()));
        }
    }
}
