//! Fault injection for tests (feature `fault-injection`): make the next segment creation, fsync
//! or the reads of compaction and eviction fail, as a failing disk would. The switches are process-wide, so tests
//! that use them run one at a time.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static FAIL_ALLOCATE: AtomicBool = AtomicBool::new(false);
static FAIL_SYNC: AtomicBool = AtomicBool::new(false);
static FAIL_READS: AtomicBool = AtomicBool::new(false);

/// The next segment file created finds the disk full (ENOSPC) when reserving its space.
pub fn fail_next_allocation() {
    FAIL_ALLOCATE.store(true, Ordering::SeqCst);
}

/// The next fdatasync of a segment fails with EIO.
pub fn fail_next_sync() {
    FAIL_SYNC.store(true, Ordering::SeqCst);
}

/// While on, every read of a segment by compaction, eviction or hint writing fails with EIO (gets read the map and make no system call).
pub fn fail_reads(on: bool) {
    FAIL_READS.store(on, Ordering::SeqCst);
}

/// Turns every fault off.
pub fn clear() {
    FAIL_ALLOCATE.store(false, Ordering::SeqCst);
    FAIL_SYNC.store(false, Ordering::SeqCst);
    FAIL_READS.store(false, Ordering::SeqCst);
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

pub(crate) fn on_allocate() -> io::Result<()> {
    if FAIL_ALLOCATE.swap(false, Ordering::SeqCst) {
        Err(io::Error::from(io::ErrorKind::StorageFull))
    } else {
        Ok(())
    }
}

pub(crate) fn on_sync() -> io::Result<()> {
    if FAIL_SYNC.swap(false, Ordering::SeqCst) {
        Err(eio())
    } else {
        Ok(())
    }
}

pub(crate) fn on_read() -> io::Result<()> {
    if FAIL_READS.load(Ordering::SeqCst) {
        Err(eio())
    } else {
        Ok(())
    }
}
