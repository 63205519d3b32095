//! Repair: what brings replicas back into agreement after a failure.
//!
//! - [`hints`]: writes held for a replica that missed them (hinted
//!   handoff), replayed when it returns.
//! - [`merkle`]: Merkle trees over token ranges.
//! - [`anti_entropy`]: replicas comparing those trees and exchanging the
//!   keys that differ, continuously and on demand; the sync ledger behind
//!   the tombstone purge rule.

pub mod anti_entropy;
pub mod hints;
pub mod merkle;
