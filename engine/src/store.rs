//! The public [`Store`]: ties the index, the segments, the writer and group commit together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::batch::{BatchOp, WriteBatch};
use crate::clock::{expiry_after, now_ms, now_ms_for};
use crate::compaction::{self, CompactionStats};
use crate::error::{Error, IoContext, Result};
use crate::eviction;
use crate::group_commit::GroupCommit;
use crate::hint;
use crate::keydir::{KeyDir, Location};
use crate::lock::DirLock;
use crate::options::{Durability, Options};
use crate::record::{self, FLAG_BATCH_CONTINUES, FLAG_TOMBSTONE};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{FORMAT_VERSION, MAX_SEGMENT_LEN, Segment, data_start};
use crate::worker::{Signal, Worker};
use crate::writer::{Appended, SegmentMap, Writer};

/// How old the background thread's count of expired bytes may be (it scans the index).
const EXPIRED_SCAN_EVERY: Duration = Duration::from_secs(30);

/// How often a read retries when compaction removed the segment it was about to read.
const MISSING_SEGMENT_RETRIES: usize = 8;

/// An embedded, persistent key-value store: an append-only log of segment files with an
/// in-memory index of every live key.
///
/// `Store` is `Send + Sync`: share it between threads with an `Arc`. Reads run in parallel;
/// writes are serialized. Dropping the store flushes and syncs it, like [`Store::close`]
/// without the error report.
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
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

/// The state shared by a store's handle and its background thread.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) keydir: RwLock<KeyDir>,
    pub(crate) segments: SegmentMap,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) commit: GroupCommit,
    report: RecoveryReport,
    /// One compaction (or hint-writing pass) at a time.
    compaction_lock: Mutex<()>,
    closing: AtomicBool,
    compactions: AtomicU64,
    compaction_errors: AtomicU64,
    evictions: AtomicU64,
    /// The last count of expired bytes per segment, and when it was made.
    expired_scan: Mutex<(Option<Instant>, hashbrown::HashMap<u64, u64>)>,
    /// Wakes the background thread.
    pub(crate) signal: Signal,
    _lock: DirLock,
}

/// Space and key counts of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live (unexpired) keys.
    pub keys: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Bytes of the records that hold current values.
    pub live_bytes: u64,
    /// Bytes of overwritten, deleted and tombstone records: what compaction can reclaim.
    pub dead_bytes: u64,
    /// fdatasync calls for writes since open (group commit shares one among many writers).
    pub syncs: u64,
    /// Compactions completed since open, explicit and automatic.
    pub compactions: u64,
    /// Background compactions, hint writes or evictions that failed since open (they are
    /// retried).
    pub compaction_errors: u64,
    /// Keys evicted to stay within `Options::max_disk_bytes` since open.
    pub evictions: u64,
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
    /// Takes an exclusive lock on the directory ([`Error::Locked`] if another open store holds
    /// it, in this process or another), then rebuilds the index from the segment files. A torn
    /// tail of the newest segment (a write cut by a crash) is truncated and reported in
    /// [`Store::recovery_report`]; invalid data anywhere else is [`Error::Corrupt`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        match std::fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => return Err(Error::NotADirectory(dir)),
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir_all(&dir).context("creating the store directory", &dir)?
            }
        }
        let lock = DirLock::acquire(&dir)?;
        let recovered = recovery::recover(&dir, now_ms())?;
        let segments = recovered
            .segments
            .into_iter()
            .map(|s| (s.id(), Arc::new(s)))
            .collect::<BTreeMap<_, _>>();
        let active = recovered.active.map(Arc::new);
        let mut segments = segments;
        if let Some(active) = &active {
            segments.insert(active.id(), Arc::clone(active));
        }
        let writer = Writer::new(dir.clone(), &options, active, recovered.next_segment_id);
        let inner = Arc::new(Inner {
            dir,
            options,
            keydir: RwLock::new(recovered.keydir),
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            commit: GroupCommit::default(),
            report: recovered.report,
            compaction_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            compactions: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expired_scan: Mutex::new((None, hashbrown::HashMap::new())),
            signal: Signal::default(),
            _lock: lock,
        });
        let worker = if inner.options.auto_compaction || inner.options.max_disk_bytes.is_some() {
            let worker = Worker::spawn(Arc::clone(&inner))
                .context("starting the compaction thread for", &inner.dir)?;
            Some(worker)
        } else {
            None
        };
        Ok(Store { inner, worker })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What opening the store found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
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
    /// copying the value out: `f` sees it where it lies (a mapped segment, a read buffer). The
    /// checks are those of [`Store::get`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = logcache_engine::Store::open(dir.path(), Default::default())?;
    /// store.put(b"k", b"a long value")?;
    /// assert_eq!(store.get_with(b"k", |value, _| value.len())?, Some(12));
    /// # Ok::<(), logcache_engine::Error>(())
    /// ```
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8], u64) -> R) -> Result<Option<R>> {
        // A compaction can remove a segment between the index lookup and the read; the index
        // then already points at the copy, so look again.
        let mut missing = 0;
        let mut f = Some(f);
        for _ in 0..MISSING_SEGMENT_RETRIES {
            let Some(loc) = self.inner.keydir.read().get(key) else {
                return Ok(None);
            };
            if loc.is_expired(now_ms_for(loc.expires_at)) {
                return Ok(None);
            }
            let corrupt = |reason| Error::Corrupt {
                segment: loc.segment,
                offset: u64::from(loc.offset),
                reason,
            };
            let value = self.inner.with_record(&loc, |bytes, version| {
                let rec = record::decode(bytes).map_err(|e| corrupt(e.reason()))?;
                let span = record::span(rec.encoded_len(), version);
                if rec.key != key || rec.is_tombstone() || span != loc.len as usize {
                    return Err(corrupt("index points at another record"));
                }
                let f = f.take().expect("a record is handed over once");
                Ok(f(rec.value, loc.expires_at))
            })?;
            match value {
                Some(value) => return value.map(Some),
                None => missing = loc.segment,
            }
        }
        Err(Error::Corrupt {
            segment: missing,
            offset: 0,
            reason: "index keeps pointing at a missing segment",
        })
    }

    /// Whether `key` holds an unexpired value. Answers from the index, without I/O.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner
            .keydir
            .read()
            .get(key)
            .is_some_and(|loc| !loc.is_expired(now_ms_for(loc.expires_at)))
    }

    /// Number of live (unexpired) keys.
    pub fn len(&self) -> usize {
        self.inner.keydir.read().live_len(now_ms())
    }

    /// Whether the store holds no live key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the live keys, in no particular order. Writes after the call do not
    /// affect it.
    pub fn keys(&self) -> Keys {
        Keys(self.inner.keydir.read().live_keys(now_ms()).into_iter())
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
        self.inner.check_key(key)?;
        self.inner.check_value(value)?;
        let len = record::padded_len(key.len(), value.len());
        let mut writer = self.inner.writer.lock();
        let at = writer.append(len, &self.inner.segments, |buf| {
            record::encode_to(buf, 0, expires_at, key, value)
        })?;
        self.inner.after_append(&at);
        let loc = Location {
            segment: at.segment,
            offset: at.offset as u32,
            len: len as u32,
            expires_at,
        };
        let now = now_ms_for(expires_at);
        self.inner.keydir.write().apply(key, loc, false, now);
        self.inner.finish_write(writer)
    }

    /// Deletes `key`. Returns whether it held an unexpired value.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.inner.check_key(key)?;
        let mut writer = self.inner.writer.lock();
        // Only the writer changes the index, so this answer holds until the lock is released.
        let Some(old) = self.inner.keydir.read().get(key) else {
            return Ok(false);
        };
        let len = record::padded_len(key.len(), 0);
        let at = writer.append(len, &self.inner.segments, |buf| {
            record::encode_to(buf, FLAG_TOMBSTONE, 0, key, &[])
        })?;
        self.inner.after_append(&at);
        self.inner
            .keydir
            .write()
            .remove(key, at.segment, len as u32);
        self.inner.finish_write(writer)?;
        Ok(!old.is_expired(now_ms_for(old.expires_at)))
    }

    /// Applies every operation of `batch` atomically: readers see all of them or none, and
    /// after a crash the store holds all of them or none.
    pub fn write_batch(&self, batch: &WriteBatch) -> Result<()> {
        let mut total: u64 = 0;
        for op in &batch.ops {
            self.inner.check_key(op.key())?;
            if let BatchOp::Put { value, .. } = op {
                self.inner.check_value(value)?;
            }
            total += op.encoded_len() as u64;
        }
        let max = MAX_SEGMENT_LEN - data_start(FORMAT_VERSION) as u64;
        if total > max {
            return Err(Error::BatchTooLarge { len: total, max });
        }
        let Some(last) = batch.ops.len().checked_sub(1) else {
            return Ok(());
        };
        let mut writer = self.inner.writer.lock();
        let at = writer.append(total as usize, &self.inner.segments, |buf| {
            let mut at = 0;
            for (i, op) in batch.ops.iter().enumerate() {
                let more = if i < last { FLAG_BATCH_CONTINUES } else { 0 };
                let out = &mut buf[at..];
                match op {
                    BatchOp::Put {
                        key,
                        value,
                        expires_at,
                    } => record::encode_to(out, more, *expires_at, key, value),
                    BatchOp::Delete { key } => {
                        record::encode_to(out, more | FLAG_TOMBSTONE, 0, key, &[])
                    }
                }
                at += op.encoded_len();
            }
        })?;
        self.inner.after_append(&at);
        let now = now_ms();
        let mut keydir = self.inner.keydir.write();
        let mut offset = at.offset;
        for op in &batch.ops {
            let (expires_at, tombstone) = match op {
                BatchOp::Put { expires_at, .. } => (*expires_at, false),
                BatchOp::Delete { .. } => (0, true),
            };
            let loc = Location {
                segment: at.segment,
                offset: offset as u32,
                len: op.encoded_len() as u32,
                expires_at,
            };
            keydir.apply(op.key(), loc, tombstone, now);
            offset += u64::from(loc.len);
        }
        drop(keydir);
        self.inner.finish_write(writer)
    }

    /// Does nothing: every write is in the OS's page cache (it survives a crash of this
    /// process) when it returns. Kept for the programs that call it.
    pub fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Makes every write so far durable (flush, then fdatasync; shared with concurrent
    /// `Durability::Sync` writers).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Stops background work, flushes and syncs, then closes the store and releases its
    /// directory lock, reporting any error that dropping would swallow.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.inner.sync()
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
        let _guard = self.inner.compaction_lock.lock();
        self.inner.writer.lock().seal_active(&self.inner.segments)?;
        let inputs = Inner::select_all_dirty(&self.inner.sealed_usage(true));
        let stats = self.inner.run_compaction(&inputs, progress)?;
        self.inner.evict_to_limit()?;
        Ok(stats)
    }

    /// Checks this open store's files as [`verify`](crate::verify) does (every header,
    /// record checksum and hint file), without closing it. Compaction and writes wait while
    /// it runs.
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        let _guard = self.inner.compaction_lock.lock();
        let _writer = self.inner.writer.lock();
        crate::verify::verify_files(&self.inner.dir)
    }

    /// The segment the writer appends to and the end of its records (for crash tests, which
    /// cut the log after a given write).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn log_position(&self) -> (u64, u64) {
        self.inner.writer.lock().position()
    }

    fn stop_background(&mut self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }

    /// Key counts and space use.
    pub fn stats(&self) -> StoreStats {
        let (keys, live_bytes, dead_bytes, evictions) = {
            let keydir = self.inner.keydir.read();
            let (records, dead) = keydir
                .usage()
                .values()
                .fold((0, 0), |(r, d), u| (r + u.record_bytes, d + u.dead_bytes));
            // Read with the index locked, so keys and evictions agree.
            let evictions = self.inner.evictions.load(AtomicOrdering::Relaxed);
            (keydir.live_len(now_ms()), records - dead, dead, evictions)
        };
        let segments = self.inner.segments.read();
        StoreStats {
            keys,
            segments: segments.len(),
            disk_bytes: segments.values().map(|s| s.disk_len()).sum(),
            live_bytes,
            dead_bytes,
            syncs: self.inner.commit.syncs(),
            compactions: self.inner.compactions.load(AtomicOrdering::Relaxed),
            compaction_errors: self.inner.compaction_errors.load(AtomicOrdering::Relaxed),
            evictions,
        }
    }
}

impl Inner {
    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.options.max_key_size;
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.options.max_value_size;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// Releases the writer after an append and, with `Durability::Sync`, waits until the
    /// append is on disk.
    fn finish_write(&self, writer: parking_lot::MutexGuard<'_, Writer>) -> Result<()> {
        if self.options.durability != Durability::Sync {
            return Ok(());
        }
        let lsn = writer.written();
        drop(writer);
        self.commit.sync_to(lsn, &self.writer)
    }

    fn sync(&self) -> Result<()> {
        let lsn = self.writer.lock().written();
        self.commit.sync_to(lsn, &self.writer)
    }

    /// Runs `f` on the bytes of the record at `loc` (where they lie in the segment's map) and
    /// the segment's format version. `None` if the segment is gone (compacted away since the
    /// index was read).
    fn with_record<R>(&self, loc: &Location, f: impl FnOnce(&[u8], u16) -> R) -> Result<Option<R>> {
        let Some(segment) = self.segments.read().get(&loc.segment).cloned() else {
            return Ok(None);
        };
        let bytes = segment.read(u64::from(loc.offset), loc.len as usize)?;
        Ok(Some(f(bytes, segment.version())))
    }

    /// Whether the store is closing (background work should stop).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Sealed segments with their total and dead bytes (expired entries counted as dead),
    /// ascending by id.
    ///
    /// Counting expired bytes scans the whole index, so the background thread (`fresh ==
    /// false`) reuses a count up to [`EXPIRED_SCAN_EVERY`] old; an explicit compaction counts
    /// afresh.
    fn sealed_usage(&self, fresh: bool) -> Vec<(Arc<Segment>, u64, u64)> {
        let segments: Vec<Arc<Segment>> = self
            .segments
            .read()
            .values()
            .filter(|s| s.is_sealed())
            .cloned()
            .collect();
        let keydir = self.keydir.read();
        let expired = {
            let mut cached = self.expired_scan.lock();
            let stale = cached.0.is_none_or(|at| at.elapsed() >= EXPIRED_SCAN_EVERY);
            if fresh || stale {
                *cached = (Some(Instant::now()), keydir.expired_bytes(now_ms()));
            }
            cached.1.clone()
        };
        segments
            .into_iter()
            .map(|s| {
                let usage = keydir.usage().get(&s.id()).copied().unwrap_or_default();
                let dead = usage.dead_bytes + expired.get(&s.id()).copied().unwrap_or(0);
                (s, usage.record_bytes, dead.min(usage.record_bytes))
            })
            .collect()
    }

    /// Every sealed segment up to the newest one with dead bytes: a prefix of the log, so
    /// every tombstone in it can be dropped.
    fn select_all_dirty(usage: &[(Arc<Segment>, u64, u64)]) -> Vec<Arc<Segment>> {
        let Some(last_dirty) = usage.iter().rposition(|(_, _, dead)| *dead > 0) else {
            return Vec::new();
        };
        usage[..=last_dirty]
            .iter()
            .map(|(s, _, _)| Arc::clone(s))
            .collect()
    }

    /// What automatic compaction should compact now, if anything.
    fn select_auto(&self) -> Vec<Arc<Segment>> {
        let usage = self.sealed_usage(false);
        let total_dead: u64 = usage.iter().map(|(_, _, dead)| dead).sum();
        if total_dead >= self.options.compaction_dead_bytes {
            return Self::select_all_dirty(&usage);
        }
        usage
            .iter()
            .filter(|(_, records, dead)| {
                *dead > 0 && *dead as f64 >= self.options.compaction_dead_ratio * *records as f64
            })
            .map(|(s, _, _)| Arc::clone(s))
            .collect()
    }

    /// Compacts `inputs`, counting the result. The caller holds the compaction lock.
    fn run_compaction(
        &self,
        inputs: &[Arc<Segment>],
        progress: &dyn Fn(u64, u64),
    ) -> Result<CompactionStats> {
        let stats = compaction::compact(self, inputs, progress)?;
        if stats.segments_in > 0 {
            self.compactions.fetch_add(1, AtomicOrdering::Relaxed);
        }
        Ok(stats)
    }

    /// One round of background work: hint files for sealed segments that lack one, then an
    /// automatic compaction if one is due. Failures are counted and retried next round.
    pub(crate) fn background_pass(&self) {
        let _guard = self.compaction_lock.lock();
        let unhinted: Vec<Arc<Segment>> = self
            .segments
            .read()
            .values()
            .filter(|s| s.is_sealed() && !s.has_hint())
            .cloned()
            .collect();
        for seg in unhinted {
            if self.is_closing() {
                return;
            }
            match hint::write_for_segment(&self.dir, &seg) {
                Ok(()) => seg.set_has_hint(true),
                Err(_) => {
                    self.compaction_errors.fetch_add(1, AtomicOrdering::Relaxed);
                }
            }
        }
        if self.options.auto_compaction {
            let inputs = self.select_auto();
            if !inputs.is_empty()
                && !self.is_closing()
                && self.run_compaction(&inputs, &|_, _| {}).is_err()
            {
                self.compaction_errors.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
        if self.evict_to_limit().is_err() {
            self.compaction_errors.fetch_add(1, AtomicOrdering::Relaxed);
        }
    }

    /// Evicts the oldest segments while the store is over `max_disk_bytes`. The caller holds
    /// the compaction lock.
    fn evict_to_limit(&self) -> Result<()> {
        if let Some(limit) = self.options.max_disk_bytes {
            eviction::evict_to_limit(self, limit)?;
        }
        Ok(())
    }

    /// Adds `n` evicted keys to the statistics (called with the index locked for writing).
    pub(crate) fn count_evictions(&self, n: u64) {
        self.evictions.fetch_add(n, AtomicOrdering::Relaxed);
    }

    /// Called after each append: a write that started a new segment may have taken the store
    /// over its size limit, so wake the background thread to evict.
    fn after_append(&self, at: &Appended) {
        if at.offset == data_start(FORMAT_VERSION) as u64 && self.options.max_disk_bytes.is_some() {
            self.signal.kick();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: `Store::close` reports these errors.
        let _ = self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
