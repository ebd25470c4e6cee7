//! Memory in front of another backend: reads that miss in memory fill it from behind.

use std::time::Duration;

use parking_lot::RwLock;

use crate::backend::{Backend, Leased, Stored};
use crate::error::{Error, Result};
use crate::fingerprint::stable_hash;
use crate::memory::MemoryBackend;
use crate::stats::TierStats;

/// A memory tier over a slower backend (usually the disk). Writes go to both; reads try
/// memory first and, on a miss, copy what the slower tier has into memory. Counters and the
/// truth live in the slower tier. Entries carry their expiry inside the value, so a copy in
/// memory never outlives the original. An entry too large for the memory tier lives in the
/// slower tier only.
///
/// A copy into memory and a write of the same key exclude each other (by stripe of the key's
/// hash), so a read that found the old value can never put it back in memory after a write
/// replaced or deleted it. Compute leases (stampede protection) are the slower tier's.
pub struct TieredBackend {
    front: MemoryBackend,
    back: Box<dyn Backend>,
    stripes: Box<[RwLock<()>]>,
}

/// Stripes of keys whose fills and writes exclude each other.
const STRIPES: usize = 64;

impl TieredBackend {
    /// `front` over `back`.
    pub fn new(front: MemoryBackend, back: impl Backend) -> TieredBackend {
        TieredBackend {
            front,
            back: Box::new(back),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
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

    fn stripe(&self, key: &[u8]) -> &RwLock<()> {
        &self.stripes[stable_hash(key) as usize % STRIPES]
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
        let _no_write_meanwhile = self.stripe(key).read();
        let Some(value) = self.back.get(key)? else {
            return Ok(None);
        };
        Ok(Some(match self.fill(key, &value, None)? {
            Some(stored) => stored,
            None => Stored::from_bytes(value),
        }))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let _no_fill_meanwhile = self.stripe(key).write();
        self.back.set(key, value, ttl)?;
        self.fill(key, value, ttl).map(drop)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        let _no_fill_meanwhile = self.stripe(key).write();
        let front = self.front.delete(key)?;
        Ok(self.back.delete(key)? || front)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.front.contains(key)? || self.back.contains(key)?)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let _no_fill_meanwhile: Vec<_> = self.stripes.iter().map(|s| s.write()).collect();
        self.front.delete_prefix(prefix)?;
        self.back.delete_prefix(prefix)
    }

    /// Leases are the slower tier's: it is the one other processes and machines share.
    fn supports_leases(&self) -> bool {
        self.back.supports_leases()
    }

    fn read_or_lease(&self, key: &[u8], token: u64, lease: Duration) -> Result<Leased> {
        if let Some(stored) = self.front.get_stored(key)? {
            return Ok(Leased::Found(stored.bytes().to_vec()));
        }
        let _no_write_meanwhile = self.stripe(key).read();
        let read = self.back.read_or_lease(key, token, lease)?;
        if let Leased::Found(value) = &read {
            self.fill(key, value, None)?;
        }
        Ok(read)
    }

    fn set_and_release(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> Result<()> {
        let _no_fill_meanwhile = self.stripe(key).write();
        self.back.set_and_release(key, value, ttl, token)?;
        self.fill(key, value, ttl).map(drop)
    }

    fn release_lease(&self, key: &[u8], token: u64) -> Result<()> {
        self.back.release_lease(key, token)
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

    fn counters_epoch(&self) -> Option<u64> {
        self.back.counters_epoch()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::memory::MemoryLimit;

    /// Readers filling the memory tier from behind race a writer that overwrites and deletes:
    /// once the writer is done, the memory tier must not hold a value it replaced.
    #[test]
    fn a_fill_never_brings_back_an_overwritten_or_deleted_value() {
        let tiered = Arc::new(TieredBackend::new(
            MemoryBackend::new(MemoryLimit::Entries(100)),
            MemoryBackend::new(MemoryLimit::Entries(100)),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (tiered, stop) = (Arc::clone(&tiered), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = tiered.get(b"k").unwrap();
                    }
                })
            })
            .collect();
        let mut stale = 0;
        for round in 0..20_000u32 {
            tiered.set(b"k", &round.to_le_bytes(), None).unwrap();
            let _ = tiered.get(b"k").unwrap();
            if round % 2 == 0 {
                tiered.delete(b"k").unwrap();
                std::thread::yield_now();
                stale += usize::from(tiered.get(b"k").unwrap().is_some());
            } else {
                tiered.set(b"k", b"last", None).unwrap();
                std::thread::yield_now();
                stale += usize::from(tiered.get(b"k").unwrap().as_deref() != Some(&b"last"[..]));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(stale, 0, "reads that saw a value replaced before them");
    }
}
