//! Bounded lists on the wire: a list longer than its limit is refused as
//! soon as its length is read when the bytes left could hold it (postcard
//! writes the length first, and gives it as the list's size only then),
//! before any element is decoded; otherwise at its element one past the
//! limit, or at the end of the bytes. Either way a list never holds more
//! than its limit, and no room is taken ahead beyond it. Used for the
//! lists of the gossip messages, whose limits are the senders' own (so
//! honest peers never meet them): a peer's message cannot make a node
//! allocate more than the limit's worth, whatever the frame's size.
//!
//! A list whose excess must be refused alone, not with the message that
//! holds it (a gossiped state's tokens), is decoded by [`kept`]: at most
//! `KEEP` elements are kept and the rest decoded and dropped, so the
//! receiver still sees that it was too long, at a bounded cost.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// Room taken ahead for a list, at most (the rest grows as elements come).
const PREALLOCATE_MAX: usize = 1_024;

/// Deserializes a `Vec<T>` of at most `MAX` elements (for
/// `#[serde(deserialize_with = "bounded::vec::<N, _, _>")]`).
pub fn vec<'de, const MAX: usize, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(Bounded::<MAX, true, T>(PhantomData))
}

/// Deserializes a `Vec<T>` keeping its first `KEEP` elements; the others
/// are decoded and dropped (for
/// `#[serde(deserialize_with = "bounded::kept::<N, _, _>")]`, `N` one past
/// the most the receiver accepts, so that a longer list is seen as such).
pub fn kept<'de, const KEEP: usize, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(Bounded::<KEEP, false, T>(PhantomData))
}

/// A list of at most `MAX` elements; one past them refuses the list
/// (`REFUSE`) or is decoded and dropped.
struct Bounded<const MAX: usize, const REFUSE: bool, T>(PhantomData<T>);

impl<'de, const MAX: usize, const REFUSE: bool, T: Deserialize<'de>> Visitor<'de>
    for Bounded<MAX, REFUSE, T>
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REFUSE {
            write!(f, "a list of at most {MAX} elements")
        } else {
            write!(f, "a list (its first {MAX} elements kept)")
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if REFUSE && hint > MAX {
            return Err(A::Error::invalid_length(hint, &self));
        }
        let mut out = Vec::with_capacity(hint.min(MAX).min(PREALLOCATE_MAX));
        while let Some(x) = seq.next_element()? {
            if out.len() < MAX {
                out.push(x);
            } else if REFUSE {
                return Err(A::Error::invalid_length(MAX + 1, &self));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Three {
        #[serde(deserialize_with = "super::vec::<3, _, _>")]
        list: Vec<u64>,
        tail: u8,
    }

    #[test]
    fn a_list_past_its_limit_is_refused_before_its_elements() {
        let ok = Three {
            list: vec![1, 2, 3],
            tail: 9,
        };
        let bytes = postcard::to_allocvec(&ok).expect("encode");
        assert_eq!(postcard::from_bytes::<Three>(&bytes).expect("decode"), ok);
        let long = Three {
            list: vec![1, 2, 3, 4],
            tail: 9,
        };
        // Refused for its length (the visitor's error), before its
        // elements are decoded.
        let bytes = postcard::to_allocvec(&long).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Three>(&bytes).err(),
            Some(postcard::Error::SerdeDeCustom)
        );
        // A length past the limit and past the bytes left: read element
        // by element, and refused at the one past the limit (never more
        // than the limit held), or at the end of the bytes.
        assert_eq!(
            postcard::from_bytes::<Three>(&[100, 1, 2, 3, 4, 5]).err(),
            Some(postcard::Error::SerdeDeCustom)
        );
        assert_eq!(
            postcard::from_bytes::<Three>(&[100, 1, 2]).err(),
            Some(postcard::Error::DeserializeUnexpectedEnd)
        );
        // A length past the bytes left: postcard itself refuses it.
        let bytes = [0x80, 0x94, 0xeb, 0xdc, 0x03];
        assert!(postcard::from_bytes::<Three>(&bytes).is_err());
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct KeepTwo {
        #[serde(deserialize_with = "super::kept::<2, _, _>")]
        list: Vec<u64>,
        tail: u8,
    }

    #[test]
    fn a_kept_list_keeps_its_first_elements_and_decodes_past_the_rest() {
        for n in 0..5u64 {
            let whole = KeepTwo {
                list: (1..=n).collect(),
                tail: 9,
            };
            let bytes = postcard::to_allocvec(&whole).expect("encode");
            let decoded = postcard::from_bytes::<KeepTwo>(&bytes).expect("decode");
            assert_eq!(decoded.list, (1..=n.min(2)).collect::<Vec<_>>());
            // What follows the list is read where it is.
            assert_eq!(decoded.tail, 9);
        }
    }
}
