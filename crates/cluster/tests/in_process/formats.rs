//! The data types' gate: every member is asked, once a life, which record
//! formats it reads; a node of the version before (which cannot decode the
//! request) keeps the gate closed until it restarts on the new version.

use std::sync::Arc;

use super::*;
use ringkv_cluster::net::message::{ErrorDetail, Request, Response};
use ringkv_cluster::net::{BoxFut, Handler};

/// A node of the version before, as its peers see it: it answers the
/// request it cannot decode with the error its transport gives, refuses a
/// record of format 2 as it would (and counts those it was sent), and
/// answers everything else as the node does.
struct Older(Arc<dyn Handler>, Arc<std::sync::atomic::AtomicUsize>);

impl Handler for Older {
    fn handle(&self, from: u64, req: Request) -> BoxFut<Response> {
        let undecodable = || -> BoxFut<Response> {
            Box::pin(async {
                Response::error(ErrorDetail::InvalidArgument(
                    "body does not decode: Found an enum discriminant that was not expected".into(),
                ))
            })
        };
        let typed = |record: &Bytes| record.get(1) == Some(&2);
        let sent_typed = match &req {
            Request::RecordFormats => return undecodable(),
            Request::Merge { record, .. } | Request::Hint { record, .. } => typed(record),
            Request::StreamPush { entries, .. } => entries.iter().any(|(_, r)| typed(r)),
            _ => false,
        };
        if sent_typed {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return undecodable();
        }
        self.0.handle(from, req)
    }
}

#[tokio::test(start_paused = true)]
async fn data_types_wait_until_every_member_reads_their_records() {
    let mut c = cluster(3, 3);
    for node in &c.nodes {
        assert!(node.data_types_gate().is_err(), "nobody asked yet");
    }
    // Node 2 runs the version before.
    let old = c.nodes[2].id();
    let sent_typed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    c.net.register(
        old,
        Arc::new(Older(c.nodes[2].handler(), Arc::clone(&sent_typed))),
    );
    for node in &c.nodes {
        node.ask_record_formats().await;
    }
    // Typed writes are refused everywhere, and no record of a data type
    // reaches the older node.
    for node in &c.nodes[..2] {
        let refused = node
            .write_typed(
                b("k"),
                ringkv_cluster::replica::TypedChange::Increment(1),
                w(Consistency::One),
            )
            .await;
        assert!(
            matches!(refused, Err(KvError::InvalidArgument(_))),
            "{refused:?}"
        );
    }
    c.pass(2_000).await;
    assert_eq!(sent_typed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let closed = c.nodes[0].data_types_gate();
    assert!(
        matches!(&closed, Err(KvError::InvalidArgument(m))
            if m.contains("wait for every node to run ringkv") && m.contains("1 node(s) of an older version")),
        "{closed:?}"
    );
    // A member down is not asked, and keeps the gate closed too.
    c.kill(old);
    let mut fresh = cluster(3, 3);
    fresh.kill(fresh.nodes[2].id());
    fresh.nodes[0].ask_record_formats().await;
    let down = fresh.nodes[0].data_types_gate();
    assert!(
        matches!(&down, Err(KvError::InvalidArgument(m)) if m.contains("1 not asked yet")),
        "{down:?}"
    );
    // Upgraded: its new life is asked again, and the gate opens.
    c.revive(old);
    c.nodes[2].membership().update_self(|s| s.generation += 1);
    c.pass(1_000).await;
    for node in &c.nodes {
        node.ask_record_formats().await;
        assert_eq!(node.data_types_gate(), Ok(()), "node {:x}", node.id());
    }
}

/// Once the gate is open, a write of a data type is coordinated by a
/// replica (forwarded there by a node that is not one), replicated, and
/// answered with its integer reply; its errors cross the forward too.
#[tokio::test(start_paused = true)]
async fn typed_writes_are_coordinated_forwarded_and_replicated() {
    use ringkv_cluster::replica::TypedChange;
    let c = cluster(5, 3);
    for node in &c.nodes {
        node.ask_record_formats().await;
    }
    let key = b("hits");
    let replicas = c.replicas(&key);
    let outsider = c
        .nodes
        .iter()
        .find(|n| !replicas.contains(&n.id()))
        .expect("a node that is not a replica");
    let mut expected = 0;
    for (i, node) in c.nodes.iter().enumerate() {
        let delta = i as i64 + 1;
        expected += delta;
        let out = node
            .write_typed(
                key.clone(),
                TypedChange::Increment(delta),
                w(Consistency::All),
            )
            .await
            .expect("increment");
        assert_eq!(out.integer, Some(expected), "through node {i}");
    }
    for id in &replicas {
        let record = c.node(*id).replica().read_record(&key).expect("read");
        assert_eq!(record.counter.state.value(), i128::from(expected));
    }
    // A string read of a counter is its value, through any node.
    for node in &c.nodes {
        let got = node.get(key.clone(), at(Consistency::Quorum)).await;
        let values: Vec<Bytes> = got
            .expect("get")
            .siblings
            .into_iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(values, vec![b(&expected.to_string())]);
    }
    // A set: its members through the record read; a string read of it is
    // the wrong kind.
    outsider
        .write_typed(
            b("tags"),
            TypedChange::SetAdd(vec![b("x"), b("y")]),
            w(Consistency::Quorum),
        )
        .await
        .expect("sadd");
    let record = c.nodes[0]
        .get_record(b("tags"), at(Consistency::Quorum))
        .await
        .expect("read");
    let members: Vec<Bytes> = record.set.state.members().cloned().collect();
    assert_eq!(members, vec![b("x"), b("y")]);
    assert_eq!(
        c.nodes[1].get(b("tags"), at(Consistency::Quorum)).await,
        Err(KvError::WrongType)
    );
    // A set command on the counter: WRONGTYPE, through the forward too.
    let wrong = outsider
        .write_typed(
            key.clone(),
            TypedChange::SetAdd(vec![b("m")]),
            w(Consistency::Quorum),
        )
        .await;
    assert_eq!(wrong.map(|o| o.integer), Err(KvError::WrongType));
    let overflow = outsider
        .write_typed(
            key,
            TypedChange::Increment(i64::MAX),
            w(Consistency::Quorum),
        )
        .await;
    assert_eq!(overflow.map(|o| o.integer), Err(KvError::Overflow));
}

/// An import of records holding data types waits for the gate too, then
/// lands on every replica.
#[tokio::test(start_paused = true)]
async fn imports_of_data_types_wait_for_the_gate() {
    use ringkv_cluster::replica::TypedChange;
    let from = cluster(3, 3);
    for node in &from.nodes {
        node.ask_record_formats().await;
    }
    let key = b("votes");
    from.nodes[0]
        .write_typed(key.clone(), TypedChange::Increment(42), w(Consistency::All))
        .await
        .expect("increment");
    let record = Bytes::from(
        from.nodes[0]
            .replica()
            .read_record(&key)
            .expect("read")
            .encode(),
    );
    let to = cluster(3, 3);
    let records = vec![(key.clone(), record)];
    let closed = to.nodes[0]
        .import_records(records.clone(), w(Consistency::All))
        .await;
    assert!(
        matches!(&closed, Err(stopped) if stopped.merged == 0
            && matches!(&stopped.error, KvError::InvalidArgument(m) if m.contains("rolling upgrade"))),
        "{closed:?}"
    );
    for node in &to.nodes {
        node.ask_record_formats().await;
    }
    to.nodes[0]
        .import_records(records, w(Consistency::All))
        .await
        .expect("import");
    for node in &to.nodes {
        let record = node.replica().read_record(&key).expect("read");
        assert_eq!(record.counter.state.value(), 42);
    }
}
