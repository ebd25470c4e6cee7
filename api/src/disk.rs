//! The persistent backend: logcache's own engine on a local directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use logcache_engine::{Options, Store};
use parking_lot::Mutex;

use crate::backend::{Backend, Stored};
use crate::codec;
use crate::error::{Error, Result};
use crate::fingerprint::stable_hash;
use crate::stats::TierStats;

/// Counters live beside the segments in this file (the engine ignores files it does not
/// know), so that evicting old segments can never reset a namespace or tag generation.
pub(crate) const COUNTERS_FILE: &str = "logcache-counters";

/// Entries in a directory on the local disk, surviving restarts and crashes: the Rust
/// counterpart of Python's `diskcache`. One process at a time may open a directory.
pub struct DiskBackend {
    store: Store,
    dir: PathBuf,
    counters: Mutex<BTreeMap<String, u64>>,
}

impl DiskBackend {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<DiskBackend> {
        let store = Store::open(dir.as_ref(), options)?;
        let dir = dir.as_ref().to_path_buf();
        let counters = read_counters(&dir.join(COUNTERS_FILE))?;
        Ok(DiskBackend {
            store,
            dir,
            counters: Mutex::new(counters),
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

pub(crate) fn read_counters(path: &Path) -> Result<BTreeMap<String, u64>> {
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

/// Replaces the counters file atomically and durably.
fn write_counters(dir: &Path, counters: &BTreeMap<String, u64>) -> Result<()> {
    let body = codec::encode_bincode(counters).map_err(counters_error)?;
    let mut bytes = stable_hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let temp = dir.join(format!("{COUNTERS_FILE}.tmp"));
    let written = fs::File::create(&temp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&temp, dir.join(COUNTERS_FILE)))
        .and_then(|()| fs::File::open(dir).and_then(|d| d.sync_all()));
    written.map_err(|e| counters_error(format!("writing counters: {e}")))
}

impl Backend for DiskBackend {
    fn name(&self) -> &'static str {
        "disk"
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
        Ok(self.counters.lock().get(name).copied().unwrap_or(0))
    }

    fn increment(&self, name: &str) -> Result<u64> {
        let mut counters = self.counters.lock();
        let mut next = counters.clone();
        let value = next.entry(name.to_string()).or_insert(0);
        *value += 1;
        let value = *value;
        write_counters(&self.dir, &next)?;
        *counters = next;
        Ok(value)
    }

    fn evictions(&self) -> u64 {
        self.store.stats().evictions
    }

    fn flush(&self) -> Result<()> {
        Ok(self.store.sync()?)
    }

    /// The directory is locked by this process, so only this object changes its counters.
    fn counters_are_private(&self) -> bool {
        true
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
    fn counters_survive_reopen_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
            assert_eq!(d.increment("ns:a").unwrap(), 1);
            assert_eq!(d.increment("ns:a").unwrap(), 2);
            assert_eq!(d.increment("tag:x").unwrap(), 1);
        }
        {
            let d = DiskBackend::open(dir.path(), Options::default()).unwrap();
            assert_eq!(d.counter("ns:a").unwrap(), 2);
            assert_eq!(d.counter("tag:x").unwrap(), 1);
            assert_eq!(d.counter("never").unwrap(), 0);
        }
        let path = dir.path().join(COUNTERS_FILE);
        let mut bytes = fs::read(&path).unwrap();
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
    }
}
