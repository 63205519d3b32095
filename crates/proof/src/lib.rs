//! ringkv's proof harness: the guarantees of the brief shown, not claimed.
//!
//! # Layout
//! - [`history`]: operations with invoke / ok / fail / unknown outcomes and
//!   their times, and what the workloads write.
//! - [`checker`]: what a history plus the final reads must satisfy (no
//!   acknowledged write lost, no stale read under strict quorum, nothing
//!   never written).
//! - [`sim`]: the deterministic simulation: the real node code of a whole
//!   cluster in one thread, over a simulated network, clock and disk, all
//!   driven by one seed.
//! - [`scale`]: the scale simulation: the membership of a thousand nodes
//!   and more (gossip, failure detection, rings, token allocation) on the
//!   simulated network, with its costs measured.
//!
//! The Jepsen-style runs and the crash loop on real processes live in the
//! binary (`ringkv prove`) and share the history and the checkers.

pub mod checker;
pub mod history;
pub mod scale;
pub mod sim;
