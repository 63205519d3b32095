//! Internode frames as a peer's socket delivers them: the header
//! (`decode_header`), then the postcard body as each message type the
//! transport decodes (`Hello`, `Request`, `Response`). Errors only.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_cluster::net::message::{Hello, Request, Response, decode_body, decode_header};

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<Request>(data);
    let _ = decode_body::<Response>(data);
    let _ = decode_body::<Hello>(data);
    if let Ok((_kind, _id, body)) = decode_header(Bytes::copy_from_slice(data)) {
        let _ = decode_body::<Request>(&body);
        let _ = decode_body::<Response>(&body);
        let _ = decode_body::<Hello>(&body);
    }
});
