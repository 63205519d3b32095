//! Tests of the data types' writes at a replica: counters, sets and hashes
//! with Redis's replies and errors, the kind rules (`WRONGTYPE`, a counter
//! from a string, a string write over a data type), the limits, and
//! concurrent writes on two replicas merging without losing any.

use super::*;

type Replica = LocalReplica<crate::store::MemStore>;

/// Replica `id` on an empty in-memory store, its clock at 10 s, epoch 1.
fn replica(id: u64) -> Replica {
    let clock: SharedClock = std::sync::Arc::new(ringkv_env::ManualClock::new(10_000));
    let r = LocalReplica::new(id, crate::store::MemStore::default(), clock, 64).with_type_limits(
        TypeLimits {
            set_members_max: 4,
            hash_fields_max: 3,
            counter_entries_max: 8,
            record_bytes_max: 1_000,
        },
    );
    r.set_epoch(1);
    r
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn bs(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| b(s)).collect()
}

/// A typed write's integer reply, and whether it wrote a record.
fn typed(r: &Replica, key: &str, change: TypedChange) -> Result<(i64, bool), KvError> {
    let (out, record) = r.update_buffered(
        key.as_bytes(),
        Change::Typed(change),
        &WriteOptions::default(),
    )?;
    assert_eq!(out.applied, record.is_some());
    Ok((out.integer.expect("an integer reply"), record.is_some()))
}

fn incr(r: &Replica, key: &str, delta: i64) -> Result<i64, KvError> {
    typed(r, key, TypedChange::Increment(delta)).map(|(v, _)| v)
}

fn set_string(r: &Replica, key: &str, value: &str, opts: &WriteOptions) -> WriteOutcome {
    r.update_buffered(key.as_bytes(), Change::Put(b(value)), opts)
        .expect("set")
        .0
}

fn kind(r: &Replica, key: &str) -> Option<Kind> {
    r.read_record(key.as_bytes()).expect("read").kind(10_000)
}

fn counter(r: &Replica, key: &str) -> i128 {
    r.read_record(key.as_bytes())
        .expect("read")
        .counter
        .state
        .value()
}

fn members(r: &Replica, key: &str) -> Vec<Bytes> {
    let record = r.read_record(key.as_bytes()).expect("read");
    record.set.state.members().cloned().collect()
}

#[test]
fn counters_count_from_nothing_or_from_an_integer_string() {
    let r = replica(1);
    assert_eq!(incr(&r, "c", 1), Ok(1));
    assert_eq!(incr(&r, "c", 5), Ok(6));
    assert_eq!(incr(&r, "c", -7), Ok(-1));
    assert_eq!(kind(&r, "c"), Some(Kind::Counter));
    assert_eq!(counter(&r, "c"), -1);
    // From a string holding an integer, as Redis does.
    set_string(&r, "s", "10", &WriteOptions::default());
    assert_eq!(incr(&r, "s", 1), Ok(11));
    assert_eq!(kind(&r, "s"), Some(Kind::Counter));
    assert!(
        r.read_record(b"s")
            .expect("read")
            .strings
            .siblings
            .is_empty(),
        "the string it started from is superseded"
    );
    // Strings Redis does not read as integers.
    for bad in [
        "abc",
        "",
        " 1",
        "01",
        "-0",
        "+1",
        "1.5",
        "99999999999999999999",
    ] {
        set_string(&r, "bad", bad, &WriteOptions::default());
        assert_eq!(
            incr(&r, "bad", 1),
            Err(KvError::NotAnInteger { hash: false }),
            "{bad:?}"
        );
        assert_eq!(kind(&r, "bad"), Some(Kind::String), "{bad:?} unchanged");
    }
    set_string(&r, "min", &i64::MIN.to_string(), &WriteOptions::default());
    assert_eq!(incr(&r, "min", 1), Ok(i64::MIN + 1));
    // Overflow is refused and changes nothing.
    assert_eq!(incr(&r, "c", i64::MAX), Ok(i64::MAX - 1));
    assert_eq!(incr(&r, "c", 2), Err(KvError::Overflow));
    assert_eq!(counter(&r, "c"), i128::from(i64::MAX - 1));
}

#[test]
fn a_string_write_over_a_data_type_supersedes_it() {
    let r = replica(1);
    incr(&r, "c", 5).expect("incr");
    // SET ... GET returns a counter's value: a counter is a string.
    let with_get = WriteOptions {
        return_previous: true,
        ..WriteOptions::default()
    };
    let out = set_string(&r, "c", "x", &with_get);
    assert_eq!(out.previous.map(|p| p.value), Some(b("5")));
    assert_eq!(kind(&r, "c"), Some(Kind::String));
    assert_eq!(counter(&r, "c"), 0, "the counter it saw is removed");
    assert_eq!(incr(&r, "c", 1), Err(KvError::NotAnInteger { hash: false }));
    // A set: present for NX and XX, WRONGTYPE for GET, gone after SET.
    typed(&r, "s", TypedChange::SetAdd(bs(&["a"]))).expect("sadd");
    let nx = WriteOptions {
        condition: Condition::IfAbsent,
        ..WriteOptions::default()
    };
    assert!(!set_string(&r, "s", "x", &nx).applied);
    assert_eq!(
        r.update_buffered(b"s", Change::Put(b("x")), &with_get)
            .map(|(o, _)| o),
        Err(KvError::WrongType)
    );
    assert_eq!(kind(&r, "s"), Some(Kind::Set));
    assert!(set_string(&r, "s", "x", &WriteOptions::default()).applied);
    assert_eq!(kind(&r, "s"), Some(Kind::String));
    assert!(members(&r, "s").is_empty());
    // DEL of a hash removes every field it sees.
    typed(
        &r,
        "h",
        TypedChange::HashSet {
            fields: vec![(b("f"), b("v"))],
            if_absent: false,
        },
    )
    .expect("hset");
    let (out, record) = r
        .update_buffered(b"h", Change::Delete, &WriteOptions::default())
        .expect("del");
    assert!(out.applied, "DEL counts a key of a data type");
    assert!(record.is_some());
    assert_eq!(kind(&r, "h"), None);
    // Keys of data types do not expire yet: said, not ignored.
    typed(&r, "s2", TypedChange::SetAdd(bs(&["a"]))).expect("sadd");
    let expire = r.update_buffered(
        b"s2",
        Change::Expiry(Expiry::At(20_000)),
        &WriteOptions::default(),
    );
    assert!(
        matches!(expire, Err(KvError::InvalidArgument(_))),
        "{expire:?}"
    );
}

#[test]
fn sets_add_and_remove_members_with_redis_replies() {
    let r = replica(1);
    let add = |items: &[&str]| typed(&r, "s", TypedChange::SetAdd(bs(items)));
    let rem = |items: &[&str]| typed(&r, "s", TypedChange::SetRemove(bs(items)));
    assert_eq!(rem(&["a"]), Ok((0, false)), "SREM of an absent key");
    assert_eq!(add(&["a", "b"]), Ok((2, true)));
    assert_eq!(add(&["b", "c", "c"]), Ok((1, true)));
    assert_eq!(add(&["a"]), Ok((0, true)), "nothing new, but a fresh add");
    assert_eq!(rem(&["a", "zz"]), Ok((1, true)));
    assert_eq!(rem(&["zz"]), Ok((0, false)));
    assert_eq!(members(&r, "s"), bs(&["b", "c"]));
    // The limit (4 members here) refuses the write whole.
    assert_eq!(add(&["d", "e"]), Ok((2, true)));
    let over = add(&["f"]);
    assert!(matches!(over, Err(KvError::TooManyElements(_))), "{over:?}");
    assert_eq!(members(&r, "s"), bs(&["b", "c", "d", "e"]));
    // The record's size is bounded too (1,000 bytes here).
    let big = typed(
        &r,
        "big",
        TypedChange::SetAdd(vec![Bytes::from(vec![b'x'; 1_100])]),
    );
    assert!(matches!(big, Err(KvError::ValueTooLarge { .. })), "{big:?}");
    assert_eq!(kind(&r, "big"), None, "nothing written");
    // The last member removed: the key is gone.
    assert_eq!(rem(&["b", "c", "d", "e"]), Ok((4, true)));
    assert_eq!(kind(&r, "s"), None);
    // Another kind: WRONGTYPE, for adds and removes alike.
    incr(&r, "c", 1).expect("incr");
    set_string(&r, "str", "v", &WriteOptions::default());
    for key in ["c", "str"] {
        for change in [
            TypedChange::SetAdd(bs(&["a"])),
            TypedChange::SetRemove(bs(&["a"])),
            TypedChange::HashDelete(bs(&["a"])),
        ] {
            assert_eq!(typed(&r, key, change), Err(KvError::WrongType), "{key}");
        }
    }
    assert_eq!(
        incr(&r, "s-none", 1).and_then(|_| typed(&r, "s-none", TypedChange::SetAdd(bs(&["a"])))),
        Err(KvError::WrongType)
    );
}

#[test]
fn hashes_set_count_and_remove_fields_with_redis_replies() {
    let r = replica(1);
    let hset = |fields: &[(&str, &str)], if_absent: bool| {
        let fields = fields.iter().map(|(f, v)| (b(f), b(v))).collect();
        typed(&r, "h", TypedChange::HashSet { fields, if_absent })
    };
    let hincr = |field: &str, delta: i64| {
        typed(
            &r,
            "h",
            TypedChange::HashIncrement {
                field: b(field),
                delta,
            },
        )
    };
    assert_eq!(hset(&[("f1", "v1"), ("f2", "v2")], false), Ok((2, true)));
    assert_eq!(hset(&[("f1", "v9"), ("f1", "v8")], false), Ok((0, true)));
    assert_eq!(
        hset(&[("f1", "x")], true),
        Ok((0, false)),
        "HSETNX of a field present"
    );
    assert_eq!(hset(&[("f3", "7")], true), Ok((1, true)));
    assert_eq!(
        hincr("f3", 1),
        Ok((8, true)),
        "from a value holding an integer"
    );
    assert_eq!(hincr("f3", -10), Ok((-2, true)));
    assert_eq!(
        hincr("f1", 1),
        Err(KvError::NotAnInteger { hash: true }),
        "f1 holds v8"
    );
    assert_eq!(hincr("f3", i64::MAX), Ok((i64::MAX - 2, true)));
    assert_eq!(hincr("f3", 3), Err(KvError::Overflow));
    // A value written over a counted field, then counted again: from the
    // value.
    assert_eq!(hset(&[("f3", "100")], false), Ok((0, true)));
    assert_eq!(hincr("f3", 1), Ok((101, true)));
    let record = r.read_record(b"h").expect("read");
    let fields: Vec<(Bytes, String)> = (record.hash.state.present())
        .map(|(name, value)| {
            let shown = match value {
                crate::causality::types::FieldValue::Value(v) => {
                    String::from_utf8_lossy(v).into_owned()
                }
                crate::causality::types::FieldValue::Counter(c) => c.value().to_string(),
            };
            (name.clone(), shown)
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            (b("f1"), "v8".to_string()),
            (b("f2"), "v2".to_string()),
            (b("f3"), "101".to_string())
        ]
    );
    // The limit (3 fields here).
    let over = hset(&[("f4", "v")], false);
    assert!(matches!(over, Err(KvError::TooManyElements(_))), "{over:?}");
    assert_eq!(
        typed(&r, "h", TypedChange::HashDelete(bs(&["f2", "zz"]))),
        Ok((1, true))
    );
    assert_eq!(hincr("f4", 2), Ok((2, true)), "a new field counts from 0");
    assert_eq!(kind(&r, "h"), Some(Kind::Hash));
    assert_eq!(incr(&r, "h", 1), Err(KvError::WrongType));
}

/// Two replicas each take writes of one key while apart, then exchange
/// their records: every increment counts once, an add concurrent with a
/// removal survives it, a DEL removes only what it saw.
#[test]
fn concurrent_writes_on_two_replicas_merge_without_losing_any() {
    let (a, b2) = (replica(1), replica(2));
    let exchange = |x: &Replica, y: &Replica, key: &str| {
        let rx = x.read_record(key.as_bytes()).expect("read");
        let ry = y.read_record(key.as_bytes()).expect("read");
        x.merge(key.as_bytes(), &ry).expect("merge");
        y.merge(key.as_bytes(), &rx).expect("merge");
    };
    for _ in 0..3 {
        incr(&a, "c", 1).expect("incr");
        incr(&b2, "c", 10).expect("incr");
    }
    exchange(&a, &b2, "c");
    assert_eq!((counter(&a, "c"), counter(&b2, "c")), (33, 33));
    // DEL on b while a increments: the increment b did not see survives.
    b2.update_buffered(b"c", Change::Delete, &WriteOptions::default())
        .expect("del");
    assert_eq!(incr(&a, "c", 5), Ok(38));
    exchange(&a, &b2, "c");
    assert_eq!((counter(&a, "c"), counter(&b2, "c")), (5, 5));
    // Sets: a removes m and n (seen), b adds m again concurrently (m is
    // present there: the add still takes a fresh dot) and o: add wins.
    typed(&a, "s", TypedChange::SetAdd(bs(&["m", "n"]))).expect("sadd");
    exchange(&a, &b2, "s");
    typed(&a, "s", TypedChange::SetRemove(bs(&["m", "n"]))).expect("srem");
    assert_eq!(
        typed(&b2, "s", TypedChange::SetAdd(bs(&["m", "o"]))),
        Ok((1, true)),
        "one new member; m added again"
    );
    exchange(&a, &b2, "s");
    assert_eq!(members(&a, "s"), bs(&["m", "o"]));
    assert_eq!(members(&a, "s"), members(&b2, "s"));
    // A stand-in (nothing stored) counts each of its increments in an
    // entry of its own: two of them, merged into a replica, both count.
    let stand_in = replica(3);
    let mut total = a.read_record(b"c").expect("read");
    for _ in 0..2 {
        let (out, record) = stand_in
            .version_unstored(
                b"c",
                Change::Typed(TypedChange::Increment(100)),
                &WriteOptions::default(),
            )
            .expect("stand-in");
        assert_eq!(out.integer, Some(100), "it sees only its own view");
        total.merge(&record.expect("a record"));
    }
    a.merge(b"c", &total).expect("merge");
    assert_eq!(counter(&a, "c"), 205);
}

/// Strings parse as Redis's `string2ll` does.
#[test]
fn integers_parse_as_redis_reads_them() {
    for (s, v) in [
        ("0", Some(0)),
        ("-1", Some(-1)),
        ("9223372036854775807", Some(i64::MAX)),
        ("-9223372036854775808", Some(i64::MIN)),
        ("9223372036854775808", None),
        ("-0", None),
        ("007", None),
        ("1 ", None),
        ("-", None),
        ("", None),
    ] {
        assert_eq!(parse_integer(s.as_bytes()), v, "{s:?}");
    }
}

/// A counter's entry is written again only while its owner's copy is the
/// newest: after the dead record is purged here (a replica elsewhere still
/// holding it), or after an epoch switch, increments go to a new entry,
/// and none is lost.
#[test]
fn increments_never_reuse_an_entry_another_replica_may_hold_ahead() {
    let (a, b2) = (replica(1), replica(2));
    for _ in 0..5 {
        incr(&a, "c", 1).expect("incr");
    }
    a.update_buffered(b"c", Change::Delete, &WriteOptions::default())
        .expect("del");
    // b holds the dead record (5 counted, 5 removed); a purges it.
    let dead = a.read_record(b"c").expect("read");
    b2.merge(b"c", &dead).expect("merge");
    a.remove_record(b"c").expect("purge");
    assert_eq!(incr(&a, "c", 1), Ok(1));
    let fresh = a.read_record(b"c").expect("read");
    b2.merge(b"c", &fresh).expect("merge");
    a.merge(b"c", &b2.read_record(b"c").expect("read"))
        .expect("merge");
    assert_eq!((counter(&a, "c"), counter(&b2, "c")), (1, 1));
    // An epoch switch (a truncation's step) opens a new entry too.
    let entries = |r: &Replica| {
        r.read_record(b"c")
            .expect("read")
            .counter
            .state
            .entry_count()
    };
    let before = entries(&a);
    incr(&a, "c", 1).expect("incr");
    assert_eq!(entries(&a), before, "the same entry within an epoch");
    a.switch_epoch(None, || Ok(2)).expect("switch");
    incr(&a, "c", 1).expect("incr");
    assert_eq!(entries(&a), before + 1, "a new entry after the switch");
    assert_eq!(counter(&a, "c"), 3);
}

/// Redis's edge cases of a counter: an increment by 0 changes nothing (a
/// new key stays absent, a string "0" stays a string); a key with a time
/// to live does not silently lose it by becoming a counter.
#[test]
fn a_zero_increment_changes_nothing_and_a_ttl_is_not_dropped() {
    let r = replica(1);
    assert_eq!(typed(&r, "z", TypedChange::Increment(0)), Ok((0, false)));
    assert_eq!(kind(&r, "z"), None);
    set_string(&r, "s0", "0", &WriteOptions::default());
    assert_eq!(typed(&r, "s0", TypedChange::Increment(0)), Ok((0, false)));
    assert_eq!(kind(&r, "s0"), Some(Kind::String));
    incr(&r, "c", 7).expect("incr");
    assert_eq!(typed(&r, "c", TypedChange::Increment(0)), Ok((7, false)));
    let ttl = WriteOptions {
        expiry: Expiry::At(60_000),
        ..WriteOptions::default()
    };
    set_string(&r, "limited", "1", &ttl);
    let refused = incr(&r, "limited", 1);
    assert!(
        matches!(refused, Err(KvError::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(kind(&r, "limited"), Some(Kind::String));
}

/// Fields kept only for a removed counter's removals count against the
/// hash's limit (3 here): a hash cannot grow past it by HINCRBY and HDEL.
#[test]
fn removed_counted_fields_count_against_the_limit() {
    let r = replica(1);
    for f in ["a", "b", "c"] {
        typed(
            &r,
            "h",
            TypedChange::HashIncrement {
                field: b(f),
                delta: 1,
            },
        )
        .expect("hincrby");
        typed(&r, "h", TypedChange::HashDelete(bs(&[f]))).expect("hdel");
    }
    let over = typed(
        &r,
        "h",
        TypedChange::HashIncrement {
            field: b("d"),
            delta: 1,
        },
    );
    assert!(matches!(over, Err(KvError::TooManyElements(_))), "{over:?}");
}
