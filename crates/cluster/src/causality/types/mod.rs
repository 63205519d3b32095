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
pub use record::{Component, Kind, Record, Typed};

/// For the property tests: the three laws of a join, checked on three
/// states of one history; returns `a ⊔ b ⊔ c`.
#[cfg(test)]
pub(crate) fn check_join_laws<T: Clone + PartialEq + std::fmt::Debug>(
    a: &T,
    b: &T,
    c: &T,
    join: impl Fn(&mut T, &T),
) -> Result<T, proptest::test_runner::TestCaseError> {
    let joined = |x: &T, y: &T| {
        let mut out = x.clone();
        join(&mut out, y);
        out
    };
    let ab = joined(a, b);
    proptest::prop_assert_eq!(&ab, &joined(b, a), "commutative");
    let ab_c = joined(&ab, c);
    proptest::prop_assert_eq!(&ab_c, &joined(a, &joined(b, c)), "associative");
    proptest::prop_assert_eq!(&joined(a, a), a, "idempotent");
    Ok(ab_c)
}
