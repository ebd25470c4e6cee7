//! Memory in front of another backend: reads that miss in memory fill it from behind.

use std::time::Duration;

use crate::backend::Backend;
use crate::error::Result;
use crate::memory::MemoryBackend;

/// A memory tier over a slower backend (usually the disk). Writes go to both; reads try
/// memory first and, on a miss, copy what the slower tier has into memory. Counters and the
/// truth live in the slower tier. Entries carry their expiry inside the value, so a copy in
/// memory never outlives the original.
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
}

impl Backend for TieredBackend {
    fn name(&self) -> &'static str {
        "tiered"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.front.get(key)? {
            return Ok(Some(v));
        }
        let value = self.back.get(key)?;
        if let Some(v) = &value {
            self.front.set(key, v, None)?;
        }
        Ok(value)
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.back.set(key, value, ttl)?;
        self.front.set(key, value, ttl)
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

    fn evictions(&self) -> u64 {
        self.back.evictions()
    }

    fn flush(&self) -> Result<()> {
        self.back.flush()
    }
}
