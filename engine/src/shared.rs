//! The state a store's handle shares with its background thread, and the operations on it
//! that reads, writes, compaction and eviction all need: looking up a key, writing as one op,
//! syncing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::clock::now_ms_for;
use crate::error::{Error, IoContext, Result};
use crate::group_commit::GroupCommit;
use crate::index::Index;
use crate::index::file::{TableFile, header};
use crate::index::op::IDLE;
use crate::index::plan::{Entry, Planner};
use crate::index::slot::{self, Location};
use crate::lock::{StoreLocks, WriterHeld};
use crate::options::{Durability, Options};
use crate::recovery::RecoveryReport;
use crate::vfs::Dir;
use crate::writer::{Appended, Change, Writer, grow};

/// How the store talks to its background thread.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    stop: bool,
    kicked: bool,
}

impl Signal {
    /// Asks for a pass now rather than at the next interval.
    pub fn kick(&self) {
        self.state.lock().kicked = true;
        self.cv.notify_all();
    }

    /// Asks the thread to stop.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    /// Waits until kicked, stopped or `interval` passed; false once stopped.
    pub fn wait(&self, interval: std::time::Duration) -> bool {
        let mut state = self.state.lock();
        if !state.stop && !state.kicked {
            self.cv.wait_for(&mut state, interval);
        }
        state.kicked = false;
        !state.stop
    }
}

/// What a store's handle and its background thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: Dir,
    pub options: Options,
    pub index: Index,
    pub writer: Mutex<Writer>,
    pub commit: GroupCommit,
    pub report: RecoveryReport,
    /// One compaction, eviction or hint-writing pass at a time.
    pub maintenance: Mutex<()>,
    pub closing: AtomicBool,
    pub compaction_errors: AtomicU64,
    /// Reads that found their record damaged (see `StoreStats::damaged_reads`).
    pub damaged_reads: AtomicU64,
    /// The last count of expired bytes per segment number, and when it was made.
    pub expired_scan: Mutex<(Option<Instant>, hashbrown::HashMap<u32, u64>)>,
    /// Wakes the background thread.
    pub signal: Signal,
    /// `None` in a read-only store, which takes no lock.
    pub locks: Option<StoreLocks>,
    /// Ops a dead writer left half done that this store finished.
    pub ops_repaired: AtomicU64,
    /// Whether `close_cleanly` ran.
    pub closed: AtomicBool,
    /// This process's copy of the named counters.
    pub counters: crate::counters::CounterCache,
}

/// The writer, held by this thread and, across processes, by this store: see
/// [`Shared::lock_writer`].
pub(crate) struct WriterGuard<'a> {
    _held: Option<WriterHeld<'a>>,
    writer: MutexGuard<'a, Writer>,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.writer
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.writer
    }
}

impl Shared {
    /// Takes the writer: this store's mutex, then the cross-process writer lock (unless the
    /// store is exclusive); maps the current table if another process grew it; and finishes
    /// the op of a writer that died holding the lock.
    pub fn lock_writer(&self) -> Result<WriterGuard<'_>> {
        let Some(locks) = &self.locks else {
            return Err(Error::ReadOnly(self.dir.to_path_buf()));
        };
        let writer = self.writer.lock();
        let held = if locks.is_exclusive() {
            None
        } else {
            Some(locks.writer.lock()?)
        };
        self.index.refresh()?;
        if self.index.repair(&self.index.table())? {
            self.ops_repaired.fetch_add(1, Ordering::Relaxed);
        }
        Ok(WriterGuard {
            _held: held,
            writer,
        })
    }

    /// Whether the store is closing (background work should stop).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Looks `key` up, consistently with every write (a write of several records, a batch, is
    /// seen whole or not at all), and hands its value, where it lies in the segment's map,
    /// and its expiry time to `f`. `None` if absent or expired.
    pub fn locate_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8], u64) -> R) -> Result<Option<R>> {
        /// What the record a slot led to says.
        enum Look<R> {
            Value(R),
            Expired,
            /// A tombstone: its segment's id and offset.
            Tombstone(u64, u64),
            /// A batch was applied meanwhile: look again.
            Again,
        }
        let mut f = Some(f);
        let mut waits = 0u32;
        loop {
            let table = self.index.current_table()?;
            let sequence = table.word(header::BATCH_SEQUENCE).load(Ordering::Acquire);
            if sequence % 2 == 1 {
                // A batch is being applied: it takes microseconds. Unless its writer died
                // meanwhile: then taking the writer lock finishes it.
                waits += 1;
                if waits.is_multiple_of(1024) {
                    drop(self.lock_writer()?);
                }
                std::hint::spin_loop();
                std::thread::yield_now();
                continue;
            }
            let h = slot::hash(table.seed(), key);
            let found = self.index.find(&table, key, h, |found| {
                let rec = &found.record;
                // The slot and record read are consistent if no batch began meanwhile: then
                // (and only then) `f` sees the value, while the segment is held mapped.
                if table.word(header::BATCH_SEQUENCE).load(Ordering::Acquire) != sequence {
                    Look::Again
                } else if rec.is_tombstone() {
                    Look::Tombstone(found.segment.id(), found.at.offset)
                } else if rec.expires_at != 0 && rec.expires_at <= now_ms_for(rec.expires_at) {
                    Look::Expired
                } else {
                    let f = f.take().expect("a value is handed over once");
                    Look::Value(f(rec.value, rec.expires_at))
                }
            });
            let consistent = match &found {
                Ok(Some(Look::Again)) => false,
                // Checked in the closure, after the slot and the record were read.
                Ok(Some(_)) => true,
                // A miss or an error: consistent if no batch began while the slots were read.
                _ => table.word(header::BATCH_SEQUENCE).load(Ordering::Acquire) == sequence,
            };
            if !consistent {
                continue;
            }
            let found = match found {
                // The key's record is damaged: the entry is lost, not the read.
                Err(Error::Corrupt { .. }) if !self.options.strict => {
                    self.damaged_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                other => other?,
            };
            return match found {
                None | Some(Look::Expired | Look::Again) => Ok(None),
                Some(Look::Value(value)) => Ok(Some(value)),
                // No slot points at a tombstone (a delete empties the key's slot); only a
                // damaged index or a lying hint makes one. The key's newest record says it
                // is deleted: it reads as absent, and the damage is counted.
                Some(Look::Tombstone(segment, offset)) if self.options.strict => {
                    Err(Error::Corrupt {
                        segment,
                        offset,
                        reason: "the index points at a tombstone",
                    })
                }
                Some(Look::Tombstone(..)) => {
                    self.damaged_reads.fetch_add(1, Ordering::Relaxed);
                    Ok(None)
                }
            };
        }
    }

    /// Writes `changes` as one op (see [`Writer::write`]), then, with `Durability::Sync`,
    /// waits until they are on disk.
    pub fn write(&self, changes: &[Change<'_>]) -> Result<Option<Appended>> {
        let mut writer = self.lock_writer()?;
        let appended = writer.write(&self.index, changes)?;
        if let Some(at) = &appended
            && at.offset == crate::segment::data_start(crate::segment::FORMAT_VERSION) as u64
            && self.options.max_disk_bytes.is_some()
        {
            // A new segment may have taken the store over its size limit.
            self.signal.kick();
        }
        if self.options.durability != Durability::Sync || appended.is_none() {
            return Ok(appended);
        }
        let lsn = writer.written();
        drop(writer);
        self.commit.sync_to(lsn, &self.writer, &self.index)?;
        Ok(appended)
    }

    /// Makes every write so far durable, of this store and of every other store on the
    /// directory (nothing to do in a read-only store).
    pub fn sync(&self) -> Result<()> {
        if self.locks.is_none() {
            return Ok(());
        }
        let lsn = self.writer.lock().written();
        self.commit.sync_all(lsn, &self.writer, &self.index)
    }

    /// Plans changes with `plan` against the current table, growing it when they do not fit,
    /// and carries them out as one op without appending (compaction, eviction). The caller
    /// holds neither the writer lock nor the table.
    pub fn change_index(
        &self,
        mut plan: impl FnMut(&mut Planner<'_>) -> Result<bool>,
    ) -> Result<()> {
        let _writer = self.lock_writer()?;
        loop {
            let table: Arc<TableFile> = Arc::clone(&self.index.table());
            let mut planner = Planner::new(&self.index, Arc::clone(&table));
            let placed = plan(&mut planner)?;
            let entries: Vec<Entry> = planner.take_entries();
            let shape = table.shape();
            if !placed || entries.len() > shape.op_entries as usize {
                drop(planner);
                drop(table);
                grow(&self.index, shape, entries.len(), !placed)?;
                continue;
            }
            debug_assert_eq!(table.word(header::OP_STATE).load(Ordering::Acquire), IDLE);
            if !entries.is_empty() {
                self.index.execute(&table, None, &entries, false, |_| {});
            }
            return Ok(());
        }
    }

    /// Empties every slot that still points into segments `numbers`, about to be deleted.
    /// Every key whose record they hold was moved or removed already, so only a damaged slot
    /// can be left; emptying it keeps it from naming whatever segment reuses the row.
    pub fn clear_slots_into(&self, numbers: &[u32]) -> Result<()> {
        let table = self.index.table();
        let mut left = Vec::new();
        Index::for_each_slot_at(&table, |pos, value| {
            if numbers.contains(&slot::location_of(value).number) {
                left.push((pos, value));
            }
        });
        drop(table);
        #[cfg(feature = "fuzzing")]
        let damage_expected = crate::fuzz::DAMAGED_INDEX.with(|d| d.get());
        #[cfg(not(feature = "fuzzing"))]
        let damage_expected = false;
        debug_assert!(
            left.is_empty() || damage_expected,
            "slots still point into segments being removed: {left:?}"
        );
        if left.is_empty() {
            return Ok(());
        }
        self.change_index(|plan| {
            for &(pos, value) in &left {
                plan.clear_if(pos, value)?;
            }
            Ok(true)
        })
    }

    /// Counts a failed background pass (retried next round).
    pub fn count_maintenance_error(&self) {
        self.compaction_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Syncs every write; then, if this is the last store open on the directory, syncs the
    /// index and marks it clean: the next open uses it without a scan, even after a restart.
    /// Does not mark it if anything failed. Runs once.
    pub fn close_cleanly(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let Some(locks) = &self.locks else {
            return Ok(());
        };
        self.sync()?;
        locks.if_last(|| {
            let writer = self.lock_writer()?;
            let table = self.index.table();
            if table.word(header::OP_STATE).load(Ordering::Acquire) != IDLE {
                return Ok(());
            }
            #[cfg(debug_assertions)]
            self.check_live_bytes(&table);
            // Another store may have appended since this one's sync.
            if let Some((number, active)) = writer.active(&self.index)? {
                self.index
                    .sync_segment(number, &active)
                    .context("syncing", active.path())?;
            }
            table.sync()?;
            self.index.pointer().mark_clean()
        })?;
        Ok(())
    }

    /// Checks every row's live bytes against a recount from the slots (debug builds, at the
    /// last close, holding the writer lock): the counts the op log keeps must be exact. Not
    /// where a record is damaged, nor where a test damaged the index on purpose.
    #[cfg(debug_assertions)]
    fn check_live_bytes(&self, table: &TableFile) {
        #[cfg(feature = "fuzzing")]
        if crate::fuzz::DAMAGED_INDEX.with(|d| d.get()) {
            return;
        }
        let Some(recount) = self.index.recount_live(table) else {
            return;
        };
        for (number, _) in self.index.rows() {
            let recorded = table
                .row(number, crate::index::file::row::LIVE)
                .load(Ordering::Acquire);
            let counted = recount.get(&number).copied().unwrap_or(0);
            debug_assert_eq!(
                recorded, counted,
                "segment row {number}: {recorded} live bytes recorded, {counted} recounted"
            );
        }
    }

    /// Whether the index has a slot for `key` (expired or not); false where it cannot tell.
    pub fn has_slot(&self, key: &[u8]) -> bool {
        let table = self.index.table();
        let h = slot::hash(table.seed(), key);
        matches!(self.index.find(&table, key, h, |_| ()), Ok(Some(())))
    }

    /// Whether the record at `at` is the newest of `key`.
    pub fn is_current(&self, key: &[u8], at: Location) -> bool {
        self.index.points_at(&self.index.table(), key, at)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: `Store::close` reports these errors.
        let _ = self.close_cleanly();
    }
}
