//! Compaction yields to durable writers.
//!
//! A compaction writes segments' worth of data and fsyncs each output. A foreground fsync
//! (a durable write) that lands meanwhile queues behind that bulk I/O: measured here, durable
//! 4 KiB writes ran at a quarter of their speed during a background compaction. So while
//! foreground fsyncs are happening, compaction output is paced to [`YIELD_RATE`] and synced
//! every [`YIELD_SYNC_EVERY`] bytes (so no large flush is left for the end); when there are
//! none, it runs at full speed.

use std::time::{Duration, Instant};

/// Output rate of a compaction while durable writers are active, in bytes per second.
pub(crate) const YIELD_RATE: u64 = 64 << 20;

/// While yielding, the output is fdatasynced after this many bytes.
pub(crate) const YIELD_SYNC_EVERY: u64 = 8 << 20;

/// What the compaction should do after writing a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Yield {
    /// Sleep this long before the next chunk.
    pub sleep: Duration,
    /// fdatasync the output now.
    pub sync: bool,
}

/// Paces one compaction by the store's count of foreground fsyncs.
#[derive(Debug)]
pub(crate) struct Pacer {
    seen_syncs: u64,
    last_chunk: Instant,
}

impl Pacer {
    /// A pacer starting from the current count of foreground fsyncs.
    pub fn new(syncs: u64) -> Pacer {
        Pacer {
            seen_syncs: syncs,
            last_chunk: Instant::now(),
        }
    }

    /// Called after a chunk of `written` bytes, with the foreground fsync count now and the
    /// output's bytes not yet synced.
    pub fn after_chunk(&mut self, written: u64, syncs: u64, unsynced: u64) -> Yield {
        let elapsed = self.last_chunk.elapsed();
        let decision = decide(written, elapsed, syncs != self.seen_syncs, unsynced);
        self.seen_syncs = syncs;
        self.last_chunk = Instant::now() + decision.sleep;
        decision
    }
}

/// The policy: yield only if a foreground fsync happened while the chunk was written.
fn decide(written: u64, elapsed: Duration, writers_syncing: bool, unsynced: u64) -> Yield {
    if !writers_syncing {
        return Yield {
            sleep: Duration::ZERO,
            sync: false,
        };
    }
    let due = Duration::from_secs_f64(written as f64 / YIELD_RATE as f64);
    Yield {
        sleep: due.saturating_sub(elapsed),
        sync: unsynced >= YIELD_SYNC_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn full_speed_without_durable_writers() {
        let y = decide(MIB, Duration::from_micros(500), false, 60 * MIB);
        assert_eq!(y.sleep, Duration::ZERO);
        assert!(!y.sync);
    }

    #[test]
    fn paced_to_the_yield_rate_while_writers_sync() {
        // 1 MiB at 64 MiB/s is due after 15.625 ms; 0.625 ms of it already passed.
        let y = decide(MIB, Duration::from_micros(625), true, MIB);
        assert_eq!(y.sleep, Duration::from_millis(15));
        assert!(!y.sync);
        // A chunk that already took longer than its due time is not slowed further.
        let y = decide(MIB, Duration::from_millis(40), true, MIB);
        assert_eq!(y.sleep, Duration::ZERO);
    }

    #[test]
    fn synced_in_small_steps_while_writers_sync() {
        assert!(decide(MIB, Duration::ZERO, true, YIELD_SYNC_EVERY).sync);
        assert!(!decide(MIB, Duration::ZERO, true, YIELD_SYNC_EVERY - 1).sync);
    }

    #[test]
    fn the_pacer_notices_a_change_in_the_sync_count() {
        let mut p = Pacer::new(5);
        assert_eq!(p.after_chunk(MIB, 5, 0).sleep, Duration::ZERO);
        assert!(p.after_chunk(YIELD_RATE, 6, 0).sleep > Duration::from_millis(500));
        // The count moved on since the last chunk? No: full speed again.
        assert_eq!(p.after_chunk(MIB, 6, 0).sleep, Duration::ZERO);
    }
}
