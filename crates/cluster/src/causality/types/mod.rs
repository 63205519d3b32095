//! Convergent data types: the states of counter, set and hash keys, their
//! joins and encodings (docs/design/data-types.md). Each join is
//! commutative, associative and idempotent, so replicas that have seen the
//! same operations hold the same state whatever the order of merges.
//!
//! Not yet wired into records or commands: this is the algebra, proven by
//! its property tests, that record format 2 will carry.

pub mod counter;
pub mod map;
pub mod orset;
pub mod record;

pub use counter::{Base, Counter, CounterError, Counts, EntryId, STAND_IN_EPOCH};
pub use map::{Field, FieldValue, FieldWrite, Map};
pub use orset::OrSet;
pub use record::{Kind, Record, Typed};
