//! Test doubles shared by the cluster's tests.

use std::collections::BTreeMap;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::store::{LocalStore, StoreError};

/// A stand-in for the engine in unit tests: a map of records. Expiry is left
/// to the record's own siblings, as the coordinator filters them anyway.
#[derive(Default)]
pub struct MapStore {
    map: Mutex<BTreeMap<Vec<u8>, (Bytes, Option<u64>)>>,
}

impl LocalStore for MapStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.map.lock().get(key).map(|(v, _)| v.clone()))
    }
    fn put(&self, key: &[u8], record: &[u8], exp: Option<u64>) -> Result<(), StoreError> {
        self.map
            .lock()
            .insert(key.to_vec(), (Bytes::copy_from_slice(record), exp));
        Ok(())
    }
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<(), StoreError> {
        for (k, (v, _)) in self.map.lock().iter() {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
    fn stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    fn keys_estimate(&self) -> u64 {
        self.map.lock().len() as u64
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn blocking_writes(&self) -> bool {
        false
    }
}
