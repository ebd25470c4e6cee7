//! The advisory file locks (`flock`) that let several processes share a store directory.
//!
//! - `LOCK`: every open store holds it shared; the first to open (nobody else has it) holds it
//!   exclusively while it recovers, and an exclusive store holds it exclusively throughout. A
//!   store that closes and finds it can take it exclusively is the last one, and marks the
//!   index clean.
//! - `LOCK.open`: held exclusively for the moment of opening or closing, so that deciding
//!   "first" or "last" and acting on it is one step.
//! - `LOCK.writer`: held for each write (one op), serializing the writers of all processes. On
//!   Linux it is not an `flock` but a robust mutex in the file's mapping (`process_mutex`).
//! - `LOCK.maintenance`: held during compaction, eviction and hint writing.
//!
//! A lock belongs to the open file description, so each `Store` has its own and the OS releases
//! them when the process dies. Within a process the store's mutexes serialize threads first.

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::vfs::{Dir, LockKind, Open, VfsFile};

/// Name of the lock file every open store holds.
pub(crate) const LOCK_FILE: &str = "LOCK";
const OPEN_LOCK: &str = "LOCK.open";
const WRITER_LOCK: &str = "LOCK.writer";
const MAINTENANCE_LOCK: &str = "LOCK.maintenance";

/// Attempts to take a lock before waiting for it in the kernel.
const SPINS: usize = 64;

/// One lock file of a store directory.
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
    file: Box<dyn VfsFile>,
}

/// Held until dropped.
#[derive(Debug)]
#[must_use]
pub(crate) struct Held<'a>(&'a LockFile);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.file.unlock();
    }
}

impl LockFile {
    /// Opens (creating it if needed) lock file `name` of `dir`.
    fn open(dir: &Dir, name: &str) -> Result<LockFile> {
        let path = dir.join(name);
        let file = dir
            .vfs()
            .open(&path, Open::Create)
            .context("opening the lock file", &path)?;
        Ok(LockFile { path, file })
    }

    /// Takes the lock as `kind` if nobody holds it otherwise; whether it did.
    fn try_take(&self, kind: LockKind) -> Result<bool> {
        self.file.lock(kind, false).context("locking", &self.path)
    }

    /// Waits for the lock, exclusive. Tries a few times, yielding in between, before it
    /// sleeps in the kernel: a writer holds it for a microsecond or two, much less than it
    /// takes to wake a sleeping process.
    pub fn lock(&self) -> Result<Held<'_>> {
        for _ in 0..SPINS {
            if self.try_take(LockKind::Exclusive)? {
                return Ok(Held(self));
            }
            std::thread::yield_now();
        }
        self.file
            .lock(LockKind::Exclusive, true)
            .context("locking", &self.path)?;
        Ok(Held(self))
    }

    /// Takes the lock, exclusive, if nobody holds it; `None` if somebody does.
    pub fn try_lock(&self) -> Result<Option<Held<'_>>> {
        Ok(self.try_take(LockKind::Exclusive)?.then_some(Held(self)))
    }
}

/// The lock that serializes writers: a robust mutex in a shared map where the OS has one,
/// else an `flock`.
#[cfg(target_os = "linux")]
pub(crate) use crate::process_mutex::{MutexHeld as WriterHeld, ProcessMutex as WriterLock};
#[cfg(not(target_os = "linux"))]
pub(crate) use {Held as WriterHeld, LockFile as WriterLock};

/// Opens the writer lock of `dir`; the `first` store to open the directory initializes it.
fn open_writer(dir: &Dir, first: bool) -> Result<WriterLock> {
    #[cfg(target_os = "linux")]
    return WriterLock::open(dir, WRITER_LOCK, first);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = first; // an flock needs no initializing
        LockFile::open(dir, WRITER_LOCK)
    }
}

/// How a store holds `LOCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nobody else had the store open: this store recovered it.
    First,
    /// Other stores have it open.
    Joined,
}

/// The locks of one open store.
#[derive(Debug)]
pub(crate) struct StoreLocks {
    /// Held shared (exclusive in exclusive mode) while the store is open.
    open: LockFile,
    opening: LockFile,
    pub writer: WriterLock,
    pub maintenance: LockFile,
    /// Whether this store holds `LOCK` exclusively, keeping every other store out.
    exclusive: bool,
}

impl StoreLocks {
    /// Opens the lock files of `dir` and runs `recover(role)` with `LOCK.open` held: as
    /// [`Role::First`] holding `LOCK` exclusively if nobody else has the store open, else as
    /// [`Role::Joined`] holding it shared. Afterwards `LOCK` is held shared, or exclusively if
    /// `exclusive` (which fails with [`Error::Locked`] when the store is open elsewhere).
    pub fn acquire<T>(
        dir: &Dir,
        exclusive: bool,
        recover: impl FnOnce(Role) -> Result<T>,
    ) -> Result<(StoreLocks, T)> {
        let opening = LockFile::open(dir, OPEN_LOCK)?;
        let open = LockFile::open(dir, LOCK_FILE)?;
        let _opening = opening.lock()?;
        let role = if open.try_take(LockKind::Exclusive)? {
            Role::First
        } else if exclusive {
            return Err(Error::Locked(dir.to_path_buf()));
        } else if open.try_take(LockKind::Shared)? {
            Role::Joined
        } else {
            // Held exclusively outside of an open or close: by an exclusive store.
            return Err(Error::Locked(dir.to_path_buf()));
        };
        let value = recover(role)?;
        if !exclusive && role == Role::First {
            // Converting takes the lock off and on again; `LOCK.open`, held, keeps every
            // other store from looking in between.
            open.file
                .lock(LockKind::Shared, true)
                .context("locking", &open.path)?;
        }
        // Still under `LOCK.open`: the first store initializes the writer lock before any
        // other store can join and use it.
        let writer = open_writer(dir, role == Role::First)?;
        let maintenance = LockFile::open(dir, MAINTENANCE_LOCK)?;
        drop(_opening);
        let locks = StoreLocks {
            open,
            opening,
            writer,
            maintenance,
            exclusive,
        };
        Ok((locks, value))
    }

    /// Whether this store keeps every other one out (no lock per write needed).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Runs `last()` if this store is the last one open (it then holds `LOCK` exclusively),
    /// with `LOCK.open` held so that no store opens meanwhile. Call once, when closing.
    pub fn if_last<T>(&self, last: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let _opening = self.opening.lock()?;
        if !self.exclusive && !self.open.try_take(LockKind::Exclusive)? {
            return Ok(None);
        }
        last().map(Some)
    }
}

/// Holds `LOCK` exclusively until dropped: for offline tools that need no store open.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: LockFile,
}

impl DirLock {
    /// Takes the lock, or fails at once with [`Error::Locked`] if a store has `dir` open.
    pub fn acquire(dir: &Dir) -> Result<DirLock> {
        let lock = LockFile::open(dir, LOCK_FILE)?;
        if lock.try_take(LockKind::Exclusive)? {
            Ok(DirLock { _lock: lock })
        } else {
            Err(Error::Locked(dir.to_path_buf()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_store_recovers_the_next_join_and_the_last_one_knows_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        let (first, role) = StoreLocks::acquire(dir, false, Ok).unwrap();
        assert_eq!(role, Role::First);
        assert!(matches!(DirLock::acquire(dir), Err(Error::Locked(_))));
        let (second, role) = StoreLocks::acquire(dir, false, Ok).unwrap();
        assert_eq!(role, Role::Joined);
        assert!(matches!(
            StoreLocks::acquire(dir, true, Ok),
            Err(Error::Locked(_))
        ));
        assert_eq!(first.if_last(|| Ok(())).unwrap(), None, "second is open");
        drop(first);
        assert_eq!(second.if_last(|| Ok(7)).unwrap(), Some(7));
        drop(second);
        let (only, role) = StoreLocks::acquire(dir, true, Ok).unwrap();
        assert_eq!(role, Role::First);
        assert!(matches!(
            StoreLocks::acquire(dir, false, Ok),
            Err(Error::Locked(_))
        ));
        drop(only);
        DirLock::acquire(dir).unwrap();
    }

    #[test]
    fn stores_that_open_a_new_directory_at_once_all_open() {
        // A CI run saw it fail: the first store initialized the writer lock after letting the
        // others in, and one that joined in between found it uninitialized.
        for _ in 0..50 {
            let tmp = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        let dir = &Dir::real(tmp.path());
                        start.wait();
                        let (locks, _) = StoreLocks::acquire(dir, false, Ok).unwrap();
                        drop(locks.writer.lock().unwrap());
                    });
                }
            });
        }
    }

    #[test]
    fn the_writer_lock_is_exclusive_between_stores() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        let (a, _) = StoreLocks::acquire(dir, false, Ok).unwrap();
        let (b, _) = StoreLocks::acquire(dir, false, Ok).unwrap();
        let held = a.writer.lock().unwrap();
        assert!(b.writer.try_lock().unwrap().is_none());
        drop(held);
        assert!(b.writer.try_lock().unwrap().is_some());
    }
}
