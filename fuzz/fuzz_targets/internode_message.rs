//! Internode frames as a peer's socket delivers them: the header
//! (`decode_header`), then the postcard body as each message type the
//! transport decodes (`Hello`, the first frame after the handshake;
//! `Request`, `Response`, with the signatures after a gossip body).
//! Errors only.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_cluster::net::message::{
    Hello, Request, Response, decode_body, decode_header, decode_request, decode_response,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<Request>(data);
    let _ = decode_body::<Response>(data);
    let _ = decode_body::<Hello>(data);
    let _ = decode_request(data);
    let _ = decode_response(data);
    if let Ok((_kind, _id, body)) = decode_header(Bytes::copy_from_slice(data)) {
        let _ = decode_body::<Request>(&body);
        let _ = decode_body::<Response>(&body);
        let _ = decode_body::<Hello>(&body);
    }
});
