//! The metrics the server reports through the `metrics` facade, read back
//! with a recorder installed for this test binary only.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use ringkv_resp::{Frame, RespConfig};

/// One metric's value: a counter total, a gauge level, or a histogram's
/// sample count.
#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.0.fetch_add(value as u64, Ordering::SeqCst);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub(value as u64, Ordering::SeqCst);
    }
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default, Clone)]
struct TestRecorder {
    cells: Arc<Mutex<HashMap<String, Arc<Cell>>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut name = key.name().to_string();
        for label in key.labels() {
            name.push_str(&format!("{{{}={}}}", label.key(), label.value()));
        }
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(cells.entry(name).or_default())
    }

    fn value(&self, name: &str) -> u64 {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.get(name).map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn commands_errors_and_connections_are_counted() {
    let recorder = TestRecorder::default();
    metrics::set_global_recorder(recorder.clone()).expect("first recorder of this binary");

    let server = TestServer::start_with(RespConfig {
        connections_max: 2,
        ..RespConfig::default()
    })
    .await;
    let mut c = server.raw().await;
    for _ in 0..3 {
        assert_eq!(c.cmd(&[b"SET", b"k", b"v"]).await, Frame::ok());
    }
    c.cmd(&[b"GET", b"k"]).await;
    c.cmd(&[b"NOPE"]).await;
    c.cmd(&[b"APPEND", b"k", b"v"]).await;
    c.cmd(&[b"GET"]).await;
    assert_eq!(recorder.value("ringkv_resp_commands_total{cmd=set}"), 3);
    assert_eq!(recorder.value("ringkv_resp_commands_total{cmd=get}"), 1);
    assert_eq!(recorder.value("ringkv_resp_command_seconds{cmd=set}"), 3);
    assert_eq!(
        recorder.value("ringkv_resp_errors_total{kind=unknown_command}"),
        1
    );
    assert_eq!(
        recorder.value("ringkv_resp_errors_total{kind=unsupported}"),
        1
    );
    assert_eq!(
        recorder.value("ringkv_resp_errors_total{kind=wrong_arity}"),
        1
    );
    assert_eq!(recorder.value("ringkv_resp_connections"), 1);

    let second = server.raw().await;
    let mut third = server.raw().await;
    assert_eq!(
        third.read_until_closed().await,
        vec![common::error("ERR max number of clients reached")]
    );
    assert_eq!(recorder.value("ringkv_resp_rejected_connections_total"), 1);
    eventually(|| recorder.value("ringkv_resp_connections") == 2).await;
    drop(second);
    drop(c);
    eventually(|| recorder.value("ringkv_resp_connections") == 0).await;

    // A protocol error is counted by kind too.
    let mut bad = server.raw().await;
    bad.send(b"*1\r\n$-9\r\n").await;
    bad.read_until_closed().await;
    assert_eq!(recorder.value("ringkv_resp_errors_total{kind=protocol}"), 1);
}
