//! Fault injection for tests (feature `fault-injection`): make the next write, fsync or reads
//! of segment files fail, as a failing disk would. The switches are process-wide, so tests
//! that use them run one at a time.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static SHORT_WRITE: AtomicBool = AtomicBool::new(false);
static FAIL_SYNC: AtomicBool = AtomicBool::new(false);
static FAIL_READS: AtomicBool = AtomicBool::new(false);

/// The next append to a segment writes half its bytes, then fails with EIO.
pub fn short_next_write() {
    SHORT_WRITE.store(true, Ordering::SeqCst);
}

/// The next fdatasync of a segment fails with EIO.
pub fn fail_next_sync() {
    FAIL_SYNC.store(true, Ordering::SeqCst);
}

/// While on, every read of a record fails with EIO.
pub fn fail_reads(on: bool) {
    FAIL_READS.store(on, Ordering::SeqCst);
}

/// Turns every fault off.
pub fn clear() {
    SHORT_WRITE.store(false, Ordering::SeqCst);
    FAIL_SYNC.store(false, Ordering::SeqCst);
    FAIL_READS.store(false, Ordering::SeqCst);
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// For an append of `len` bytes: how many to write before failing, if it should fail.
pub(crate) fn on_write(len: usize) -> Option<(usize, io::Error)> {
    SHORT_WRITE
        .swap(false, Ordering::SeqCst)
        .then(|| (len / 2, eio()))
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
