//! [`MemStore`]: a [`LocalStore`] in memory, for tests and examples.
//!
//! Records are kept under the same keys as [`super::EngineStore`] keeps them
//! (`token:u64be ++ key`), so scans visit them in the same order.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{LocalStore, StoreError, StoreFigure, engine_key};

/// A map of records.
#[derive(Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<Vec<u8>, Bytes>>,
}

impl LocalStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.map.lock().get(&engine_key(key)).cloned())
    }

    fn put(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.map
            .lock()
            .insert(engine_key(key), Bytes::copy_from_slice(record));
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.map.lock().remove(&engine_key(key));
        Ok(())
    }

    fn scan_tokens(
        &self,
        start: u64,
        end: u64,
        include_start: bool,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StoreError> {
        let lower = start.to_be_bytes().to_vec();
        let upper = match end.checked_add(1) {
            Some(u) => Bound::Excluded(u.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        // A copy, so `visit` may call back into the store.
        let hits: Vec<(Vec<u8>, Bytes)> = self
            .map
            .lock()
            .range((Bound::Included(lower), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (ekey, record) in hits {
            let Some((token, key)) = ekey.split_first_chunk::<8>() else {
                continue;
            };
            if !include_start && u64::from_be_bytes(*token) == start {
                continue;
            }
            if !visit(key, &record) {
                break;
            }
        }
        Ok(())
    }

    fn stats(&self) -> Vec<StoreFigure> {
        vec![StoreFigure::gauge(
            "records",
            self.map.lock().len() as f64,
            "Records held in memory (tombstones included)",
        )]
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn blocking_writes(&self) -> bool {
        false
    }
}
