//! Hit, miss, write and error counts, per namespace, and what each tier evicted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of one namespace, or of all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Reads that found a value (including callers that waited for another caller's
    /// computation of the same key).
    pub hits: u64,
    /// Reads that found nothing (for `get_or_insert_with` and memoization: computations).
    pub misses: u64,
    /// Values stored.
    pub writes: u64,
    /// Operations that failed (backend errors, values that did not decode, values too large
    /// to store).
    pub errors: u64,
}

impl Counts {
    /// Share of reads that hit, in `[0, 1]` (0 when there were no reads).
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    pub(crate) fn add(&mut self, other: &Counts) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.writes += other.writes;
        self.errors += other.errors;
    }
}

/// What one tier of a backend holds and evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// The tier's backend (`"memory"`, `"disk"`, ...).
    pub backend: &'static str,
    /// Entries it evicted to stay within its size limit since it was opened (not overwrites,
    /// deletes or expiries).
    pub evictions: u64,
    /// Entries it holds, where it knows.
    pub entries: Option<u64>,
}

impl TierStats {
    /// The statistics of one tier.
    pub fn new(backend: &'static str, evictions: u64, entries: Option<u64>) -> TierStats {
        TierStats {
            backend,
            evictions,
            entries,
        }
    }
}

/// A snapshot of a cache's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// All namespaces together.
    pub total: Counts,
    /// Per namespace (memoized functions are namespaces named by their path).
    pub namespaces: BTreeMap<String, Counts>,
    /// Entries evicted to stay within size limits since the cache was opened, by every tier.
    pub evictions: u64,
    /// Per tier, the fastest first: a memory tier in front of a disk is two.
    pub tiers: Vec<TierStats>,
}

/// Live counters of one namespace.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounts {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
}

impl AtomicCounts {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        for c in [&self.hits, &self.misses, &self.writes, &self.errors] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_and_reset() {
        let a = AtomicCounts::default();
        a.hit();
        a.hit();
        a.miss();
        a.write();
        a.error();
        let mut total = Counts::default();
        total.add(&a.snapshot());
        total.add(&a.snapshot());
        assert_eq!(
            total,
            Counts {
                hits: 4,
                misses: 2,
                writes: 2,
                errors: 2
            }
        );
        assert!((a.snapshot().hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
        a.reset();
        assert_eq!(a.snapshot(), Counts::default());
        assert_eq!(Counts::default().hit_ratio(), 0.0);
    }
}
