//! Hybrid logical clocks: wall-clock milliseconds plus a logical counter.

/// A hybrid-logical-clock timestamp: the high 48 bits are wall-clock
/// milliseconds, the low 16 bits a logical counter that orders events within a
/// millisecond and across skewed clocks.
pub type Hlc = u64;

const HLC_LOGICAL_BITS: u32 = 16;

/// The wall-clock milliseconds of an HLC timestamp.
pub fn hlc_physical_ms(hlc: Hlc) -> u64 {
    hlc >> HLC_LOGICAL_BITS
}

/// Generates HLC timestamps that never go backwards, even if the wall clock
/// does, and that stay ahead of every timestamp observed from peers.
#[derive(Debug, Default)]
pub struct HlcState {
    last: Hlc,
}

impl HlcState {
    /// The next timestamp for a local event at wall time `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> Hlc {
        let physical = now_ms << HLC_LOGICAL_BITS;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Folds in a timestamp seen from elsewhere.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}
