//! Causal contexts as clients send them back (RESP `CONTEXT`, HTTP
//! `X-Ringkv-Context`): `VersionVector::decode_context` on arbitrary bytes.
//! A context that decodes must encode back to bytes that decode to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_cluster::VersionVector;

fuzz_target!(|data: &[u8]| {
    if let Ok(vv) = VersionVector::decode_context(data) {
        let again = VersionVector::decode_context(&vv.encode_context())
            .expect("re-encoded context decodes");
        assert_eq!(again, vv);
    }
});
