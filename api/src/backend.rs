//! The storage interface every backend implements: bytes in, bytes out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::memory::MemoryBackend;
use crate::stats::TierStats;

/// A place to keep cache entries: in memory, on disk, or on a server.
///
/// Keys and values are opaque bytes; the [`Cache`](crate::Cache) above it handles types,
/// namespaces, tags and statistics, so a backend only stores, expires and evicts. Counters are
/// small named integers (namespace and tag generations) that must survive as long as the
/// entries do and are never evicted.
///
/// Only the first ten methods are required; the others have defaults that suit a backend
/// outside this process.
pub trait Backend: Send + Sync + 'static {
    /// A short name for messages (`"memory"`, `"disk"`, ...).
    fn name(&self) -> &'static str;

    /// The value stored under `key`, unless it is absent or expired.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key`, expiring after `ttl` if given.
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`; returns whether it held a value.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Whether `key` holds an unexpired value.
    fn contains(&self, key: &[u8]) -> Result<bool>;

    /// Removes every key that starts with `prefix`; returns how many were removed.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64>;

    /// The counter called `name` (0 if it was never incremented).
    fn counter(&self, name: &str) -> Result<u64>;

    /// Adds one to the counter called `name` and returns its new value. Atomic, and durable
    /// where the backend is.
    fn increment(&self, name: &str) -> Result<u64>;

    /// Entries the backend evicted to stay within its size limit, since it was opened
    /// (overwrites and deletes are not evictions).
    fn evictions(&self) -> u64;

    /// Makes writes so far as durable as the backend can (a no-op in memory).
    fn flush(&self) -> Result<()>;

    /// Like [`get`](Backend::get), as a [`Stored`] value: a backend that keeps entries in this
    /// process's memory returns its entry, beside which the cache keeps the decoded value, so
    /// that reading it again costs a clone instead of a decode.
    fn get_stored(&self, key: &[u8]) -> Result<Option<Stored<'static>>> {
        Ok(self.get(key)?.map(Stored::from_bytes))
    }

    /// Hands what `key` holds to `f`, once (`None` if nothing), without copying the bytes
    /// where the backend can (the disk engine hands over the bytes where they lie).
    fn read_stored(&self, key: &[u8], f: &mut dyn FnMut(Option<&Stored<'_>>)) -> Result<()> {
        let stored = self.get_stored(key)?;
        f(stored.as_ref());
        Ok(())
    }

    /// Whether counters change only through this backend object (so the cache may keep
    /// their values): true for a backend in this process's memory, false (the default) for
    /// anything another process or machine can change.
    fn counters_are_private(&self) -> bool {
        false
    }

    /// A number that moves on whenever any counter changes, in any process, if the backend
    /// can tell cheaply: the cache may keep a counter's value until it moves. `None` (the
    /// default): read the counter every time.
    fn counters_epoch(&self) -> Option<u64> {
        None
    }

    /// Whether the backend finds a namespace's current generation itself, in the same step as
    /// the entry (Redis: one script, one round trip): the cache then hands it keys that hold
    /// `CURRENT_GENERATION` (MessagePack `nil`, 0xc0) where the generation
    /// goes (docs/format.md, *Keys*), and never reads the generation counter for an entry.
    /// `false` (the default): keys hold the generation.
    fn resolves_generations(&self) -> bool {
        false
    }

    /// Whether [`read_or_lease`](Backend::read_or_lease) takes leases that callers in other
    /// processes and machines see (Redis). `false` (the default): leases are this process's
    /// business, which its single flight already handles.
    fn supports_leases(&self) -> bool {
        false
    }

    /// Reads `key` for a caller about to compute its value if it is missing: what it holds,
    /// or, if nothing, the key's lease taken for `lease` under `token` (that caller computes),
    /// or word that another caller holds the lease (this one should wait for its value). The
    /// default reads, and lets every caller that misses compute.
    fn read_or_lease(&self, key: &[u8], token: u64, lease: Duration) -> Result<Leased> {
        let _ = (token, lease);
        Ok(self.get(key)?.map_or(Leased::Taken, Leased::Found))
    }

    /// Stores a computed value, like [`set`](Backend::set), and gives the key's lease back if
    /// `token` still holds it.
    fn set_and_release(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> Result<()> {
        let _ = token;
        self.set(key, value, ttl)
    }

    /// Gives the key's lease back if `token` still holds it (a computation failed).
    fn release_lease(&self, key: &[u8], token: u64) -> Result<()> {
        let _ = (key, token);
        Ok(())
    }

    /// Whether the `_async` methods wait without holding a thread (Redis with the `tokio`
    /// feature, called inside a tokio runtime): the cache's async calls then use them. `false`
    /// (the default): they call the blocking methods.
    fn is_async(&self) -> bool {
        false
    }

    /// [`get`](Backend::get), as a future.
    fn get_async<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.get(key)))
    }

    /// [`set`](Backend::set), as a future.
    fn set_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(std::future::ready(self.set(key, value, ttl)))
    }

    /// [`read_or_lease`](Backend::read_or_lease), as a future.
    fn read_or_lease_async<'a>(
        &'a self,
        key: &'a [u8],
        token: u64,
        lease: Duration,
    ) -> BackendFuture<'a, Leased> {
        Box::pin(std::future::ready(self.read_or_lease(key, token, lease)))
    }

    /// [`set_and_release`](Backend::set_and_release), as a future.
    fn set_and_release_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> BackendFuture<'a, ()> {
        Box::pin(std::future::ready(
            self.set_and_release(key, value, ttl, token),
        ))
    }

    /// Statistics per tier, the fastest first (one entry unless the backend is tiered).
    fn tiers(&self) -> Vec<TierStats> {
        vec![TierStats::new(self.name(), self.evictions(), None)]
    }

    /// The disk engine underneath, if there is one (for its statistics, compaction and
    /// verification).
    fn engine(&self) -> Option<&logcache_engine::Store> {
        None
    }

    /// The in-process memory tier that every read tries first, if there is one: the backend
    /// itself, or the front of a tiered backend. The cache reads values it keeps decoded there
    /// without going through the rest of the backend.
    fn memory_tier(&self) -> Option<&MemoryBackend> {
        None
    }
}

/// What a backend's `_async` methods return.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What [`Backend::read_or_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leased {
    /// The stored value.
    Found(Vec<u8>),
    /// Nothing stored; the caller now holds the lease and computes.
    Taken,
    /// Nothing stored, and another caller holds the lease: it is computing the value.
    HeldElsewhere,
}

/// A stored value as a backend hands it to the cache: bytes (owned, or borrowed where they
/// lie), or a memory backend's entry (the bytes, and room for the decoded value beside them).
pub struct Stored<'a>(StoredBytes<'a>);

enum StoredBytes<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
    /// A memory entry's bytes (which also tell that entry from a later one of its key).
    Memory(Arc<[u8]>),
}

impl Stored<'static> {
    /// A value read from outside this process's memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Stored<'static> {
        Stored(StoredBytes::Owned(bytes))
    }

    pub(crate) fn memory(bytes: Arc<[u8]>) -> Stored<'static> {
        Stored(StoredBytes::Memory(bytes))
    }
}

impl<'a> Stored<'a> {
    /// A value seen where it lies (a mapped file, a read buffer), for the duration of a
    /// [`Backend::read_stored`] call.
    pub fn borrowed(bytes: &'a [u8]) -> Stored<'a> {
        Stored(StoredBytes::Borrowed(bytes))
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            StoredBytes::Owned(b) => b,
            StoredBytes::Borrowed(b) => b,
            StoredBytes::Memory(bytes) => bytes,
        }
    }

    /// A memory entry's bytes, if these are one's.
    pub(crate) fn memory_bytes(&self) -> Option<&Arc<[u8]>> {
        match &self.0 {
            StoredBytes::Memory(bytes) => Some(bytes),
            StoredBytes::Owned(_) | StoredBytes::Borrowed(_) => None,
        }
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        (**self).set(key, value, ttl)
    }
    fn delete(&self, key: &[u8]) -> Result<bool> {
        (**self).delete(key)
    }
    fn contains(&self, key: &[u8]) -> Result<bool> {
        (**self).contains(key)
    }
    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        (**self).delete_prefix(prefix)
    }
    fn counter(&self, name: &str) -> Result<u64> {
        (**self).counter(name)
    }
    fn increment(&self, name: &str) -> Result<u64> {
        (**self).increment(name)
    }
    fn evictions(&self) -> u64 {
        (**self).evictions()
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn get_stored(&self, key: &[u8]) -> Result<Option<Stored<'static>>> {
        (**self).get_stored(key)
    }
    fn read_stored(&self, key: &[u8], f: &mut dyn FnMut(Option<&Stored<'_>>)) -> Result<()> {
        (**self).read_stored(key, f)
    }
    fn counters_are_private(&self) -> bool {
        (**self).counters_are_private()
    }
    fn counters_epoch(&self) -> Option<u64> {
        (**self).counters_epoch()
    }
    fn resolves_generations(&self) -> bool {
        (**self).resolves_generations()
    }
    fn supports_leases(&self) -> bool {
        (**self).supports_leases()
    }
    fn read_or_lease(&self, key: &[u8], token: u64, lease: Duration) -> Result<Leased> {
        (**self).read_or_lease(key, token, lease)
    }
    fn set_and_release(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> Result<()> {
        (**self).set_and_release(key, value, ttl, token)
    }
    fn release_lease(&self, key: &[u8], token: u64) -> Result<()> {
        (**self).release_lease(key, token)
    }
    fn is_async(&self) -> bool {
        (**self).is_async()
    }
    fn get_async<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        (**self).get_async(key)
    }
    fn set_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        (**self).set_async(key, value, ttl)
    }
    fn read_or_lease_async<'a>(
        &'a self,
        key: &'a [u8],
        token: u64,
        lease: Duration,
    ) -> BackendFuture<'a, Leased> {
        (**self).read_or_lease_async(key, token, lease)
    }
    fn set_and_release_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> BackendFuture<'a, ()> {
        (**self).set_and_release_async(key, value, ttl, token)
    }
    fn tiers(&self) -> Vec<TierStats> {
        (**self).tiers()
    }
    fn engine(&self) -> Option<&logcache_engine::Store> {
        (**self).engine()
    }
    fn memory_tier(&self) -> Option<&MemoryBackend> {
        (**self).memory_tier()
    }
}
