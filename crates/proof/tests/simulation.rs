//! The deterministic simulation in CI: replay, a sweep of seeds, the frozen
//! seeds, and weaknesses planted on purpose that the checkers must catch.

use ringkv_proof::sim::{self, Plant, SimConfig, SimReport};

fn explain(r: &SimReport) -> String {
    format!(
        "{}\n  {}\n  reproduce: {}",
        r.summary(),
        r.violations.join("\n  "),
        r.reproduce()
    )
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    let a = sim::run(3, &config);
    let b = sim::run(3, &config);
    assert_eq!(a.trace, b.trace, "same seed, same trace");
    assert_eq!(a.summary(), b.summary());
    assert!(
        a.trace.events > 1_000,
        "the run did something: {}",
        a.summary()
    );
    let c = sim::run(4, &config);
    assert_ne!(a.trace, c.trace, "another seed, another run");
}

/// Seeds swept in CI; `RINGKV_SIM_SEEDS` changes the count.
const CI_SEEDS: u64 = 300;

#[test]
fn a_sweep_of_seeds_finds_no_violation() {
    let count = std::env::var("RINGKV_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SEEDS);
    let reports = sim::sweep(1, count, 2, &SimConfig::default(), &|_| {});
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(explain)
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The sweep exercised what it claims to.
    let total = |f: &dyn Fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(total(&|r| r.faults.get("crash").copied().unwrap_or(0)) > count / 2);
    assert!(total(&|r| r.faults.get("partition").copied().unwrap_or(0)) > count / 2);
    assert!(total(&|r| r.counts.acknowledged) > count * 500);
    assert!(total(&|r| r.counts.unknown) > 0);
    assert!(total(&|r| r.net.duplicated) > 0);
    assert!(total(&|r| r.faults.get("join").copied().unwrap_or(0)) > 0);
    assert!(total(&|r| r.faults.get("decommission").copied().unwrap_or(0)) > 0);
    assert!(total(&|r| r.flushes) > count && total(&|r| r.compactions) > 0);
    // Version vectors lost the entries of decommissioned nodes somewhere.
    assert!(total(&|r| r.pruned) > 0);
    for (strict, periodic) in [(true, true), (true, false), (false, true), (false, false)] {
        assert!(
            reports
                .iter()
                .any(|r| r.strict == strict && r.periodic_sync == periodic),
            "the sweep covers strict={strict} periodic={periodic}"
        );
    }
}

#[test]
fn frozen_seeds_pass() {
    let text = include_str!("frozen_seeds.txt");
    let mut ran = 0;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let seed: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad seed line {line:?}"));
        let strict = match parts.next() {
            Some("strict") => true,
            Some("sloppy") => false,
            other => panic!("bad mode {other:?} in {line:?}"),
        };
        let periodic_sync = match parts.next() {
            None | Some("always") => false,
            Some("periodic") => true,
            other => panic!("bad sync {other:?} in {line:?}"),
        };
        let r = sim::run(
            seed,
            &SimConfig {
                strict,
                periodic_sync,
                ..SimConfig::default()
            },
        );
        assert!(r.passed(), "{}", explain(&r));
        ran += 1;
    }
    assert!(ran > 0);
}

#[test]
fn the_checkers_catch_lost_writes() {
    let config = SimConfig {
        plant: Some(Plant::SingleCopyLostDisks),
        ..SimConfig::default()
    };
    let reports = sim::sweep(1, 6, 2, &config, &|_| {});
    // Every run whose nemesis crashed a node (and so replaced its disk).
    let crashed: Vec<&SimReport> = reports
        .iter()
        .filter(|r| r.faults.contains_key("crash") || r.faults.contains_key("fsync_failure"))
        .collect();
    assert!(crashed.len() >= 3, "too few runs with crashes");
    for r in crashed {
        assert!(!r.passed(), "a lossy configuration passed: {}", r.summary());
        assert!(r.set.lost + r.register.lost > 0, "{}", r.summary());
    }
}

#[test]
fn the_checkers_catch_stale_reads_under_a_weak_quorum() {
    let config = SimConfig {
        plant: Some(Plant::WeakQuorum),
        strict: true,
        ..SimConfig::default()
    };
    for seed in [2, 4] {
        let r = sim::run(seed, &config);
        assert!(r.register.stale > 0, "{}", r.summary());
        assert!(!r.passed(), "{}", r.summary());
    }
}

/// A record cache that merges from peers leave stale (the planted
/// weakness): a coordinator's read before its write misses siblings a peer
/// sent, its new version drops them (and reads answered from the stale
/// cache go back in time): the checkers see lost writes or stale reads.
#[test]
fn the_checkers_catch_a_stale_record_cache() {
    let config = SimConfig {
        plant: Some(Plant::StaleRecordCache),
        ..SimConfig::default()
    };
    let reports = sim::sweep(1, 6, 2, &config, &|_| {});
    let caught = reports.iter().filter(|r| !r.passed()).count();
    assert!(
        caught >= 3,
        "a stale record cache went unseen in {} of 6 runs: {}",
        6 - caught,
        reports
            .iter()
            .map(SimReport::summary)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for r in reports.iter().filter(|r| !r.passed()) {
        assert!(
            r.set.lost + r.register.lost + r.register.stale > 0,
            "{}",
            r.summary()
        );
    }
}
