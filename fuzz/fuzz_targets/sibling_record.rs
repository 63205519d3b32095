//! Stored records (a key's sibling set) as read from storage or received
//! from a replica: `SiblingSet::decode` on arbitrary bytes, errors only.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringkv_cluster::SiblingSet;

fuzz_target!(|data: &[u8]| {
    let _ = SiblingSet::decode(&Bytes::copy_from_slice(data));
});
