//! What a client's bytes reach before it has authenticated: the RESP
//! request parser under the pre-AUTH limits (10 arguments of 16 KiB, as
//! Redis), whole and split in two, then switched to the full limits as
//! after AUTH; HTTP Basic credentials; the strict percent-decoding of a
//! key in a path (its pattern is checked before the handler runs).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_resp::{RequestParser, RespConfig};

/// Parses every complete request; false after an error (the connection
/// closes then).
fn drain(
    parser: &mut RequestParser,
    buf: &mut BytesMut,
    args_max: usize,
    rounds_max: usize,
) -> bool {
    let mut args = Vec::new();
    let mut rounds = 0;
    loop {
        match parser.parse(buf, &mut args) {
            Ok(true) => {
                assert!(!args.is_empty() && args.len() <= args_max);
                rounds += 1;
                assert!(rounds <= rounds_max, "more requests than bytes");
            }
            Ok(false) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = RespConfig::default();
    let before = config.unauthenticated_limits();
    let after = config.limits();
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));

    let mut parser = RequestParser::new(before);
    let mut buf = BytesMut::from(&data[..split]);
    if drain(&mut parser, &mut buf, before.args_max, data.len()) {
        // AUTH succeeded in between: the rest under the full limits.
        parser.set_limits(after);
        buf.extend_from_slice(&data[split..]);
        drain(&mut parser, &mut buf, after.args_max, data.len());
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ringkv_http::basic_credentials(text);
    }
    let _ = ringkv_http::percent_decode(data);
});
