//! The persistent backend: logcache's own engine on a local directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use logcache_engine::{Options, Store};

#[cfg(target_os = "linux")]
use crate::backend::Leased;
use crate::backend::{Backend, Stored};
use crate::codec;
use crate::error::{Error, Result};
use crate::fingerprint::stable_hash;
use crate::stats::TierStats;

/// Where caches of format version 1 kept their counters (bincode); the engine's shared
/// counters replace it, and it is folded into them on open.
pub(crate) const COUNTERS_FILE: &str = "logcache-counters";

/// Entries in a directory on the local disk, surviving restarts and crashes: the Rust
/// counterpart of Python's `diskcache`. Any number of processes may open a directory at once;
/// namespace and tag generations are the engine's counters, shared by all of them.
pub struct DiskBackend {
    store: Store,
    /// Compute leases shared with the other processes (`None` where the store is read-only).
    #[cfg(target_os = "linux")]
    leases: Option<crate::disk_leases::Leases>,
}

impl DiskBackend {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<DiskBackend> {
        let read_only = options.read_only;
        let store = Store::open(dir.as_ref(), options)?;
        upgrade_counters(&store, dir.as_ref())?;
        Ok(DiskBackend {
            #[cfg(target_os = "linux")]
            leases: if read_only {
                None
            } else {
                Some(crate::disk_leases::Leases::open(dir.as_ref())?)
            },
            store,
        })
    }

    /// The engine underneath, for its statistics, compaction and the like.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn counters_error(message: String) -> Error {
    Error::Backend {
        backend: "disk",
        message,
    }
}

/// Folds a version 1 counters file into the engine's counters (raising each to its value,
/// which repeating after a crash leaves the same), then removes it.
fn upgrade_counters(store: &Store, dir: &Path) -> Result<()> {
    let path = dir.join(COUNTERS_FILE);
    if !path.exists() {
        return Ok(());
    }
    for (name, value) in read_counters(&path)? {
        store.raise_counter(&name, value)?;
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        // Another process upgraded it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(counters_error(format!("removing {}: {e}", path.display()))),
    }
}

fn read_counters(path: &Path) -> Result<BTreeMap<String, u64>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(counters_error(format!("reading {}: {e}", path.display()))),
    };
    if bytes.len() < 8 || stable_hash(&bytes[8..]).to_le_bytes() != bytes[..8] {
        return Err(counters_error(format!(
            "{} is damaged (checksum mismatch)",
            path.display()
        )));
    }
    codec::decode_bincode(&bytes[8..])
        .map_err(|e| counters_error(format!("{} is damaged: {e}", path.display())))
}

/// Writes a version 1 counters file (for the upgrade's tests).
#[cfg(test)]
fn write_counters(dir: &Path, counters: &BTreeMap<String, u64>) -> Result<()> {
    let body = codec::encode_bincode(counters).map_err(counters_error)?;
    let mut bytes = stable_hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let temp = dir.join(format!("{COUNTERS_FILE}.tmp"));
    let written = fs::File::create(&temp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&temp, dir.join(COUNTERS_FILE)))
        .and_then(|()| fs::File::open(dir).and_then(|d| d.sync_all()));
    written.map_err(|e| counters_error(format!("writing counters: {e}")))
}

impl Backend for DiskBackend {
    fn name(&self) -> &'static str {
        "disk"
    }

    /// Every process that opens the directory sees the leases (`disk_leases`); a dead
    /// holder's lease is freed by the kernel at once.
    #[cfg(target_os = "linux")]
    fn supports_leases(&self) -> bool {
        self.leases.is_some()
    }

    #[cfg(target_os = "linux")]
    fn read_or_lease(&self, key: &[u8], _token: u64, _lease: Duration) -> Result<Leased> {
        if let Some(value) = self.get(key)? {
            return Ok(Leased::Found(value));
        }
        let Some(leases) = &self.leases else {
            return Ok(Leased::Taken);
        };
        if !leases.try_take(key)? {
            return Ok(Leased::HeldElsewhere);
        }
        // Stored by a holder that gave the lease back between our read and our taking it?
        match self.get(key) {
            Ok(None) => Ok(Leased::Taken),
            found => {
                leases.release(key)?;
                Ok(Leased::Found(found?.expect("just read")))
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn set_and_release(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        _token: u64,
    ) -> Result<()> {
        let stored = self.set(key, value, ttl);
        self.release_lease(key, 0)?;
        stored
    }

    #[cfg(target_os = "linux")]
    fn release_lease(&self, key: &[u8], _token: u64) -> Result<()> {
        match &self.leases {
            Some(leases) => leases.release(key),
            None => Ok(()),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.store.get(key)?)
    }

    fn read_stored(&self, key: &[u8], f: &mut dyn FnMut(Option<&Stored<'_>>)) -> Result<()> {
        let found = self
            .store
            .get_with(key, |value, _| f(Some(&Stored::borrowed(value))))?;
        if found.is_none() {
            f(None);
        }
        Ok(())
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        match ttl {
            Some(ttl) => self.store.put_with_ttl(key, value, ttl)?,
            None => self.store.put(key, value)?,
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.store.delete(key)?)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        self.store.contains(key).map_err(Into::into)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut removed = 0;
        for key in self.store.keys().filter(|k| k.starts_with(prefix)) {
            removed += u64::from(self.store.delete(&key)?);
        }
        Ok(removed)
    }

    fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.store.counter(name)?)
    }

    fn increment(&self, name: &str) -> Result<u64> {
        Ok(self.store.increment_counter(name)?)
    }

    fn counters_epoch(&self) -> Option<u64> {
        self.store.counter_changes().ok()
    }

    fn evictions(&self) -> u64 {
        self.store.stats().evictions
    }

    fn flush(&self) -> Result<()> {
        Ok(self.store.sync()?)
    }

    fn tiers(&self) -> Vec<TierStats> {
        let stats = self.store.stats();
        vec![TierStats::new(
            "disk",
            stats.evictions,
            Some(stats.keys as u64),
        )]
    }

    fn engine(&self) -> Option<&Store> {
        Some(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_reopen_and_are_shared_between_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
            let other = DiskBackend::open(dir.path(), Options::default()).unwrap();
            assert_eq!(d.increment("ns:a").unwrap(), 1);
            let epoch = other.counters_epoch();
            assert_eq!(other.increment("ns:a").unwrap(), 2);
            assert_ne!(other.counters_epoch(), epoch, "a change moves the epoch on");
            assert_eq!(d.counter("ns:a").unwrap(), 2, "seen by the other open");
            assert_eq!(d.increment("tag:x").unwrap(), 1);
        }
        let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
        assert_eq!(d.counter("ns:a").unwrap(), 2);
        assert_eq!(d.counter("tag:x").unwrap(), 1);
        assert_eq!(d.counter("never").unwrap(), 0);
    }

    #[test]
    fn a_version_1_counters_file_is_folded_in_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let old: BTreeMap<String, u64> = [("ns:a".to_string(), 5), ("tag:t".to_string(), 2)].into();
        write_counters(dir.path(), &old).unwrap();
        {
            let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
            assert_eq!(d.counter("ns:a").unwrap(), 5);
            assert_eq!(d.counter("tag:t").unwrap(), 2);
            assert_eq!(d.increment("ns:a").unwrap(), 6);
        }
        assert!(
            !dir.path().join(COUNTERS_FILE).exists(),
            "folded in, then removed"
        );
        let path = dir.path().join(COUNTERS_FILE);
        let mut bytes = {
            write_counters(dir.path(), &old).unwrap();
            fs::read(&path).unwrap()
        };
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            DiskBackend::open(dir.path(), Options::default()),
            Err(Error::Backend {
                backend: "disk",
                ..
            })
        ));
        // The engine's own counters are untouched by the refused upgrade.
        fs::remove_file(&path).unwrap();
        let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
        assert_eq!(d.counter("ns:a").unwrap(), 6);
    }
}
