//! The public [`Store`]: a handle on the shared state, with the background thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::batch::WriteBatch;
use crate::clock::{expiry_after, now_ms};
use crate::compaction::CompactionStats;
use crate::error::{Error, IoContext, Result};
use crate::eviction;
use crate::group_commit::GroupCommit;
use crate::index::file::{header, row};
use crate::index::slot;
use crate::lock::{Role, StoreLocks};
use crate::maintenance;
use crate::options::Options;
use crate::record;
use crate::recovery::{self, RecoveryReport};
use crate::segment::{FORMAT_VERSION, MAX_SEGMENT_LEN, data_start};
use crate::shared::{Shared, Signal};
use crate::vfs::{Dir, EntryKind};
use crate::worker::Worker;
use crate::writer::{Change, Writer};

/// An embedded, persistent key-value store: an append-only log of segment files with a
/// persistent hash index of every live key beside them.
///
/// `Store` is `Send + Sync`: share it between threads with an `Arc`. Reads run in parallel and
/// take no lock; writes are serialized. Dropping the store syncs it and closes it cleanly, like
/// [`Store::close`] without the error report.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use logcache_engine::{Options, Store};
/// let store = Store::open(dir.path(), Options::default())?;
/// store.put(b"user:jason", b"{\"age\": 42}")?;
/// assert_eq!(store.get(b"user:jason")?, Some(b"{\"age\": 42}".to_vec()));
/// assert!(store.delete(b"user:jason")?);
/// assert_eq!(store.get(b"user:jason")?, None);
/// store.close()?;
/// # Ok::<(), logcache_engine::Error>(())
/// ```
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    worker: Option<Worker>,
}

/// Space and key counts of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live (unexpired) keys.
    pub keys: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes the segment files take: the active segment at its reserved size, the others up
    /// to the end of their records.
    pub disk_bytes: u64,
    /// Bytes of the index files (the hash table, the segment table and the pointer).
    pub index_bytes: u64,
    /// Bytes of the records that hold current values.
    pub live_bytes: u64,
    /// Bytes of overwritten, deleted and tombstone records: what compaction can reclaim.
    pub dead_bytes: u64,
    /// fdatasync calls for writes since open (group commit shares one among many writers).
    pub syncs: u64,
    /// Compactions completed, explicit and automatic (kept in the index across opens).
    pub compactions: u64,
    /// Background compactions, hint writes or evictions that failed since open (they are
    /// retried).
    pub compaction_errors: u64,
    /// Keys evicted to stay within `Options::max_disk_bytes` (kept in the index across opens).
    pub evictions: u64,
    /// Reads since open that found their key's record damaged and answered that the key is
    /// absent (with `Options::strict`, they fail instead).
    pub damaged_reads: u64,
}

/// Iterator over a snapshot of the live keys, in no particular order.
#[derive(Debug)]
pub struct Keys(std::vec::IntoIter<Vec<u8>>);

impl Iterator for Keys {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Keys {}

impl Store {
    /// Opens the store in `dir`, creating the directory if needed.
    ///
    /// Any number of stores, in this process and others, may have a directory open at once
    /// and read and write it; a write acknowledged by one is seen by the next read of any
    /// other (unless one was opened with [`Options::exclusive`], which keeps the others out
    /// with [`Error::Locked`]).
    ///
    /// The first store to open a directory maps its index and checks it. An index closed
    /// cleanly, or last changed during this boot, is used as it is; otherwise (after an OS
    /// crash or a power cut, or when it is missing or damaged) it is rebuilt from the segment
    /// files, cutting a torn tail off the newest segment. What was found is in
    /// [`Store::recovery_report`]; invalid data elsewhere is [`Error::Corrupt`]. A store
    /// opened while others have the directory open maps the index as it is.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let dir = Dir::new(options.vfs.clone(), dir.as_ref().to_path_buf());
        let vfs = dir.vfs();
        match vfs.kind(&dir) {
            Ok(Some(EntryKind::Dir)) => {}
            Ok(Some(EntryKind::File(_))) => return Err(Error::NotADirectory(dir.to_path_buf())),
            Ok(None) if options.read_only => {
                let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
                return Err(Error::io("opening", &dir, missing));
            }
            Err(e) => return Err(Error::io("opening", &dir, e)),
            Ok(None) => vfs
                .create_dir_all(&dir)
                .context("creating the store directory", &dir)?,
        }
        let read_only = options.read_only || !vfs.is_writable(&dir);
        let (locks, (index, report)) = if read_only {
            (None, recovery::open_read_only(&dir)?)
        } else {
            let (locks, opened) =
                StoreLocks::acquire(&dir, options.exclusive, |role| match role {
                    Role::First => recovery::open_index(&dir, now_ms(), &options),
                    Role::Joined => recovery::join_index(&dir),
                })?;
            (Some(locks), opened)
        };
        let writer = Writer::new(dir.clone(), &options);
        let shared = Arc::new(Shared {
            dir,
            options,
            index,
            writer: Mutex::new(writer),
            commit: GroupCommit::default(),
            report,
            maintenance: Mutex::new(()),
            closing: AtomicBool::new(false),
            compaction_errors: AtomicU64::new(0),
            damaged_reads: AtomicU64::new(0),
            expired_scan: Mutex::new((None, hashbrown::HashMap::new())),
            signal: Signal::default(),
            locks,
            ops_repaired: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            counters: Default::default(),
        });
        let background = shared.options.background
            && (shared.options.auto_compaction || shared.options.max_disk_bytes.is_some());
        let worker = if background && !read_only {
            let worker = Worker::spawn(Arc::clone(&shared))
                .context("starting the compaction thread for", &shared.dir)?;
            Some(worker)
        } else {
            None
        };
        Ok(Store { shared, worker })
    }

    /// Stops this store as a killed process would: nothing is synced or marked clean, and
    /// its locks and maps go. For crash tests (on a [`crate::simdisk::SimDisk`], before its
    /// power cut).
    #[cfg(feature = "fuzzing")]
    pub fn simulate_crash(mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.stop_background();
    }

    /// Whether the store was opened read-only (asked for, or its directory not writable).
    pub fn is_read_only(&self) -> bool {
        self.shared.locks.is_none()
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// What opening the store found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    /// The value of `key`, or `None` if it is absent or expired. The record's checksum and key
    /// are verified on every read; a mismatch is [`Error::Corrupt`], never a wrong value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with_expiry(key)?.map(|(value, _)| value))
    }

    /// [`Store::get`], with the value's expiry time (unix milliseconds; 0: never), as
    /// [`Store::put_expiring_at`] takes it.
    pub fn get_with_expiry(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        self.get_with(key, |value, expires_at| (value.to_vec(), expires_at))
    }

    /// Reads `key` and hands its value and expiry time (unix ms; 0: never) to `f`, without
    /// copying the value out: `f` sees it where it lies in the segment's map. The checks are
    /// those of [`Store::get`]. Keep `f` short: while it runs, no other thread of this process
    /// can map a new segment (`f` may read the store itself).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = logcache_engine::Store::open(dir.path(), Default::default())?;
    /// store.put(b"k", b"a long value")?;
    /// assert_eq!(store.get_with(b"k", |value, _| value.len())?, Some(12));
    /// # Ok::<(), logcache_engine::Error>(())
    /// ```
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8], u64) -> R) -> Result<Option<R>> {
        self.shared.locate_with(key, f)
    }

    /// Whether `key` holds an unexpired value. Reads the record's header to check the key
    /// (the index keeps only a hash of it).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.shared.locate_with(key, |_, _| ())?.is_some())
    }

    /// Number of live (unexpired) keys. Without expiring entries it is a counter; with them,
    /// every record that can expire is looked at.
    pub fn len(&self) -> usize {
        let index = &self.shared.index;
        let table = index.current_table_or_mapped();
        if table.word(header::EXPIRING).load(Ordering::Acquire) == 0 {
            return table.word(header::KEYS).load(Ordering::Acquire) as usize;
        }
        let mut live = 0;
        self.for_each_live(|_| live += 1);
        live
    }

    /// Whether the store holds no live key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the live keys, in no particular order. Writes after the call do not
    /// affect it.
    pub fn keys(&self) -> Keys {
        let mut keys = Vec::new();
        self.for_each_live(|key| keys.push(key.to_vec()));
        Keys(keys.into_iter())
    }

    /// Calls `f` with the key of every live (unexpired) record the index points at.
    fn for_each_live(&self, mut f: impl FnMut(&[u8])) {
        let index = &self.shared.index;
        let table = index.current_table_or_mapped();
        let now = now_ms();
        index.for_each_slot(&table, |value| {
            let at = slot::location_of(value);
            if let Ok(seg) = index.segment(at.number)
                && let Ok(rec) = record::decode(seg.tail(at.offset))
                && !rec.is_tombstone()
                && (rec.expires_at == 0 || rec.expires_at > now)
            {
                f(rec.key);
            }
        });
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_expiring_at(key, value, 0)
    }

    /// Stores `value` under `key`; it reads as absent once `ttl` has passed.
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        self.put_expiring_at(key, value, expiry_after(ttl))
    }

    /// Stores `value` under `key` until `expires_at` (unix milliseconds; 0 never expires).
    pub fn put_expiring_at(&self, key: &[u8], value: &[u8], expires_at: u64) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        self.shared.write(&[Change::Put {
            key,
            value,
            expires_at,
        }])?;
        Ok(())
    }

    /// Deletes `key`. Returns whether it held an unexpired value.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.check_key(key)?;
        let held = self.shared.locate_with(key, |_, _| ())?.is_some();
        let appended = self.shared.write(&[Change::Delete { key }])?;
        Ok(held && appended.is_some())
    }

    /// Applies every operation of `batch` atomically: readers see all of them or none, and
    /// after a crash the store holds all of them or none.
    pub fn write_batch(&self, batch: &WriteBatch) -> Result<()> {
        let mut total: u64 = 0;
        for change in batch.changes() {
            match change {
                Change::Put { key, value, .. } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                }
                Change::Delete { key } => self.check_key(key)?,
            }
            total += change.len() as u64;
        }
        let max = MAX_SEGMENT_LEN - data_start(FORMAT_VERSION) as u64;
        if total > max {
            return Err(Error::BatchTooLarge { len: total, max });
        }
        if batch.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change<'_>> = batch.changes().collect();
        self.shared.write(&changes)?;
        Ok(())
    }

    /// Does nothing: every write is in the OS's page cache (it survives a crash of this
    /// process) when it returns. Kept for the programs that call it.
    pub fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Makes every write so far durable (fdatasync of the active segment; shared with
    /// concurrent `Durability::Sync` writers).
    pub fn sync(&self) -> Result<()> {
        self.shared.sync()
    }

    /// Stops background work, syncs, marks the index clean (so the next open uses it without
    /// a scan), and releases the directory lock, reporting any error that dropping would
    /// swallow.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.shared.close_cleanly()
    }

    /// Compacts now: seals the active segment, then rewrites every segment up to the newest
    /// one holding dead bytes (overwritten, deleted or expired records) with only its live
    /// records, and deletes the old files. Reads and writes go on meanwhile; a write that
    /// lands during the compaction wins over the copy. Waits for a background compaction in
    /// progress to finish first.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use logcache_engine::{Options, Store};
    /// let store = Store::open(dir.path(), Options::default())?;
    /// for i in 0..100u32 {
    ///     store.put(b"counter", &i.to_le_bytes())?;
    /// }
    /// let stats = store.compact()?;
    /// assert_eq!(stats.records_copied, 1);
    /// assert_eq!(store.stats().dead_bytes, 0);
    /// # Ok::<(), logcache_engine::Error>(())
    /// ```
    pub fn compact(&self) -> Result<CompactionStats> {
        self.compact_with_progress(&|_, _| {})
    }

    /// [`Store::compact`], calling `progress(bytes read, bytes to read)` as it goes (for a
    /// progress bar).
    pub fn compact_with_progress(&self, progress: &dyn Fn(u64, u64)) -> Result<CompactionStats> {
        let locks = self
            .shared
            .locks
            .as_ref()
            .ok_or_else(|| Error::ReadOnly(self.shared.dir.to_path_buf()))?;
        let _guard = self.shared.maintenance.lock();
        let _held = locks.maintenance.lock()?;
        maintenance::compact_all(&self.shared, progress)
    }

    /// Checks this open store's files as [`verify`](crate::verify) does (every header,
    /// record checksum and hint file), without closing it. Compaction and writes wait while
    /// it runs.
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        let Some(locks) = &self.shared.locks else {
            // Nobody writes a read-only store's files.
            return crate::verify::verify_files(&self.shared.dir);
        };
        let _guard = self.shared.maintenance.lock();
        let _held = locks.maintenance.lock()?;
        let _writer = self.shared.lock_writer()?;
        crate::verify::verify_files(&self.shared.dir)
    }

    /// The segment the writer appends to and the end of its records (for crash tests, which
    /// cut the log after a given write).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn log_position(&self) -> (u64, u64) {
        let writer = self.shared.lock_writer().expect("the writer lock");
        writer.position(&self.shared.index)
    }

    fn stop_background(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }

    /// Counter `name`: a number that only goes up, shared by every process that opens the
    /// store and kept across restarts and crashes once a change to it returned (0 if it was
    /// never changed). The typed cache keeps its namespace and tag generations in these.
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.shared.counters.get(&self.shared, name)
    }

    /// Adds one to counter `name` (durably: the counters file is replaced and synced);
    /// returns the new value.
    pub fn increment_counter(&self, name: &str) -> Result<u64> {
        self.shared
            .counters
            .update(&self.shared, name, |v| v.saturating_add(1))
    }

    /// Raises counter `name` to `at_least` if it is lower; returns its value.
    pub fn raise_counter(&self, name: &str, at_least: u64) -> Result<u64> {
        self.shared
            .counters
            .update(&self.shared, name, |v| v.max(at_least))
    }

    /// Every counter that was ever changed.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.shared.counters.all(&self.shared)
    }

    /// A number that moves on whenever any counter changes, in any process: a value computed
    /// from counters can be kept until it moves. One atomic load.
    pub fn counter_changes(&self) -> Result<u64> {
        crate::counters::changes(&self.shared)
    }

    /// Key counts and space use.
    pub fn stats(&self) -> StoreStats {
        let index = &self.shared.index;
        let table = index.current_table_or_mapped();
        let start = data_start(FORMAT_VERSION) as u64;
        let rows = index.rows();
        let (mut records, mut live) = (0u64, 0u64);
        // Saturating: these are statistics, and a damaged index must not make them panic.
        for &(number, _) in &rows {
            let end = table.row(number, row::END).load(Ordering::Acquire);
            records = records.saturating_add(end.saturating_sub(start));
            live = live.saturating_add(table.row(number, row::LIVE).load(Ordering::Acquire));
        }
        StoreStats {
            keys: self.len(),
            segments: rows.len(),
            disk_bytes: eviction::disk_bytes(&self.shared),
            index_bytes: eviction::index_bytes(&self.shared),
            live_bytes: live,
            dead_bytes: records.saturating_sub(live),
            syncs: self.shared.commit.syncs(),
            compactions: table.word(header::COMPACTIONS).load(Ordering::Acquire),
            compaction_errors: self.shared.compaction_errors.load(Ordering::Relaxed),
            damaged_reads: self.shared.damaged_reads.load(Ordering::Relaxed),
            evictions: table.word(header::EVICTIONS).load(Ordering::Acquire),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.shared.options.max_key_size;
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.shared.options.max_value_size;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<Store>();
    }

    #[test]
    fn read_right_after_put_sees_the_buffered_write() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap();
        store.put(b"k", b"v1").unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v1".to_vec()));
        store.put(b"k", b"v2").unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v2".to_vec()));
        store.flush().unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v2".to_vec()));
    }
}
