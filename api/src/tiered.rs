//! Memory in front of another backend: reads that miss in memory fill it from behind.

use std::time::Duration;

use crate::backend::{Backend, Stored};
use crate::error::{Error, Result};
use crate::memory::MemoryBackend;
use crate::stats::TierStats;

/// A memory tier over a slower backend (usually the disk). Writes go to both; reads try
/// memory first and, on a miss, copy what the slower tier has into memory. Counters and the
/// truth live in the slower tier. Entries carry their expiry inside the value, so a copy in
/// memory never outlives the original. An entry too large for the memory tier lives in the
/// slower tier only.
pub struct TieredBackend {
    front: MemoryBackend,
    back: Box<dyn Backend>,
}

impl TieredBackend {
    /// `front` over `back`.
    pub fn new(front: MemoryBackend, back: impl Backend) -> TieredBackend {
        TieredBackend {
            front,
            back: Box::new(back),
        }
    }

    /// The memory tier.
    pub fn front(&self) -> &MemoryBackend {
        &self.front
    }

    /// The slower tier.
    pub fn back(&self) -> &dyn Backend {
        &*self.back
    }

    /// Copies `value` into the memory tier; an entry too large for it stays behind only.
    fn fill(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Stored<'static>>> {
        match self.front.insert(key, value, ttl) {
            Ok(item) => Ok(Some(Stored::memory(item))),
            Err(Error::TooLarge { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Backend for TieredBackend {
    fn name(&self) -> &'static str {
        "tiered"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_stored(key)?.map(|s| s.bytes().to_vec()))
    }

    fn get_stored(&self, key: &[u8]) -> Result<Option<Stored<'static>>> {
        if let Some(stored) = self.front.get_stored(key)? {
            return Ok(Some(stored));
        }
        let Some(value) = self.back.get(key)? else {
            return Ok(None);
        };
        Ok(Some(match self.fill(key, &value, None)? {
            Some(stored) => stored,
            None => Stored::from_bytes(value),
        }))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.back.set(key, value, ttl)?;
        self.fill(key, value, ttl).map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let front = self.front.delete(key)?;
        Ok(self.back.delete(key)? || front)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.front.contains(key)? || self.back.contains(key)?)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        self.front.delete_prefix(prefix)?;
        self.back.delete_prefix(prefix)
    }

    fn counter(&self, name: &str) -> Result<u64> {
        self.back.counter(name)
    }

    fn increment(&self, name: &str) -> Result<u64> {
        self.back.increment(name)
    }

    /// Evictions of both tiers.
    fn evictions(&self) -> u64 {
        self.front.evictions() + self.back.evictions()
    }

    fn flush(&self) -> Result<()> {
        self.back.flush()
    }

    fn counters_are_private(&self) -> bool {
        self.back.counters_are_private()
    }

    fn tiers(&self) -> Vec<TierStats> {
        let mut tiers = self.front.tiers();
        tiers.extend(self.back.tiers());
        tiers
    }

    fn engine(&self) -> Option<&logcache_engine::Store> {
        self.back.engine()
    }

    fn memory_tier(&self) -> Option<&MemoryBackend> {
        Some(&self.front)
    }
}
