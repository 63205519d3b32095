//! The RESP2/RESP3 value reader (`parse_frame`, used for replies) on
//! arbitrary bytes: a frame, "need more" or an error, never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_resp::Limits;
use ringkv_resp::frame::parse_frame;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        bulk_bytes_max: 4096,
        args_max: 64,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(data);
    for _ in 0..=data.len() {
        match parse_frame(&mut buf, &limits) {
            Ok(Some(_)) if !buf.is_empty() => continue,
            _ => break,
        }
    }
});
