//! [`MemStore`]: a [`LocalStore`] in memory, for tests.

use std::collections::BTreeMap;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{LocalStore, StoreError};

/// A record and its expiry.
type Stored = (Bytes, Option<u64>);

/// A stand-in for the engine in unit tests: a map of records. Expiry is left
/// to the record's own siblings, as the coordinator filters them anyway.
#[derive(Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<Vec<u8>, Stored>>,
}

impl LocalStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.map.lock().get(key).map(|(v, _)| v.clone()))
    }
    fn put(&self, key: &[u8], record: &[u8], exp: Option<u64>) -> Result<(), StoreError> {
        self.map
            .lock()
            .insert(key.to_vec(), (Bytes::copy_from_slice(record), exp));
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.map.lock().remove(key);
        Ok(())
    }
    fn scan_tokens(
        &self,
        start: u64,
        end: u64,
        include_start: bool,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StoreError> {
        let mut hits: Vec<(u64, Vec<u8>, Bytes)> = self
            .map
            .lock()
            .iter()
            .map(|(k, (v, _))| (crate::ring::token_of(k), k.clone(), v.clone()))
            .filter(|(t, _, _)| (*t > start || (include_start && *t == start)) && *t <= end)
            .collect();
        hits.sort();
        for (_, k, v) in hits {
            if !visit(&k, &v) {
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
