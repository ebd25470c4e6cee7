//! Named counters that only ever go up, shared by every process that opens the store (the
//! typed layer keeps its namespace and tag generations in them).
//!
//! They live in the file `COUNTERS`, replaced whole (temporary name, fsync, rename, directory
//! fsync) under the writer lock on every change, so a counter survives any crash once its
//! change returned, and eviction (which deletes segments) can never reset one. The table's
//! `COUNTER_CHANGES` word moves on after every change: a process re-reads the file only when
//! it moved since its last read.
//!
//! ```text
//! header (20 bytes: magic LCCNT, format version u16, kind 5, zeros)
//! entry* : name_len u32 LE | name (UTF-8) | value u64 LE
//! footer : entry count u64 LE | CRC-32 of every byte before it, u32 LE
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::index::file::header;
use crate::segment::{self, FORMAT_VERSION};
use crate::shared::Shared;
use crate::vfs::Dir;

/// Name of the counters file.
pub(crate) const COUNTERS_FILE: &str = "COUNTERS";
const MAGIC: &[u8; 5] = b"LCCNT";
const HEADER_LEN: usize = 20;
const KIND: u8 = 5;

/// This process's copy of the counters, and the change count it was read at.
#[derive(Debug, Default)]
pub(crate) struct CounterCache {
    read_at: Mutex<Option<(u64, BTreeMap<String, u64>)>>,
}

fn bad(path: &Path, reason: &'static str) -> Error {
    Error::BadIndex {
        path: path.to_path_buf(),
        reason,
    }
}

fn encode(counters: &BTreeMap<String, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + counters.len() * 24 + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(KIND);
    out.resize(HEADER_LEN, 0);
    for (name, value) in counters {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&(counters.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, u64>> {
    if bytes.len() < HEADER_LEN + 12 || &bytes[..5] != MAGIC || bytes[7] != KIND {
        return Err(bad(path, "not a counters file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad(path, "counters file checksum mismatch"));
    }
    let (entries, count) = body.split_at(body.len() - 8);
    let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
    let mut out = BTreeMap::new();
    let mut at = HEADER_LEN;
    while at < entries.len() {
        let len = entries
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad(path, "counters file cut short"))?;
        let name = entries
            .get(at + 4..at + 4 + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad(path, "bad counter name"))?;
        let value = entries
            .get(at + 4 + len..at + 12 + len)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| bad(path, "counters file cut short"))?;
        out.insert(name.to_string(), value);
        at += 12 + len;
    }
    if out.len() as u64 != count {
        return Err(bad(path, "counters file entry count mismatch"));
    }
    Ok(out)
}

fn path(dir: &Path) -> PathBuf {
    dir.join(COUNTERS_FILE)
}

/// Reads the counters file of `dir` (empty if there is none).
pub(crate) fn read(dir: &Dir) -> Result<BTreeMap<String, u64>> {
    let path = path(dir);
    match dir.read(&path) {
        Ok(bytes) => decode(&bytes, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io("reading", &path, e)),
    }
}

fn write(dir: &Dir, counters: &BTreeMap<String, u64>) -> Result<()> {
    let path = path(dir);
    let temp = dir.join(format!("{COUNTERS_FILE}.tmp"));
    dir.write_synced(&temp, &encode(counters))
        .and_then(|()| dir.vfs().rename(&temp, &path))
        .context("writing", &path)?;
    segment::sync_dir(dir)
}

impl CounterCache {
    /// Runs `f` on the counters as the file holds them now, reading the file again only if
    /// a counter changed (in any process) since this process last read it.
    fn with_current<R>(
        &self,
        shared: &Shared,
        f: impl FnOnce(&BTreeMap<String, u64>) -> R,
    ) -> Result<R> {
        shared.index.refresh()?;
        let changes = shared.index.counter(header::COUNTER_CHANGES);
        let mut cached = self.read_at.lock();
        if !matches!(&*cached, Some((at, _)) if *at == changes) {
            // Read after the change count: the file is at least as new as the count.
            *cached = Some((changes, read(&shared.dir)?));
        }
        Ok(f(&cached.as_ref().expect("just read").1))
    }

    /// Every counter, as the file holds them now.
    pub fn all(&self, shared: &Shared) -> Result<BTreeMap<String, u64>> {
        self.with_current(shared, BTreeMap::clone)
    }

    /// Counter `name` (0 if never changed).
    pub fn get(&self, shared: &Shared, name: &str) -> Result<u64> {
        self.with_current(shared, |counters| counters.get(name).copied().unwrap_or(0))
    }

    /// Sets counter `name` to `f(its value)` (which must not be lower), durably, for every
    /// process; returns the new value.
    pub fn update(&self, shared: &Shared, name: &str, f: impl FnOnce(u64) -> u64) -> Result<u64> {
        let _writer = shared.lock_writer()?;
        let mut counters = read(&shared.dir)?;
        let old = counters.get(name).copied().unwrap_or(0);
        let new = f(old).max(old);
        if new == old {
            return Ok(old);
        }
        counters.insert(name.to_string(), new);
        write(&shared.dir, &counters)?;
        let table = shared.index.table();
        let changes = table
            .word(header::COUNTER_CHANGES)
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        *self.read_at.lock() = Some((changes, counters));
        Ok(new)
    }
}

/// The change count readers compare with (moves on after every counter change).
pub(crate) fn changes(shared: &Shared) -> Result<u64> {
    shared.index.refresh()?;
    Ok(shared.index.counter(header::COUNTER_CHANGES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_damage_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        assert!(read(dir).unwrap().is_empty());
        let counters: BTreeMap<String, u64> =
            [("ns:a".to_string(), 3), ("tag:é".to_string(), u64::MAX)].into();
        write(dir, &counters).unwrap();
        assert_eq!(read(dir).unwrap(), counters);
        let bytes = std::fs::read(path(dir)).unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(decode(&damaged, Path::new("x")).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], Path::new("x")).is_err(),
                "cut at {cut}"
            );
        }
    }
}
