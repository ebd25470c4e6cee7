//! The in-process backend: a bounded concurrent map (quick_cache, S3-FIFO eviction) with
//! per-entry expiry, keeping beside each entry's bytes the value decoded from them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

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
/// quick_cache's share of a shard for new entries; an entry heavier than that is refused.
const HOT_ALLOCATION: f64 = 0.97;
/// A byte limit is split into shards of at least this much (one entry must fit in a shard),
/// up to quick_cache's default number of shards.
const MIN_SHARD_BYTES: u64 = 1 << 20;

/// One entry: the stored bytes, their expiry, and the value decoded from them once a typed
/// read has decoded it.
pub(crate) struct Item {
    bytes: Box<[u8]>,
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
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    #[inline]
    pub(crate) fn decoded(&self) -> Option<&Decoded> {
        self.decoded.get()
    }

    /// Keeps the value decoded from this item's bytes (the first one kept stays).
    pub(crate) fn keep_decoded(&self, decoded: Decoded) {
        let _ = self.decoded.set(decoded);
    }

    fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= Instant::now())
    }
}

/// Bytes of a key kept inside the map entry; longer keys live on the heap.
const INLINE_KEY: usize = 62;

/// A key, inline up to 62 bytes (a short key with its namespace, or most memoized calls'),
/// so that a lookup compares it without following a pointer.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == INLINE_KEY + 2);

impl Key {
    fn new(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Hashes and compares as the bytes do (what `Borrow<[u8]>` requires).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

#[derive(Clone)]
struct ByLimit(MemoryLimit);

impl ByLimit {
    fn weight_of(&self, key_len: usize, value_len: usize) -> u64 {
        match self.0 {
            MemoryLimit::Entries(_) => 1,
            MemoryLimit::Bytes(_) => key_len as u64 + 2 * value_len as u64 + ENTRY_OVERHEAD,
        }
    }
}

impl Weighter<Key, Arc<Item>> for ByLimit {
    fn weight(&self, key: &Key, val: &Arc<Item>) -> u64 {
        self.weight_of(key.as_slice().len(), val.bytes.len())
    }
}

/// What one insertion did besides inserting: told apart in the eviction hook, so that
/// overwrites are not counted as evictions and a refused entry is an error.
#[derive(Default)]
struct Insertion {
    key: Option<Key>,
    item: Option<Arc<Item>>,
    refused: bool,
    evicted: u64,
    /// Dropped after the shard lock is released.
    dropped: Vec<Arc<Item>>,
}

#[derive(Clone, Default)]
struct Hooks;

impl Lifecycle<Key, Arc<Item>> for Hooks {
    type RequestState = Insertion;

    fn on_evict(&self, state: &mut Insertion, key: Key, val: Arc<Item>) {
        if state
            .item
            .as_ref()
            .is_some_and(|new| Arc::ptr_eq(new, &val))
        {
            state.refused = true;
        } else if state.key.as_ref() != Some(&key) {
            state.evicted += 1;
        }
        state.dropped.push(val);
    }
}

/// Entries in this process's memory, bounded by entry count or bytes; lost when the process
/// exits. The Rust counterpart of `functools.lru_cache(maxsize=...)`.
///
/// An entry that cannot fit is refused with [`Error::TooLarge`], never dropped silently:
/// under `MemoryLimit::Entries(0)` every entry; under a byte limit, an entry weighing more
/// than one shard holds (the whole limit below 2 MiB, else at least 1 MiB and about an eighth
/// of the limit on 2 cores; shards let threads work in parallel).
pub struct MemoryBackend {
    entries: QuickCache<Key, Arc<Item>, ByLimit, DefaultHashBuilder, Hooks>,
    limit: MemoryLimit,
    counters: Mutex<HashMap<String, u64>>,
    evictions: AtomicU64,
}

impl MemoryBackend {
    /// A backend bounded by `limit`.
    pub fn new(limit: MemoryLimit) -> MemoryBackend {
        let (estimated_items, capacity) = match limit {
            MemoryLimit::Entries(n) => (n.max(1), n as u64),
            MemoryLimit::Bytes(b) => (((b / 256).max(16)) as usize, b),
        };
        let mut options = OptionsBuilder::new();
        options
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity)
            .hot_allocation(HOT_ALLOCATION);
        if let MemoryLimit::Bytes(b) = limit {
            let most = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
            options.shards(((b / MIN_SHARD_BYTES) as usize).clamp(1, most));
        }
        let options = options.build().expect("valid quick_cache options");
        MemoryBackend {
            entries: QuickCache::with_options(
                options,
                ByLimit(limit),
                DefaultHashBuilder::default(),
                Hooks,
            ),
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
        self.entries.is_empty()
    }

    /// The largest weight one entry may have (quick_cache admits an entry into one shard's
    /// share for new entries).
    fn admits(&self) -> u64 {
        let shard = self.entries.shard_capacity();
        ((shard as f64 * HOT_ALLOCATION) as u64).clamp(shard.min(1), shard)
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

    #[inline]
    fn live(&self, key: &[u8]) -> Option<Arc<Item>> {
        let item = self.entries.get(key)?;
        if item.is_expired() {
            self.entries.remove(key);
            return None;
        }
        Some(item)
    }

    /// The value kept decoded under `key`, cloned, if there is one of type `T` that needs no
    /// check but its expiry (no tags): a memory hit at the cost of a lookup and a clone.
    #[inline]
    pub(crate) fn kept<T: Any + Clone>(
        &self,
        key: &[u8],
        now_ms: impl FnOnce() -> u64,
    ) -> Option<T> {
        let item = self.entries.get(key)?;
        let decoded = item.decoded.get()?;
        if decoded.has_tags || item.expires_at.is_some() {
            return None;
        }
        let value = decoded.value::<T>()?;
        if decoded.expires_at != 0 && decoded.expires_at <= now_ms() {
            return None;
        }
        Some(value.clone())
    }

    /// Inserts `value` under `key` and returns its entry; [`Error::TooLarge`] (and nothing of
    /// `key` left) if it cannot fit.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Arc<Item>> {
        let item = Arc::new(Item {
            bytes: value.into(),
            expires_at: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
            decoded: OnceLock::new(),
        });
        if ByLimit(self.limit).weight_of(key.len(), value.len()) > self.admits() {
            self.entries.remove(key);
            return Err(self.too_large(key.len() + value.len()));
        }
        let key = Key::new(key);
        let mut insertion = Insertion {
            key: Some(key.clone()),
            item: Some(Arc::clone(&item)),
            ..Insertion::default()
        };
        self.entries
            .insert_with_lifecycle(key, Arc::clone(&item), &mut insertion);
        self.evictions
            .fetch_add(insertion.evicted, Ordering::Relaxed);
        if insertion.refused {
            return Err(self.too_large(item.bytes.len()));
        }
        Ok(item)
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.live(key).map(|item| item.bytes.to_vec()))
    }

    fn get_stored(&self, key: &[u8]) -> Result<Option<Stored<'static>>> {
        Ok(self.live(key).map(Stored::memory))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.insert(key, value, ttl).map(drop)
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
        let keys: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, _)| k.as_slice().starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in keys {
            removed += u64::from(self.entries.remove(k.as_slice()).is_some());
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
        for len in [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300] {
            let key = vec![len as u8; len];
            m.set(&key, &[7], None).unwrap();
            assert_eq!(m.get(&key).unwrap(), Some(vec![7]), "{len}");
            assert_eq!(Key::new(&key).as_slice(), &key[..]);
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
        m.set(b"k", b"one", None).unwrap();
        let first = m.get_stored(b"k").unwrap().unwrap();
        first.keep_decoded(Decoded::new(1u32, 0, false));
        let kept = |s: &Stored| s.decoded().and_then(|d| d.value::<u32>().copied());
        assert_eq!(kept(&m.get_stored(b"k").unwrap().unwrap()), Some(1));
        assert!(
            first.decoded().unwrap().value::<String>().is_none(),
            "another type"
        );
        m.set(b"k", b"two", None).unwrap();
        let second = m.get_stored(b"k").unwrap().unwrap();
        assert_eq!(second.bytes(), b"two");
        assert_eq!(kept(&second), None, "a new value starts undecoded");
        first.keep_decoded(Decoded::new(3u32, 0, false));
        assert_eq!(kept(&m.get_stored(b"k").unwrap().unwrap()), None);
    }
}
