//! The in-process backend: a bounded concurrent map (quick_cache, S3-FIFO eviction) with
//! per-entry expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use crate::backend::Backend;
use crate::error::Result;

/// What bounds a [`MemoryBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// At most this many entries.
    Entries(usize),
    /// At most about this many bytes of keys and values (plus 64 bytes of bookkeeping per
    /// entry).
    Bytes(u64),
}

/// Bytes charged per entry on top of its key and value.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    expires_at: Option<Instant>,
}

#[derive(Clone)]
struct ByLimit(MemoryLimit);

impl Weighter<Vec<u8>, Entry> for ByLimit {
    fn weight(&self, key: &Vec<u8>, val: &Entry) -> u64 {
        match self.0 {
            MemoryLimit::Entries(_) => 1,
            MemoryLimit::Bytes(_) => key.len() as u64 + val.value.len() as u64 + ENTRY_OVERHEAD,
        }
    }
}

/// Counts evictions.
#[derive(Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Vec<u8>, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut Self::RequestState, _key: Vec<u8>, _val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Entries in this process's memory, bounded by entry count or bytes; lost when the process
/// exits. The Rust counterpart of `functools.lru_cache(maxsize=...)`.
pub struct MemoryBackend {
    entries: QuickCache<Vec<u8>, Entry, ByLimit, DefaultHashBuilder, CountEvictions>,
    counters: Mutex<HashMap<String, u64>>,
    evictions: Arc<AtomicU64>,
}

impl MemoryBackend {
    /// A backend bounded by `limit`.
    pub fn new(limit: MemoryLimit) -> MemoryBackend {
        let (estimated_items, capacity) = match limit {
            MemoryLimit::Entries(n) => (n.max(1), n.max(1) as u64),
            MemoryLimit::Bytes(b) => (((b / 256).max(16)) as usize, b.max(1)),
        };
        let evictions = CountEvictions::default();
        let counter = Arc::clone(&evictions.0);
        MemoryBackend {
            entries: QuickCache::with(
                estimated_items,
                capacity,
                ByLimit(limit),
                DefaultHashBuilder::default(),
                evictions,
            ),
            counters: Mutex::new(HashMap::new()),
            evictions: counter,
        }
    }

    /// Live entries (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn live(&self, key: &[u8]) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        if entry.expires_at.is_some_and(|at| at <= Instant::now()) {
            self.entries.remove(key);
            return None;
        }
        Some(entry)
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.live(key).map(|e| e.value.to_vec()))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        self.entries.insert(
            key.to_vec(),
            Entry {
                value: value.into(),
                expires_at,
            },
        );
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let live = self.live(key).is_some();
        self.entries.remove(key);
        Ok(live)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.live(key).is_some())
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let keys: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in keys {
            removed += u64::from(self.entries.remove(&k).is_some());
        }
        Ok(removed)
    }

    fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.counters.lock().get(name).copied().unwrap_or(0))
    }

    fn increment(&self, name: &str) -> Result<u64> {
        let mut counters = self.counters.lock();
        let c = counters.entry(name.to_string()).or_insert(0);
        *c += 1;
        Ok(*c)
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bound_evicts_and_counts() {
        let m = MemoryBackend::new(MemoryLimit::Entries(100));
        for i in 0..1000u32 {
            m.set(&i.to_le_bytes(), b"v", None).unwrap();
        }
        assert!(m.len() <= 100, "{}", m.len());
        assert!(m.evictions() >= 900);
    }

    #[test]
    fn byte_bound_holds() {
        let m = MemoryBackend::new(MemoryLimit::Bytes(100_000));
        for i in 0..1000u32 {
            m.set(&i.to_le_bytes(), &[0; 1000], None).unwrap();
        }
        assert!(m.len() * 1068 <= 100_000 + 1068, "{}", m.len());
        assert!(m.evictions() > 0);
    }

    #[test]
    fn expiry_and_prefix_delete() {
        let m = MemoryBackend::new(MemoryLimit::Entries(100));
        m.set(b"a1", b"v", Some(Duration::from_millis(1000)))
            .unwrap();
        m.set(b"a2", b"v", None).unwrap();
        m.set(b"b1", b"v", None).unwrap();
        assert!(m.contains(b"a1").unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!m.contains(b"a1").unwrap());
        assert_eq!(m.get(b"a1").unwrap(), None);
        assert_eq!(m.delete_prefix(b"a").unwrap(), 1);
        assert!(m.contains(b"b1").unwrap());
        assert_eq!(m.increment("g").unwrap(), 1);
        assert_eq!(m.increment("g").unwrap(), 2);
        assert_eq!(m.counter("g").unwrap(), 2);
        assert_eq!(m.counter("other").unwrap(), 0);
    }
}
