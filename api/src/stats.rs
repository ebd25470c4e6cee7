//! Hit, miss, write and error counts, per namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

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
    /// Operations that failed (backend errors, values that did not decode).
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

    fn add(&mut self, other: &Counts) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.writes += other.writes;
        self.errors += other.errors;
    }
}

/// A snapshot of a cache's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// All namespaces together.
    pub total: Counts,
    /// Per namespace (memoized functions are namespaces named by their path).
    pub namespaces: BTreeMap<String, Counts>,
    /// Entries the backend evicted to stay within its size limit since it was opened.
    pub evictions: u64,
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

    fn snapshot(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in [&self.hits, &self.misses, &self.writes, &self.errors] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The counters of every namespace of a cache.
#[derive(Debug, Default)]
pub(crate) struct StatsRegistry {
    namespaces: RwLock<HashMap<Arc<str>, Arc<AtomicCounts>>>,
}

impl StatsRegistry {
    /// The counters of namespace `name`, created on first use.
    pub fn namespace(&self, name: &Arc<str>) -> Arc<AtomicCounts> {
        if let Some(c) = self.namespaces.read().get(name) {
            return Arc::clone(c);
        }
        Arc::clone(self.namespaces.write().entry(Arc::clone(name)).or_default())
    }

    /// A snapshot.
    pub fn snapshot(&self, evictions: u64) -> CacheStats {
        let mut stats = CacheStats {
            evictions,
            ..CacheStats::default()
        };
        for (name, counts) in self.namespaces.read().iter() {
            let c = counts.snapshot();
            stats.total.add(&c);
            stats.namespaces.insert(name.to_string(), c);
        }
        stats
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        for counts in self.namespaces.read().values() {
            counts.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_namespace_and_total() {
        let r = StatsRegistry::default();
        let a = r.namespace(&Arc::from("a"));
        let b = r.namespace(&Arc::from("b"));
        a.hit();
        a.hit();
        a.miss();
        b.write();
        b.error();
        let s = r.snapshot(3);
        assert_eq!(
            s.namespaces["a"],
            Counts {
                hits: 2,
                misses: 1,
                writes: 0,
                errors: 0
            }
        );
        assert_eq!(
            s.total,
            Counts {
                hits: 2,
                misses: 1,
                writes: 1,
                errors: 1
            }
        );
        assert_eq!(s.evictions, 3);
        assert!((s.namespaces["a"].hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
        r.reset();
        assert_eq!(r.snapshot(0).total, Counts::default());
    }
}
