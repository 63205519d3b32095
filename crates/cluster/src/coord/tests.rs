//! The coordinator on a node alone: limits, conditions, expiry, siblings.

use std::sync::Arc;

use bytes::Bytes;

use crate::api::{Condition, Consistency, Expiry, Kv, KvError, ReadOptions, WriteOptions};
use crate::causality::VersionVector;
use crate::node::{Node, NodeConfig};
use crate::store::MemStore;
use ringkv_env::{Clock, ManualClock};
use std::time::Duration;

fn node() -> (Node<MemStore>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = NodeConfig {
        key_bytes_max: 8,
        value_bytes_max: 16,
        siblings_max: 3,
        ..NodeConfig::default()
    };
    let node = Node::new(7, MemStore::default(), clock.clone(), config);
    (node, clock)
}

fn k(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn value(node: &Node<MemStore>, key: &str) -> Option<Bytes> {
    let r = node.get(k(key), ReadOptions::default()).await.expect("get");
    r.resolved().map(|s| s.value.clone())
}

#[tokio::test]
async fn put_get_delete_roundtrip() {
    let (node, _) = node();
    assert_eq!(value(&node, "a").await, None);
    let out = node
        .put(k("a"), k("1"), WriteOptions::default())
        .await
        .expect("put");
    assert!(out.applied);
    node.put(k("a"), k("2"), WriteOptions::default())
        .await
        .expect("put");
    assert_eq!(value(&node, "a").await, Some(k("2")));
    // Plain writes supersede what the node sees: no siblings.
    let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
    assert_eq!(r.siblings.len(), 1);
    let del = node
        .delete(k("a"), WriteOptions::default())
        .await
        .expect("delete");
    assert!(del.applied);
    assert_eq!(value(&node, "a").await, None);
    let again = node
        .delete(k("a"), WriteOptions::default())
        .await
        .expect("delete");
    assert!(
        !again.applied,
        "deleting a missing key reports nothing deleted"
    );
    assert_eq!(node.count_keys().await.expect("count"), 0);
}

#[tokio::test]
async fn conditions_and_previous_value() {
    let (node, _) = node();
    let nx = WriteOptions {
        condition: Condition::IfAbsent,
        ..WriteOptions::default()
    };
    assert!(
        node.put(k("a"), k("1"), nx.clone())
            .await
            .expect("nx")
            .applied
    );
    assert!(!node.put(k("a"), k("2"), nx).await.expect("nx").applied);
    assert_eq!(value(&node, "a").await, Some(k("1")));
    let xx = WriteOptions {
        condition: Condition::IfPresent,
        return_previous: true,
        ..WriteOptions::default()
    };
    let out = node.put(k("a"), k("3"), xx.clone()).await.expect("xx");
    assert!(out.applied);
    assert_eq!(out.previous.map(|p| p.value), Some(k("1")));
    assert!(!node.put(k("b"), k("3"), xx).await.expect("xx").applied);
    assert_eq!(value(&node, "b").await, None);
}

#[tokio::test]
async fn expiry_hides_keys_and_can_be_changed() {
    let (node, clock) = node();
    let now = clock.now_ms();
    let opts = WriteOptions {
        expiry: Expiry::At(now + 1_000),
        ..WriteOptions::default()
    };
    node.put(k("a"), k("1"), opts).await.expect("put");
    // KEEPTTL keeps it through an overwrite.
    let keep = WriteOptions {
        expiry: Expiry::Keep,
        ..WriteOptions::default()
    };
    node.put(k("a"), k("2"), keep).await.expect("put");
    let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
    assert_eq!(
        r.resolved().and_then(|s| s.expires_at_ms),
        Some(now + 1_000)
    );
    clock.advance(Duration::from_millis(999));
    assert_eq!(value(&node, "a").await, Some(k("2")));
    clock.advance(Duration::from_millis(1));
    assert_eq!(value(&node, "a").await, None);
    assert!(
        !node
            .set_expiry(k("a"), Expiry::Never, WriteOptions::default())
            .await
            .expect("persist"),
        "an expired key cannot be persisted"
    );
    node.put(k("b"), k("1"), WriteOptions::default())
        .await
        .expect("put");
    let later = clock.now_ms() + 50;
    assert!(
        node.set_expiry(k("b"), Expiry::At(later), WriteOptions::default())
            .await
            .expect("expire")
    );
    let r = node.get(k("b"), ReadOptions::default()).await.expect("get");
    assert_eq!(r.resolved().and_then(|s| s.expires_at_ms), Some(later));
    assert!(
        node.set_expiry(k("b"), Expiry::Never, WriteOptions::default())
            .await
            .expect("persist")
    );
    clock.advance(Duration::from_millis(100));
    assert_eq!(value(&node, "b").await, Some(k("1")));
    // An expiry in the past deletes.
    let past = clock.now_ms() - 1;
    assert!(
        node.set_expiry(k("b"), Expiry::At(past), WriteOptions::default())
            .await
            .expect("expire")
    );
    assert_eq!(value(&node, "b").await, None);
}

#[tokio::test]
async fn stale_contexts_make_siblings_and_a_merged_context_resolves() {
    let (node, _) = node();
    node.put(k("a"), k("base"), WriteOptions::default())
        .await
        .expect("put");
    let seen = node.get(k("a"), ReadOptions::default()).await.expect("get");
    for v in ["x", "y"] {
        let opts = WriteOptions {
            context: Some(seen.context.clone()),
            ..WriteOptions::default()
        };
        node.put(k("a"), k(v), opts).await.expect("put");
    }
    let both = node.get(k("a"), ReadOptions::default()).await.expect("get");
    let mut values: Vec<_> = both.siblings.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(values, vec![k("x"), k("y")]);
    // LWW resolver picks the later write.
    assert_eq!(both.resolved().map(|s| s.value.clone()), Some(k("y")));
    let opts = WriteOptions {
        context: Some(both.context.clone()),
        ..WriteOptions::default()
    };
    node.put(k("a"), k("z"), opts).await.expect("put");
    let one = node.get(k("a"), ReadOptions::default()).await.expect("get");
    assert_eq!(one.siblings.len(), 1);
    assert_eq!(one.siblings[0].value, k("z"));
}

#[tokio::test]
async fn siblings_are_bounded() {
    let (node, _) = node();
    for i in 0..10 {
        let opts = WriteOptions {
            context: Some(VersionVector::new()),
            ..WriteOptions::default()
        };
        node.put(k("a"), k(&i.to_string()), opts)
            .await
            .expect("put");
    }
    let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
    assert_eq!(r.siblings.len(), 3);
    let mut values: Vec<_> = r.siblings.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(values, vec![k("7"), k("8"), k("9")]);
}

#[tokio::test]
async fn limits_and_unreachable_levels_are_errors() {
    let (node, _) = node();
    let err = node
        .put(k("123456789"), k("v"), WriteOptions::default())
        .await
        .expect_err("key too large");
    assert_eq!(err, KvError::KeyTooLarge { len: 9, max: 8 });
    let err = node
        .put(k("a"), Bytes::from(vec![0u8; 17]), WriteOptions::default())
        .await
        .expect_err("value too large");
    assert_eq!(err, KvError::ValueTooLarge { len: 17, max: 16 });
    let two = ReadOptions {
        consistency: Some(Consistency::Count(2)),
    };
    let err = node.get(k("a"), two).await.expect_err("R=2 on one node");
    assert!(
        matches!(
            err,
            KvError::Unavailable {
                required: 2,
                answered: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(value(&node, "a").await, None, "nothing was written");
}
