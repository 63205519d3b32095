//! The nemesis: the faults a simulated run injects, one at a time, and the
//! reboots that may themselves be cut short.

use std::time::Duration;

use ringkv_cluster::net::message::NodeStatus;
use ringkv_env::Rng;
use ringkv_storage::CrashMode;

use super::*;

impl Sim {
    /// Boots node `i` after a crash or as a joiner; one such boot in four
    /// is cut short first: the disk fails after a few syncs, so the boot
    /// stops inside the writes of its engines or its own files (`EPOCH`,
    /// `TOKENS`, `MOVE`, `PEERS`), the machine loses power there (only
    /// its process, should the boot have got through), and boots again.
    async fn boot_after_crash(&mut self, i: usize) -> Result<(), String> {
        if self.rng.next_u64().is_multiple_of(4) {
            let syncs = self.rng.next_u64() % 16;
            self.fault("crash_while_booting");
            self.net
                .record(&format!("crash while booting {i} after {syncs} syncs"));
            self.machines[i].disk().fail_sync_after(syncs);
            let mode = match self.boot(i).await {
                Ok(()) => CrashMode::ProcessOnly,
                Err(_) => match self.rng.next_u64() % 3 {
                    0 => CrashMode::DropUnsynced,
                    1 => CrashMode::TornPrefix,
                    _ => CrashMode::TornZeroFill,
                },
            };
            self.crash(i, mode);
        }
        self.boot(i).await
    }

    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(2_000 + self.rng.next_u64() % 4_000)
    }

    pub(super) fn up(&self) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&i| self.machines[i].is_up())
            .collect()
    }

    /// A minority of the cluster's nodes (at least one), drawn.
    fn minority(&mut self) -> Vec<usize> {
        let mut all = self.members();
        let n = all.len();
        let k = 1 + (self.rng.next_u64() as usize) % ((n.max(2) - 1) / 2).max(1);
        for i in (1..n).rev() {
            let j = (self.rng.next_u64() as usize) % (i + 1);
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    }

    /// One fault at a time until `until_ms`, each held 2-6 s.
    pub(super) async fn nemesis(&mut self, until_ms: u64) {
        loop {
            let gap = Duration::from_millis(1_000 + self.rng.next_u64() % 2_000);
            tokio::time::sleep(gap).await;
            self.reap();
            if self.now_ms() + 2_000 > until_ms {
                return;
            }
            match self.rng.next_u64() % 8 {
                6 => {
                    // A join: a spare machine joins through the nodes up.
                    let spare = (0..self.machines.len()).find(|&i| !self.machines[i].member);
                    let Some(i) = spare else { continue };
                    self.fault("join");
                    if let Err(e) = self.boot_after_crash(i).await {
                        self.violations.push(e);
                    }
                }
                7 => {
                    // A decommission of a NORMAL node, while the cluster
                    // keeps at least `nodes - 1` members and nothing moves.
                    let members = self.members();
                    let moving = members.iter().any(|&i| {
                        self.machines[i].node().is_none_or(|n| {
                            n.membership().states().iter().any(|s| {
                                s.status != NodeStatus::Normal && s.status != NodeStatus::Left
                            })
                        })
                    });
                    if moving || members.len() < self.config.nodes {
                        continue;
                    }
                    let i = members[(self.rng.next_u64() as usize) % members.len()];
                    let Some(node) = self.machines[i].node().cloned() else {
                        continue;
                    };
                    self.fault("decommission");
                    let outcome = node
                        .movements()
                        .command(ringkv_cluster::api::MoveCommand::Decommission);
                    self.net
                        .record(&format!("decommission {i}: {:?}", outcome.map(|_| ())));
                    tokio::time::sleep(self.hold()).await;
                }
                0 | 1 => {
                    let victims = self.minority();
                    self.fault("crash");
                    for (k, &i) in victims.iter().enumerate() {
                        // With periodic sync, power loss on two replicas
                        // within one sync interval of a write loses it: the
                        // trade-off that mode makes. Then at most one
                        // machine loses power at a time; other victims
                        // lose only their process.
                        let draw = self.rng.next_u64() % 4;
                        let mode = match draw {
                            _ if self.config.periodic_sync && k > 0 => CrashMode::ProcessOnly,
                            0 => CrashMode::DropUnsynced,
                            1 => CrashMode::TornPrefix,
                            2 => CrashMode::TornZeroFill,
                            _ => CrashMode::ProcessOnly,
                        };
                        self.crash(i, mode);
                    }
                    tokio::time::sleep(self.hold()).await;
                    for i in victims {
                        if let Err(e) = self.boot_after_crash(i).await {
                            self.violations.push(e);
                        }
                    }
                }
                2 => {
                    let side = self.minority();
                    let ids = |set: &mut dyn Iterator<Item = usize>, m: &[Machine]| -> Vec<u64> {
                        set.map(|i| m[i].id).collect()
                    };
                    let a = ids(&mut side.iter().copied(), &self.machines);
                    let rest = self.members();
                    let b = ids(
                        &mut rest.into_iter().filter(|i| !side.contains(i)),
                        &self.machines,
                    );
                    self.fault("partition");
                    self.net.record(&format!("partition {side:?}"));
                    self.net.partition(&a, &b);
                    tokio::time::sleep(self.hold()).await;
                    self.net.heal();
                    self.net.record("heal partition");
                }
                3 => {
                    let up = self.up();
                    if up.is_empty() {
                        continue;
                    }
                    let i = up[(self.rng.next_u64() as usize) % up.len()];
                    self.fault("fsync_failure");
                    self.net.record(&format!("fsync failure {i}"));
                    self.machines[i].disk().set_fail_sync(true);
                    tokio::time::sleep(self.hold()).await;
                    // A failed fsync is fatal: the operator restarts the
                    // node (the new disk instance syncs again).
                    self.crash(i, CrashMode::DropUnsynced);
                    if let Err(e) = self.boot(i).await {
                        self.violations.push(e);
                    }
                }
                4 => {
                    let skewed = self.minority();
                    self.fault("clock_skew");
                    for &i in &skewed {
                        let ms = (self.rng.next_u64() % 60_000) as i64 - 30_000;
                        self.net.record(&format!("skew {i} {ms}"));
                        self.machines[i].clock.set_skew_ms(ms);
                    }
                    tokio::time::sleep(self.hold()).await;
                    for i in skewed {
                        self.machines[i].clock.set_skew_ms(0);
                    }
                }
                _ => {
                    let normal = self.net.faults();
                    self.fault("message_loss");
                    self.net.record("message loss burst");
                    self.net.set_faults(NetFaults {
                        loss_ppm: 100_000,
                        dup_ppm: 50_000,
                        slow_ppm: 50_000,
                        ..normal
                    });
                    tokio::time::sleep(self.hold()).await;
                    self.net.set_faults(normal);
                }
            }
        }
    }
}
