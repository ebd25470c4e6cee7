//! The in-process backend: a bounded concurrent map (`sieve`: SIEVE eviction) with per-entry
//! expiry, keeping beside each entry's bytes the value decoded from them.

mod sieve;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::sieve::Sieve;

use crate::backend::{Backend, Stored};
use crate::error::{Error, Result};
use crate::stats::TierStats;

/// What bounds a [`MemoryBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// At most this many entries (0: store nothing).
    Entries(usize),
    /// At most about this many bytes: per entry its key, twice its value (the encoded bytes
    /// and, estimated at the same size, the decoded value kept beside them) and 64 bytes of
    /// bookkeeping.
    Bytes(u64),
}

/// Bytes charged per entry on top of its key and value.
const ENTRY_OVERHEAD: u64 = 64;
/// A byte limit is split into shards of at least this much (one entry must fit in a shard),
/// an entry limit into shards of at least this many entries, up to four shards a core.
const MIN_SHARD_BYTES: u64 = 1 << 20;
const MIN_SHARD_ENTRIES: u64 = 256;

/// One entry, held in its slot of the map: the stored bytes (shared with readers, and telling
/// this entry from a later one of the same key), their expiry, and the value decoded from them
/// once a typed read has decoded it (so that a hit reaches it without following a pointer).
pub(crate) struct Item {
    bytes: Arc<[u8]>,
    expires_at: Option<Instant>,
    decoded: OnceLock<Decoded>,
}

/// A value decoded from an item's bytes, with what a read checks before returning it (so a
/// hit need not read the bytes again).
pub(crate) struct Decoded {
    /// The entry's expiry, unix ms (0: never).
    pub expires_at: u64,
    /// Whether the entry has tags (then the bytes say which).
    pub has_tags: bool,
    value: Box<dyn Any + Send + Sync>,
}

impl Decoded {
    pub(crate) fn new<T: Any + Send + Sync>(value: T, expires_at: u64, has_tags: bool) -> Decoded {
        Decoded {
            expires_at,
            has_tags,
            value: Box::new(value),
        }
    }

    #[inline]
    pub(crate) fn value<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }
}

impl Item {
    fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= Instant::now())
    }
}

/// The weight of an entry under `limit`.
fn weight_of(limit: MemoryLimit, key_len: usize, value_len: usize) -> u64 {
    match limit {
        MemoryLimit::Entries(_) => 1,
        MemoryLimit::Bytes(_) => key_len as u64 + 2 * value_len as u64 + ENTRY_OVERHEAD,
    }
}

/// Entries in this process's memory, bounded by entry count or bytes; lost when the process
/// exits. The Rust counterpart of `functools.lru_cache(maxsize=...)`.
///
/// Eviction is SIEVE (Zhang et al., NSDI '24): close to LRU's hit ratio and better on
/// workloads with one-hit keys, and a hit writes no shared state but one flag.
///
/// An entry that cannot fit is refused with [`Error::TooLarge`], never dropped silently:
/// under `MemoryLimit::Entries(0)` every entry; under a byte limit, an entry weighing more
/// than one shard holds (the whole limit below 2 MiB, else at least 1 MiB and about an eighth
/// of the limit on 2 cores; shards let threads work in parallel).
pub struct MemoryBackend {
    entries: Sieve<Item>,
    limit: MemoryLimit,
    counters: Mutex<HashMap<String, u64>>,
    evictions: AtomicU64,
}

impl MemoryBackend {
    /// A backend bounded by `limit`.
    pub fn new(limit: MemoryLimit) -> MemoryBackend {
        let most = std::thread::available_parallelism().map_or(4, |n| n.get() * 4) as u64;
        let (capacity, shards) = match limit {
            MemoryLimit::Entries(n) => (n as u64, n as u64 / MIN_SHARD_ENTRIES),
            MemoryLimit::Bytes(b) => (b, b / MIN_SHARD_BYTES),
        };
        MemoryBackend {
            entries: Sieve::new(capacity, shards.clamp(1, most) as usize),
            limit,
            counters: Mutex::new(HashMap::new()),
            evictions: AtomicU64::new(0),
        }
    }

    /// Live entries (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// The largest weight one entry may have: what one shard holds.
    fn admits(&self) -> u64 {
        self.entries.admits()
    }

    fn too_large(&self, size: usize) -> Error {
        let admits = self.admits();
        Error::TooLarge {
            size: size as u64,
            limit: self.limit,
            admits: match self.limit {
                MemoryLimit::Entries(_) if admits == 0 => "no entry".into(),
                MemoryLimit::Entries(_) => "entries of any size".into(),
                MemoryLimit::Bytes(_) => format!(
                    "entries of at most {} bytes of key and value, the value counted twice",
                    admits.saturating_sub(ENTRY_OVERHEAD)
                ),
            },
        }
    }

    /// The bytes under `key`, unless absent or expired (an expired entry is removed).
    #[inline]
    fn live(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let (bytes, expired) = self
            .entries
            .get_with(key, |item| (Arc::clone(&item.bytes), item.is_expired()))?;
        if expired {
            // Only this entry: a newer one set meanwhile stays.
            self.entries
                .remove_if(key, |current| Arc::ptr_eq(&current.bytes, &bytes));
            return None;
        }
        Some(bytes)
    }

    /// The value kept decoded under `key` from exactly `bytes`, cloned, if it is a `T`
    /// (whatever its expiry and tags: the caller checked them).
    pub(crate) fn kept_from<T: Any + Clone>(&self, key: &[u8], bytes: &Arc<[u8]>) -> Option<T> {
        self.entries
            .get_with(key, |item| {
                if !Arc::ptr_eq(&item.bytes, bytes) {
                    return None;
                }
                item.decoded.get()?.value::<T>().cloned()
            })
            .flatten()
    }

    /// Keeps `decoded`, decoded from exactly `bytes`, beside them, if `key` still holds them
    /// (the first value kept stays).
    pub(crate) fn keep(&self, key: &[u8], bytes: &Arc<[u8]>, decoded: Decoded) {
        self.entries.get_with(key, |item| {
            if Arc::ptr_eq(&item.bytes, bytes) {
                let _ = item.decoded.set(decoded);
            }
        });
    }

    /// The value kept decoded under `key`, cloned, if there is one of type `T` that needs no
    /// check but its expiry (no tags): a memory hit at the cost of a lookup and a clone.
    #[inline]
    pub(crate) fn kept<T: Any + Clone>(
        &self,
        key: &[u8],
        now_ms: impl FnOnce() -> u64,
    ) -> Option<T> {
        self.entries
            .get_with(key, |item| {
                let decoded = item.decoded.get()?;
                if decoded.has_tags || item.expires_at.is_some() {
                    return None;
                }
                let value = decoded.value::<T>()?;
                if decoded.expires_at != 0 && decoded.expires_at <= now_ms() {
                    return None;
                }
                Some(value.clone())
            })
            .flatten()
    }

    /// Inserts `value` under `key` and returns its bytes as stored; [`Error::TooLarge`] (and
    /// nothing of `key` left) if it cannot fit.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Arc<[u8]>> {
        let bytes: Arc<[u8]> = value.into();
        let item = Item {
            bytes: Arc::clone(&bytes),
            expires_at: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
            decoded: OnceLock::new(),
        };
        let weight = weight_of(self.limit, key.len(), value.len());
        if weight > self.admits() {
            self.entries.remove(key);
            return Err(self.too_large(key.len() + value.len()));
        }
        let inserted = self.entries.insert(key, item, weight);
        self.evictions
            .fetch_add(inserted.evicted.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.live(key).map(|bytes| bytes.to_vec()))
    }

    fn get_stored(&self, key: &[u8]) -> Result<Option<Stored<'static>>> {
        Ok(self.live(key).map(Stored::memory))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.insert(key, value, ttl).map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .entries
            .remove(key)
            .is_some_and(|item| !item.is_expired()))
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.live(key).is_some())
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        Ok(self.entries.remove_prefix(prefix).len() as u64)
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

    fn counters_are_private(&self) -> bool {
        true
    }

    fn memory_tier(&self) -> Option<&MemoryBackend> {
        Some(self)
    }

    fn tiers(&self) -> Vec<TierStats> {
        vec![TierStats::new(
            "memory",
            self.evictions(),
            Some(self.len() as u64),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_inline_and_on_the_heap_are_bytes() {
        let m = MemoryBackend::new(MemoryLimit::Entries(10));
        for len in [0, 1, 61, 62, 63, 300] {
            let key = vec![len as u8; len];
            m.set(&key, &[7], None).unwrap();
            assert_eq!(m.get(&key).unwrap(), Some(vec![7]), "{len}");
            assert_eq!(sieve::Key::new(&key).as_slice(), &key[..]);
        }
        assert_eq!(m.get(&[1, 1]).unwrap(), None);
        assert_eq!(m.delete_prefix(&[]).unwrap(), 6);
    }

    #[test]
    fn entry_bound_evicts_and_counts() {
        let m = MemoryBackend::new(MemoryLimit::Entries(100));
        for i in 0..1000u32 {
            m.set(&i.to_le_bytes(), b"v", None).unwrap();
        }
        assert!(m.len() <= 100, "{}", m.len());
        assert_eq!(m.evictions(), 1000 - m.len() as u64);
    }

    #[test]
    fn overwrites_and_deletes_are_not_evictions() {
        let m = MemoryBackend::new(MemoryLimit::Entries(100));
        for round in 0..50u8 {
            for i in 0..10u32 {
                m.set(&i.to_le_bytes(), &[round], None).unwrap();
            }
        }
        assert_eq!(m.get(&3u32.to_le_bytes()).unwrap(), Some(vec![49]));
        assert!(m.delete(&3u32.to_le_bytes()).unwrap());
        assert_eq!(m.delete_prefix(&[]).unwrap(), 9);
        assert_eq!(m.evictions(), 0);
    }

    #[test]
    fn byte_bound_holds() {
        let m = MemoryBackend::new(MemoryLimit::Bytes(200_000));
        for i in 0..1000u32 {
            m.set(&i.to_le_bytes(), &[0; 1000], None).unwrap();
        }
        let per_entry = 4 + 2 * 1000 + ENTRY_OVERHEAD as usize;
        assert!(m.len() * per_entry <= 200_000, "{}", m.len());
        assert_eq!(m.evictions(), 1000 - m.len() as u64);
    }

    #[test]
    fn what_cannot_fit_is_refused_not_dropped() {
        let none = MemoryBackend::new(MemoryLimit::Entries(0));
        assert!(matches!(
            none.set(b"k", b"v", None),
            Err(Error::TooLarge { size: 2, .. })
        ));
        assert_eq!(none.get(b"k").unwrap(), None);
        assert!(none.is_empty());
        let small = MemoryBackend::new(MemoryLimit::Bytes(10_000));
        small.set(b"k", b"old", None).unwrap();
        let err = small.set(b"k", &[0; 20_000], None).unwrap_err();
        assert!(err.to_string().contains("20001 bytes"), "{err}");
        assert_eq!(
            small.get(b"k").unwrap(),
            None,
            "the old value does not linger"
        );
        assert_eq!(small.evictions(), 0);
        small.set(b"k", &[0; 1000], None).unwrap();
        assert!(small.contains(b"k").unwrap());
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
        assert_eq!(m.evictions(), 0);
    }

    #[test]
    fn decoded_values_stay_with_their_bytes() {
        let m = MemoryBackend::new(MemoryLimit::Entries(10));
        let first = m.insert(b"k", b"one", None).unwrap();
        m.keep(b"k", &first, Decoded::new(1u32, 0, false));
        assert_eq!(m.kept::<u32>(b"k", || 0), Some(1));
        assert_eq!(m.kept_from::<u32>(b"k", &first), Some(1));
        assert_eq!(m.kept::<String>(b"k", || 0), None, "another type");
        let second = m.insert(b"k", b"two", None).unwrap();
        assert_eq!(
            m.kept::<u32>(b"k", || 0),
            None,
            "a new value starts undecoded"
        );
        assert_eq!(
            m.kept_from::<u32>(b"k", &first),
            None,
            "the old bytes are gone"
        );
        m.keep(b"k", &first, Decoded::new(3u32, 0, false));
        assert_eq!(
            m.kept::<u32>(b"k", || 0),
            None,
            "kept only beside its own bytes"
        );
        m.keep(b"k", &second, Decoded::new(2u32, 0, true));
        assert_eq!(
            m.kept::<u32>(b"k", || 0),
            None,
            "tags are checked by the caller"
        );
        assert_eq!(m.kept_from::<u32>(b"k", &second), Some(2));
    }
}
