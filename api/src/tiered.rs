//! Memory in front of another backend: reads that miss in memory fill it from behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{RwLock, RwLockWriteGuard};

use crate::backend::{Backend, BackendFuture, Leased, Stored};
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
/// replaced or deleted it. An async read cannot hold the stripe while it waits: it fills
/// memory only if no write of its stripe ended meanwhile. Compute leases (stampede protection)
/// and async I/O are the slower tier's.
pub struct TieredBackend {
    front: MemoryBackend,
    back: Box<dyn Backend>,
    stripes: Box<[Stripe]>,
}

/// Keys whose fills and writes exclude each other: a lock, and how many writes ended.
#[derive(Default)]
struct Stripe {
    lock: RwLock<()>,
    writes: AtomicU64,
}

/// A stripe held for a write; counts the write when dropped, before letting others in.
struct Writing<'a> {
    _lock: RwLockWriteGuard<'a, ()>,
    writes: &'a AtomicU64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.writes.fetch_add(1, Ordering::Release);
    }
}

impl Stripe {
    fn write(&self) -> Writing<'_> {
        Writing {
            _lock: self.lock.write(),
            writes: &self.writes,
        }
    }
}

/// The value a lease read found, if it found one.
fn found_value(read: &Leased) -> Option<&[u8]> {
    match read {
        Leased::Found(value) => Some(value),
        _ => None,
    }
}

/// Stripes of keys whose fills and writes exclude each other.
const STRIPES: usize = 64;

impl TieredBackend {
    /// `front` over `back`.
    pub fn new(front: MemoryBackend, back: impl Backend) -> TieredBackend {
        TieredBackend {
            front,
            back: Box::new(back),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
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

    fn stripe(&self, key: &[u8]) -> &Stripe {
        &self.stripes[stable_hash(key) as usize % STRIPES]
    }

    /// An async read, memory first: a hit answers `hit(bytes)`; else `read()` reads the
    /// slower tier, and the value `found` in its answer is copied into memory unless a write
    /// of the key's stripe ended while it waited (the value may be the one that write
    /// replaced: an async read cannot hold the stripe across its wait).
    async fn read_async<'a, R>(
        &'a self,
        key: &'a [u8],
        hit: fn(Vec<u8>) -> R,
        read: impl FnOnce() -> BackendFuture<'a, R>,
        found: fn(&R) -> Option<&[u8]>,
    ) -> Result<R> {
        if let Some(stored) = self.front.get_stored(key)? {
            return Ok(hit(stored.bytes().to_vec()));
        }
        let stripe = self.stripe(key);
        let writes = stripe.writes.load(Ordering::Acquire);
        let answer = read().await?;
        if let Some(value) = found(&answer) {
            let _no_write_meanwhile = stripe.lock.read();
            if stripe.writes.load(Ordering::Acquire) == writes {
                self.fill(key, value, None)?;
            }
        }
        Ok(answer)
    }

    /// An async write of `value` by `write()`: the memory copy is dropped first (and the
    /// drop counted, so that reads under way do not fill the old value), then filled with
    /// `value` once the slower tier has it.
    async fn write_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        write: impl FnOnce() -> BackendFuture<'a, ()>,
    ) -> Result<()> {
        {
            let _writing = self.stripe(key).write();
            self.front.delete(key)?;
        }
        write().await?;
        let _writing = self.stripe(key).write();
        self.fill(key, value, ttl).map(drop)
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
        let _no_write_meanwhile = self.stripe(key).lock.read();
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
        let _no_fill_meanwhile: Vec<_> = self.stripes.iter().map(Stripe::write).collect();
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
        let _no_write_meanwhile = self.stripe(key).lock.read();
        let read = self.back.read_or_lease(key, token, lease)?;
        if let Some(value) = found_value(&read) {
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

    fn is_async(&self) -> bool {
        self.back.is_async()
    }

    fn get_async<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.read_async(
            key,
            Some,
            move || self.back.get_async(key),
            Option::as_deref,
        ))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(self.write_async(key, value, ttl, move || {
            self.back.set_async(key, value, ttl)
        }))
    }

    fn read_or_lease_async<'a>(
        &'a self,
        key: &'a [u8],
        token: u64,
        lease: Duration,
    ) -> BackendFuture<'a, Leased> {
        Box::pin(self.read_async(
            key,
            Leased::Found,
            move || self.back.read_or_lease_async(key, token, lease),
            found_value,
        ))
    }

    fn set_and_release_async<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
        token: u64,
    ) -> BackendFuture<'a, ()> {
        Box::pin(self.write_async(key, value, ttl, move || {
            self.back.set_and_release_async(key, value, ttl, token)
        }))
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

    /// A slower tier whose async calls let other tasks run between reading and answering
    /// (as a network round trip does).
    #[cfg(feature = "tokio")]
    struct Yielding(MemoryBackend);

    #[cfg(feature = "tokio")]
    impl Backend for Yielding {
        fn name(&self) -> &'static str {
            "yielding"
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.0.get(key)
        }
        fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
            self.0.set(key, value, ttl)
        }
        fn delete(&self, key: &[u8]) -> Result<bool> {
            self.0.delete(key)
        }
        fn contains(&self, key: &[u8]) -> Result<bool> {
            self.0.contains(key)
        }
        fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
            self.0.delete_prefix(prefix)
        }
        fn counter(&self, name: &str) -> Result<u64> {
            self.0.counter(name)
        }
        fn increment(&self, name: &str) -> Result<u64> {
            self.0.increment(name)
        }
        fn evictions(&self) -> u64 {
            0
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn is_async(&self) -> bool {
            true
        }
        fn get_async<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
            Box::pin(async move {
                let value = self.0.get(key);
                tokio::task::yield_now().await;
                value
            })
        }
        fn set_async<'a>(
            &'a self,
            key: &'a [u8],
            value: &'a [u8],
            ttl: Option<Duration>,
        ) -> BackendFuture<'a, ()> {
            Box::pin(async move {
                tokio::task::yield_now().await;
                self.0.set(key, value, ttl)
            })
        }
    }

    /// As `a_fill_never_brings_back_an_overwritten_or_deleted_value`, with async reads and
    /// writes that cannot hold the stripe while they wait, on one thread.
    #[cfg(feature = "tokio")]
    #[test]
    fn an_async_fill_never_brings_back_an_overwritten_or_deleted_value() {
        let tiered = Arc::new(TieredBackend::new(
            MemoryBackend::new(MemoryLimit::Entries(100)),
            Yielding(MemoryBackend::new(MemoryLimit::Entries(100))),
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stale = runtime.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (tiered, stop) = (Arc::clone(&tiered), Arc::clone(&stop));
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let _ = tiered.get_async(b"k").await.unwrap();
                            // A memory hit does not wait: let the writer run.
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            let mut stale = 0;
            for round in 0..5_000u32 {
                tiered
                    .set_async(b"k", &round.to_le_bytes(), None)
                    .await
                    .unwrap();
                if round % 2 == 0 {
                    tiered.delete(b"k").unwrap();
                    tokio::task::yield_now().await;
                    stale += usize::from(tiered.get_async(b"k").await.unwrap().is_some());
                } else {
                    tiered.set_async(b"k", b"last", None).await.unwrap();
                    tokio::task::yield_now().await;
                    let got = tiered.get_async(b"k").await.unwrap();
                    stale += usize::from(got.as_deref() != Some(&b"last"[..]));
                }
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                r.await.unwrap();
            }
            stale
        });
        assert_eq!(stale, 0, "reads that saw a value replaced before them");
    }
}
