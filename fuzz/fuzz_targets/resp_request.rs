//! The server's request parser (`RequestParser`, RESP arrays and inline
//! commands) on arbitrary bytes, fed whole and then in two pieces: it must
//! answer requests, "need more" or an error, and never panic or loop.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_resp::{Limits, RequestParser};

fn limits() -> Limits {
    Limits {
        bulk_bytes_max: 4096,
        args_max: 64,
        inline_bytes_max: 1024,
        request_bytes_max: 1 << 16,
        ..Limits::default()
    }
}

/// Parses every complete request; false after an error (the server closes
/// the connection then, and the parser must not be called again).
fn drain(parser: &mut RequestParser, buf: &mut BytesMut, rounds_max: usize) -> bool {
    let mut args = Vec::new();
    let mut rounds = 0;
    loop {
        match parser.parse(buf, &mut args) {
            Ok(true) => {
                assert!(!args.is_empty() && args.len() <= limits().args_max);
                rounds += 1;
                assert!(rounds <= rounds_max, "more requests than bytes");
            }
            Ok(false) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parser = RequestParser::new(limits());
    let mut buf = BytesMut::from(data);
    drain(&mut parser, &mut buf, data.len());

    // The same bytes arriving in two reads.
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut parser = RequestParser::new(limits());
    let mut buf = BytesMut::from(&data[..split]);
    if drain(&mut parser, &mut buf, data.len()) {
        buf.extend_from_slice(&data[split..]);
        drain(&mut parser, &mut buf, data.len());
    }
});
