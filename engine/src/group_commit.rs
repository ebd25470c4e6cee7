//! Group commit: concurrent `Durability::Sync` writers share one fdatasync.
//!
//! Every writer hands its record to the OS under the writer lock and notes the log position
//! after it. It then asks for that position to be durable. The first to ask becomes the
//! leader: it flushes, takes the current end of the log, and runs one fdatasync covering every
//! write up to there, while later writers wait. When it is done, every waiter whose position
//! is covered returns without an fsync of its own; the rest elect the next leader.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::writer::Writer;

#[derive(Debug, Default)]
struct State {
    /// Log position known durable.
    synced: u64,
    /// Whether a leader is syncing now.
    syncing: bool,
}

/// Shared by all writers of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// fdatasync calls made through group commit.
    syncs: AtomicU64,
}

impl GroupCommit {
    /// fdatasync calls made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once every write up to log position `lsn` is on disk. Takes the writer lock
    /// only briefly, never while holding its own lock.
    pub fn sync_to(&self, lsn: u64, writer: &Mutex<Writer>, index: &Index) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            if state.synced >= lsn {
                return Ok(());
            }
            if !state.syncing {
                break;
            }
            self.done.wait(&mut state);
        }
        state.syncing = true;
        drop(state);

        let result = self.sync_log(writer, index);

        let mut state = self.state.lock();
        state.syncing = false;
        if let Ok(target) = result {
            state.synced = state.synced.max(target);
        }
        self.done.notify_all();
        result.map(|_| ())
    }

    /// Returns once every write of every store on the directory is on disk: this store's,
    /// through [`GroupCommit::sync_to`], and those other stores appended to the active
    /// segment past the length its last fdatasync covered, which this store's log position
    /// does not see (the simulation found a close that left another handle's writes
    /// unsynced).
    pub fn sync_all(&self, lsn: u64, writer: &Mutex<Writer>, index: &Index) -> Result<()> {
        self.sync_to(lsn, writer, index)?;
        // The active segment is the one the current table names: another store may have
        // grown the index since this one last looked, and appended to a segment this one's
        // old table does not name (the simulation found a sync that missed such writes).
        index.refresh()?;
        if index.active_is_synced() {
            return Ok(());
        }
        self.sync_log(writer, index).map(drop)
    }

    /// Flushes and fsyncs the active segment; returns the log position now durable.
    fn sync_log(&self, writer: &Mutex<Writer>, index: &Index) -> Result<u64> {
        // The active segment and its synced length are the current table's: another store may
        // have grown the index since this one last wrote, and a length recorded in the old
        // table is lost to everyone (this store's own writes are in the active segment or in
        // one sealed, so synced, since).
        index.refresh()?;
        let (segment, target) = writer.lock().sync_target(index)?;
        let Some((number, segment)) = segment else {
            return Ok(target);
        };
        // Another store's fdatasync may have covered all of it since (each records how far,
        // once its fdatasync returned): then every write of this store is durable, as it lies
        // in this segment or in one sealed, so synced, before.
        if index.is_synced(number, &segment) {
            return Ok(target);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = index.sync_segment(number, &segment) {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing written
            // since the last good sync can be trusted, so refuse further writes.
            writer
                .lock()
                .disable(format!("fsync of segment {} failed: {e}", segment.id()));
            return Err(Error::io("syncing a segment", segment.path(), e));
        }
        Ok(target)
    }
}
