//! Building a cache: which backend, and its settings.

use std::path::PathBuf;
use std::time::Duration;

use logcache_engine::{Durability, Options};

use crate::backend::Backend;
use crate::cache::Cache;
use crate::disk::DiskBackend;
use crate::error::Result;
use crate::lease::DEFAULT_LEASE;
use crate::memory::{MemoryBackend, MemoryLimit};
use crate::tiered::TieredBackend;

enum Where {
    Memory(MemoryLimit),
    Disk(PathBuf),
    Backend(Box<dyn Backend>),
}

/// Settings for a [`Cache`].
///
/// ```
/// use std::time::Duration;
/// use logcache::{CacheBuilder, MemoryLimit};
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = CacheBuilder::new()
///     .disk(dir.path())
///     .max_bytes(1 << 30)                      // evict the oldest data past 1 GiB
///     .default_ttl(Duration::from_secs(86400)) // entries live a day unless told otherwise
///     .memory_tier(MemoryLimit::Entries(10_000))
///     .build()?;
/// # Ok::<(), logcache::Error>(())
/// ```
pub struct CacheBuilder {
    place: Where,
    default_ttl: Option<Duration>,
    strict: bool,
    max_bytes: Option<u64>,
    engine: Options,
    memory_tier: Option<MemoryLimit>,
    lease: Option<Duration>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder::new()
    }
}

impl CacheBuilder {
    /// An in-memory cache of 10,000 entries unless told otherwise.
    pub fn new() -> CacheBuilder {
        CacheBuilder {
            place: Where::Memory(MemoryLimit::Entries(10_000)),
            default_ttl: None,
            strict: false,
            max_bytes: None,
            engine: Options::default(),
            memory_tier: None,
            lease: Some(DEFAULT_LEASE),
        }
    }

    /// Keep entries in this process's memory, within `limit`.
    pub fn memory(mut self, limit: MemoryLimit) -> Self {
        self.place = Where::Memory(limit);
        self
    }

    /// Keep entries on disk in `dir`, on logcache's engine.
    pub fn disk(mut self, dir: impl Into<PathBuf>) -> Self {
        self.place = Where::Disk(dir.into());
        self
    }

    /// Keep entries in any [`Backend`] (Redis, say).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.place = Where::Backend(Box::new(backend));
        self
    }

    /// TTL of entries stored without one.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Size limit in bytes: for the disk, the segment files (oldest data evicted first); in
    /// memory, keys and values.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// When the disk engine makes writes durable (default: handed to the OS on each write).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.engine.durability = durability;
        self
    }

    /// All of the disk engine's options (`max_bytes` and `durability` set after this still
    /// apply).
    pub fn engine_options(mut self, options: Options) -> Self {
        self.engine = options;
        self
    }

    /// Put a memory tier of this size in front of the disk (or other) backend.
    pub fn memory_tier(mut self, limit: MemoryLimit) -> Self {
        self.memory_tier = Some(limit);
        self
    }

    /// In strict mode, the `get_or_insert_with` family fails when the backend fails; by
    /// default it counts the error and computes anyway. (Memoized functions choose with
    /// `#[memoize(strict)]`.)
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// How long a caller that computes a missed value (`get_or_insert_with`, a memoized
    /// function) holds the key's lease, where the backend has leases that other processes
    /// and machines see (Redis): meanwhile, callers elsewhere that miss on the same key wait
    /// for its value instead of computing it too. A holder that dies, or computes for longer,
    /// lets another caller take over; a caller waits at most twice this long, then computes
    /// itself. `None`: no leases. Default: 60 s.
    pub fn lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self
    }

    /// Opens the backend and builds the cache.
    pub fn build(self) -> Result<Cache> {
        let backend: Box<dyn Backend> = match self.place {
            Where::Memory(limit) => {
                let limit = self.max_bytes.map_or(limit, MemoryLimit::Bytes);
                Box::new(MemoryBackend::new(limit))
            }
            Where::Disk(dir) => {
                let mut options = self.engine;
                if self.max_bytes.is_some() {
                    options.max_disk_bytes = self.max_bytes;
                }
                Box::new(DiskBackend::open(dir, options)?)
            }
            Where::Backend(b) => b,
        };
        let backend: Box<dyn Backend> = match self.memory_tier {
            Some(limit) => Box::new(TieredBackend::new(MemoryBackend::new(limit), backend)),
            None => backend,
        };
        Ok(Cache::from_parts(
            backend,
            self.default_ttl,
            self.strict,
            self.lease,
        ))
    }
}
