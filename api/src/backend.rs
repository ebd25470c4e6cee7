//! The storage interface every backend implements: bytes in, bytes out.

use std::time::Duration;

use crate::error::Result;

/// A place to keep cache entries: in memory, on disk, or on a server.
///
/// Keys and values are opaque bytes; the [`Cache`](crate::Cache) above it handles types,
/// namespaces, tags and statistics, so a backend only stores, expires and evicts. Counters are
/// small named integers (namespace and tag generations) that must survive as long as the
/// entries do and are never evicted.
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

    /// Entries the backend evicted to stay within its size limit, since it was opened.
    fn evictions(&self) -> u64;

    /// Makes writes so far as durable as the backend can (a no-op in memory).
    fn flush(&self) -> Result<()>;
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
}
