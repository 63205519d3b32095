//! Benchmark of ringkv's storage engine against fjall 3 and RocksDB (Debian's
//! librocksdb through the `rocksdb` crate), same workloads and same settings,
//! in one run. See README/RESULTS.md beside this file and `run.sh`.
//!
//! Workloads (single-threaded client, as db_bench's fillrandom/readrandom):
//! 1. load: N random 16-byte keys with V-byte values (half compressible).
//! 2. point reads that hit, and point reads that miss.
//! 3. 95% reads / 5% updates of existing keys.
//! 4. range scans: seek to a random key, read the next 100 entries.
//! 5. larger-than-cache: load ~B bytes (1000-byte values), then random hits
//!    with a 64 MiB block cache; block reads per lookup reported.
//!
//! Settings shared by all engines: 64 MiB memtable, 4 KiB blocks, LZ4, bloom
//! filters with 10 bits per key, 64 MiB block cache, leveled compaction with
//! L0 trigger 4, 64 MiB target files, x10 level ratio; log written to the OS
//! on every write, never fsynced on the request path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

trait Kv {
    fn put(&self, k: &[u8], v: &[u8]);
    fn get(&self, k: &[u8]) -> bool;
    fn scan(&self, start: &[u8], n: usize) -> usize;
    /// Flush memtables and wait until compaction has caught up.
    fn settle(&self);
    /// Data blocks read from disk (or the OS page cache) so far.
    fn block_reads(&self) -> Option<u64>;
    /// Engine-specific shape after a load.
    fn describe(&self) -> String {
        String::new()
    }
}

const CACHE_BYTES: u64 = 64 << 20;
const MEMTABLE_BYTES: u64 = 64 << 20;

// ---------------------------------------------------------------- ringkv

struct Ringkv(ringkv_storage::Engine);

impl Ringkv {
    fn open(dir: &Path) -> Self {
        let opts = ringkv_storage::Options {
            memtable_bytes_max: MEMTABLE_BYTES as usize,
            block_bytes: 4096,
            compression: ringkv_storage::Compression::Lz4,
            bloom_bits_per_key: 10,
            block_cache_bytes: CACHE_BYTES,
            sync: ringkv_storage::SyncMode::Periodic { interval_ms: 1000 },
            l0_compaction_trigger_files: 4,
            level_base_bytes: 256 << 20,
            level_size_multiplier: 10,
            table_target_bytes: 64 << 20,
            // The peers do not limit compaction I/O by default either.
            compaction_write_bytes_per_sec_max: 0,
            ..ringkv_storage::Options::default()
        };
        Ringkv(ringkv_storage::Engine::open(dir, opts).expect("open ringkv"))
    }
}

impl Kv for Ringkv {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.0.put(k, v, None).expect("put");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.0.get(k).expect("get").is_some()
    }
    fn scan(&self, start: &[u8], n: usize) -> usize {
        let it = self
            .0
            .scan_bounds(std::ops::Bound::Included(start), std::ops::Bound::Unbounded)
            .expect("scan");
        it.take(n).map(|r| r.expect("scan item").1.value.len()).filter(|&l| l > 0).count()
    }
    fn settle(&self) {
        self.0.flush().expect("flush");
        self.0.wait_idle().expect("wait idle");
    }
    fn block_reads(&self) -> Option<u64> {
        Some(self.0.stats().block_reads)
    }
    fn describe(&self) -> String {
        let s = self.0.stats();
        format!(
            "files/level {:?}, bytes/level {:?}, table {} B, engine write-amp {:.2}, stalls {} ({} ms), flushes {}, compactions {} (+{} moves)",
            s.files_per_level,
            s.bytes_per_level,
            s.table_bytes,
            s.write_amplification,
            s.write_stalls,
            s.write_stall_total_us / 1000,
            s.flushes,
            s.compactions,
            s.trivial_moves
        )
    }
}

// ---------------------------------------------------------------- fjall

struct Fjall {
    _db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir).cache_size(CACHE_BYTES).open().expect("open fjall");
        let ks = db
            .keyspace("bench", || {
                fjall::KeyspaceCreateOptions::default()
                    .max_memtable_size(MEMTABLE_BYTES)
                    .data_block_size_policy(fjall::config::BlockSizePolicy::all(4096))
            })
            .expect("keyspace");
        Fjall { _db: db, ks }
    }
}

impl Kv for Fjall {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).expect("put");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.ks.get(k).expect("get").is_some()
    }
    fn scan(&self, start: &[u8], n: usize) -> usize {
        self.ks
            .range(start.to_vec()..)
            .take(n)
            .map(|g| g.into_inner().expect("scan item").1.len())
            .filter(|&l| l > 0)
            .count()
    }
    fn settle(&self) {
        self.ks.rotate_memtable_and_wait().expect("rotate");
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let n = self.ks.table_count();
            if self.ks.l0_table_count() < 4 && self.ks.sealed_memtable_count() == 0 && n == last {
                break;
            }
            last = n;
        }
    }
    fn block_reads(&self) -> Option<u64> {
        Some(self.ks.metrics().block_load_io_count() as u64)
    }
}

// ---------------------------------------------------------------- RocksDB

struct Rocks {
    db: rocksdb::DB,
    opts: rocksdb::Options,
}

impl Rocks {
    fn open(dir: &Path) -> Self {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(MEMTABLE_BYTES as usize);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_level_zero_file_num_compaction_trigger(4);
        opts.set_max_bytes_for_level_base(256 << 20);
        opts.set_max_bytes_for_level_multiplier(10.0);
        opts.set_target_file_size_base(64 << 20);
        opts.enable_statistics();
        let mut t = rocksdb::BlockBasedOptions::default();
        t.set_block_size(4096);
        t.set_bloom_filter(10.0, false);
        let cache = rocksdb::Cache::new_lru_cache(CACHE_BYTES as usize).expect("cache");
        t.set_block_cache(&cache);
        opts.set_block_based_table_factory(&t);
        let db = rocksdb::DB::open(&opts, dir).expect("open rocksdb");
        Rocks { db, opts }
    }

    fn stat(&self, name: &str) -> Option<u64> {
        let s = self.opts.get_statistics()?;
        s.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    }
}

impl Kv for Rocks {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.db.put(k, v).expect("put");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.db.get_pinned(k).expect("get").is_some()
    }
    fn scan(&self, start: &[u8], n: usize) -> usize {
        let mut it = self.db.raw_iterator();
        it.seek(start);
        let mut c = 0;
        while it.valid() && c < n {
            if it.value().is_some_and(|v| !v.is_empty()) {
                c += 1;
            }
            it.next();
        }
        c
    }
    fn settle(&self) {
        self.db.flush().expect("flush");
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let pending = self.db.property_int_value("rocksdb.compaction-pending").ok().flatten().unwrap_or(0);
            let running = self.db.property_int_value("rocksdb.num-running-compactions").ok().flatten().unwrap_or(0);
            let flushes = self.db.property_int_value("rocksdb.num-running-flushes").ok().flatten().unwrap_or(0);
            if pending == 0 && running == 0 && flushes == 0 {
                break;
            }
        }
    }
    fn block_reads(&self) -> Option<u64> {
        self.stat("rocksdb.block.cache.miss")
    }
}

// ---------------------------------------------------------------- workloads

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("{:016x}", mix64(i)).as_bytes());
    k
}

/// Half random, half repeated bytes: compresses to about 50%, like db_bench.
fn fill_value(buf: &mut [u8], seed: u64) {
    let half = buf.len() / 2;
    let mut x = mix64(seed);
    for (i, b) in buf.iter_mut().enumerate() {
        if i < half {
            if i % 8 == 0 {
                x = mix64(x);
            }
            *b = (x >> ((i % 8) * 8)) as u8;
        } else {
            *b = b'v';
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = mix64(self.0);
        ((self.0 as u128 * n as u128) >> 64) as u64
    }
}

#[derive(Clone, Debug)]
struct Row {
    engine: &'static str,
    workload: String,
    ops: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
    extra: String,
}

impl Row {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram")
}

fn timed(engine: &'static str, workload: &str, ops: u64, mut f: impl FnMut(u64)) -> Row {
    let mut h = hist();
    let cpu0 = cpu_secs();
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        f(i);
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "   {engine} {workload}: mean {:.1} us, p99.9 {:.1} us, max {:.1} us",
        h.mean() / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    Row {
        engine,
        workload: workload.to_string(),
        ops,
        secs,
        p50_us: h.value_at_quantile(0.50) as f64 / 1000.0,
        p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us_per_op: (cpu_secs() - cpu0) * 1e6 / ops as f64,
        extra: String::new(),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// CPU time (user + system, all threads) this process used so far, in
/// seconds. Unlike wall time it is not inflated when other processes on a
/// shared machine take the cores.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process caused to be written to storage (Linux /proc/self/io).
fn io_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

struct Args {
    keys: u64,
    value_bytes: usize,
    reads: u64,
    scans: u64,
    big_bytes: u64,
    big_reads: u64,
    engines: Vec<String>,
    dir: PathBuf,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        value_bytes: 100,
        reads: 500_000,
        scans: 20_000,
        big_bytes: 2 << 30,
        big_reads: 200_000,
        engines: vec!["ringkv".into(), "fjall".into(), "rocksdb".into()],
        dir: PathBuf::from("bench-data"),
        runs: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--keys" => a.keys = v.parse().expect("--keys N"),
            "--value-bytes" => a.value_bytes = v.parse().expect("--value-bytes N"),
            "--reads" => a.reads = v.parse().expect("--reads N"),
            "--scans" => a.scans = v.parse().expect("--scans N"),
            "--big-mb" => a.big_bytes = v.parse::<u64>().expect("--big-mb N (0 skips)") << 20,
            "--big-reads" => a.big_reads = v.parse().expect("--big-reads N"),
            "--engines" => a.engines = v.split(',').map(str::to_string).collect(),
            "--dir" => a.dir = PathBuf::from(v),
            "--runs" => a.runs = v.parse().expect("--runs N"),
            other => panic!("unknown argument {other}; see run.sh"),
        }
        i += 2;
    }
    a
}

fn open_engine(name: &str, dir: &Path) -> (&'static str, Box<dyn Kv>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    match name {
        "ringkv" => ("ringkv", Box::new(Ringkv::open(dir))),
        "fjall" => ("fjall", Box::new(Fjall::open(dir))),
        "rocksdb" => ("rocksdb", Box::new(Rocks::open(dir))),
        other => panic!("unknown engine {other}"),
    }
}

fn main() {
    let a = parse_args();
    let mut rows: Vec<Row> = Vec::new();
    let mut val = vec![0u8; a.value_bytes];
    // Each run rotates the engine order, so a burst of load from other
    // processes does not always land on the same engine.
    let mut plan = Vec::new();
    for run in 0..a.runs {
        let n = a.engines.len();
        for i in 0..n {
            plan.push(a.engines[(i + run) % n].clone());
        }
    }
    for name in &plan {
        let dir = a.dir.join(format!("{name}-small"));
        let (ename, kv) = open_engine(name, &dir);
        eprintln!("== {ename}: load {} keys x {} B", a.keys, a.value_bytes);
        let io0 = io_write_bytes();
        let mut r = timed(ename, "load (random keys)", a.keys, |i| {
            fill_value(&mut val, i);
            kv.put(&key(i), &val);
        });
        let t = Instant::now();
        kv.settle();
        let settle = t.elapsed().as_secs_f64();
        let user = a.keys * (16 + a.value_bytes as u64);
        eprintln!("   {ename} after load: {}", kv.describe());
        let wamp = (io_write_bytes() - io0) as f64 / user as f64;
        r.extra = format!(
            "disk {:.1} MiB, write-amp {wamp:.2} (OS bytes written / user bytes), settle {settle:.1}s",
            dir_bytes(&dir) as f64 / (1 << 20) as f64
        );
        rows.push(r);

        let mut rng = Rng(7);
        let b0 = kv.block_reads();
        let mut found = 0u64;
        let mut r = timed(ename, "point read, hit", a.reads, |_| {
            found += kv.get(&key(rng.below(a.keys))) as u64;
        });
        assert_eq!(found, a.reads, "{ename}: hits missing");
        r.extra = blocks_per(kv.as_ref(), b0, a.reads);
        rows.push(r);

        let b0 = kv.block_reads();
        let mut found = 0u64;
        let mut r = timed(ename, "point read, miss", a.reads, |_| {
            found += kv.get(&key(a.keys + rng.below(a.keys))) as u64;
        });
        assert_eq!(found, 0, "{ename}: phantom hits");
        r.extra = blocks_per(kv.as_ref(), b0, a.reads);
        rows.push(r);

        let r = timed(ename, "95% read / 5% update", a.reads, |i| {
            let k = key(rng.below(a.keys));
            if rng.below(100) < 5 {
                fill_value(&mut val, i ^ 0xabcdef);
                kv.put(&k, &val);
            } else {
                kv.get(&k);
            }
        });
        rows.push(r);

        let mut entries = 0u64;
        let mut r = timed(ename, "range scan, 100 entries", a.scans, |_| {
            entries += kv.scan(&key(rng.below(a.keys)), 100) as u64;
        });
        r.extra = format!("{:.0} entries/s", entries as f64 / r.secs);
        rows.push(r);
        drop(kv);
        let _ = std::fs::remove_dir_all(&dir);

        if a.big_bytes > 0 {
            let big_value = 1000usize;
            let n = a.big_bytes / (16 + big_value as u64);
            let dir = a.dir.join(format!("{name}-big"));
            let (ename, kv) = open_engine(name, &dir);
            eprintln!("== {ename}: larger-than-cache load {n} keys x {big_value} B");
            let mut bval = vec![0u8; big_value];
            let io0 = io_write_bytes();
            let mut r = timed(ename, "big load (1000 B values)", n, |i| {
                fill_value(&mut bval, i);
                kv.put(&key(i), &bval);
            });
            kv.settle();
            eprintln!("   {ename} after big load: {}", kv.describe());
            let wamp = (io_write_bytes() - io0) as f64 / a.big_bytes as f64;
            r.extra = format!(
                "disk {:.0} MiB, write-amp {wamp:.2}",
                dir_bytes(&dir) as f64 / (1 << 20) as f64
            );
            rows.push(r);
            let mut rng = Rng(99);
            let b0 = kv.block_reads();
            let mut found = 0u64;
            let mut r = timed(ename, "big point read, hit (64 MiB cache)", a.big_reads, |_| {
                found += kv.get(&key(rng.below(n))) as u64;
            });
            assert_eq!(found, a.big_reads, "{ename}: big hits missing");
            r.extra = blocks_per(kv.as_ref(), b0, a.big_reads);
            rows.push(r);
            drop(kv);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    print_table(&rows);
}

fn blocks_per(kv: &dyn Kv, before: Option<u64>, ops: u64) -> String {
    match (before, kv.block_reads()) {
        (Some(b), Some(a)) => format!("{:.3} block reads/lookup", (a - b) as f64 / ops as f64),
        _ => "block reads n/a".into(),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn print_table(rows: &[Row]) {
    println!("| workload | engine | ops | ops/s (median) | p50 µs | p99 µs | CPU µs/op | ops/s per run | notes |");
    println!("|---|---|---:|---:|---:|---:|---:|---|---|");
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !keys.iter().any(|(w, _)| *w == r.workload) {
            keys.push((&r.workload, ""));
        }
    }
    let mut engines: Vec<&str> = Vec::new();
    for r in rows {
        if !engines.contains(&r.engine) {
            engines.push(r.engine);
        }
    }
    engines.sort_by_key(|e| ["ringkv", "fjall", "rocksdb"].iter().position(|x| x == e));
    for (w, _) in keys {
        for e in &engines {
            let rs: Vec<&Row> = rows.iter().filter(|r| r.workload == w && r.engine == *e).collect();
            if rs.is_empty() {
                continue;
            }
            let mut by_ops = rs.clone();
            by_ops.sort_by(|x, y| x.ops_per_sec().total_cmp(&y.ops_per_sec()));
            let mid = by_ops[by_ops.len() / 2];
            println!(
                "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
                w,
                e,
                mid.ops,
                mid.ops_per_sec(),
                median(rs.iter().map(|r| r.p50_us).collect()),
                median(rs.iter().map(|r| r.p99_us).collect()),
                median(rs.iter().map(|r| r.cpu_us_per_op).collect()),
                rs.iter().map(|r| format!("{:.0}", r.ops_per_sec())).collect::<Vec<_>>().join(" / "),
                mid.extra
            );
        }
    }
}
