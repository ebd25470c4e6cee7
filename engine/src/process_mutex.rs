//! The writer lock of a store shared by several processes: a robust, process-shared pthread
//! mutex in a mapped file (`LOCK.writer`), as LMDB keeps its writer mutex.
//!
//! Taking a free mutex is one atomic instruction in user space, where an `flock` is two
//! system calls per write. Like an `flock`, it is released when its holder dies: the kernel
//! walks a dying thread's list of robust mutexes and marks each one it held, and the next
//! taker learns that the holder died (`EOWNERDEAD`); the store's writer then repairs whatever
//! the dead writer left half done, as it checks on every take.
//!
//! The mutex's bytes say nothing after a restart (a holder from the last boot would look
//! alive forever), so the store that opens the directory first, alone, initializes it again.

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::vfs::{Dir, Mapped, Open, VfsFile};

/// Size of the lock file: one page.
const FILE_LEN: u64 = 4096;
/// What the first bytes of an initialized lock file hold.
const MAGIC: &[u8; 8] = b"LCMUTEX1";
/// Where the mutex lies in the file (aligned for it).
const MUTEX_AT: usize = 64;

/// Attempts to take the mutex before waiting for it in the kernel: a writer holds it for a
/// microsecond or two, much less than it takes to wake a sleeping process.
const SPINS: usize = 64;

/// A mutex in a shared file mapping that serializes the writers of every process.
#[derive(Debug)]
pub(crate) struct ProcessMutex {
    path: PathBuf,
    _file: Box<dyn VfsFile>,
    map: Mapped,
}

/// Held until dropped.
#[derive(Debug)]
#[must_use]
pub(crate) struct MutexHeld<'a>(&'a ProcessMutex);

impl Drop for MutexHeld<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (a `MutexHeld` is made only once it was taken,
        // and it is not `Send`, so it is dropped by the thread that took it).
        unsafe { libc::pthread_mutex_unlock(self.0.mutex()) };
    }
}

impl ProcessMutex {
    /// Opens lock file `name` of `dir`, creating it if needed. With `initialize` (only by
    /// the store that opens the directory while no other store has it open), writes a new
    /// unlocked mutex; otherwise the file must hold one.
    pub fn open(dir: &Dir, name: &str, initialize: bool) -> Result<ProcessMutex> {
        let path = dir.join(name);
        let file = dir
            .vfs()
            .open(&path, Open::Create)
            .context("opening the lock file", &path)?;
        if initialize {
            file.allocate(FILE_LEN)
                .context("reserving space for", &path)?;
        }
        let len = file.size().context("reading the size of", &path)?;
        if len < FILE_LEN {
            return Err(not_initialized(&path));
        }
        let map = Mapped::new(file.map(true).context("mapping", &path)?);
        let mutex = ProcessMutex {
            path,
            _file: file,
            map,
        };
        if initialize {
            mutex.initialize()?;
        } else if mutex.magic() != MAGIC {
            return Err(not_initialized(&mutex.path));
        }
        Ok(mutex)
    }

    fn magic(&self) -> &[u8] {
        // SAFETY: the map is at least `FILE_LEN` bytes; the magic is written once, by the
        // store that initializes the file before any other store can open the directory.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), MAGIC.len()) }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        const _: () =
            assert!(MUTEX_AT + std::mem::size_of::<libc::pthread_mutex_t>() <= FILE_LEN as usize);
        // SAFETY: in bounds (checked above against the file's length, which `open` checked),
        // and aligned: the map is page-aligned and `MUTEX_AT` a multiple of 64.
        unsafe { self.map.as_mut_ptr().add(MUTEX_AT).cast() }
    }

    /// Writes a new, unlocked, robust and process-shared mutex, then the magic.
    fn initialize(&self) -> Result<()> {
        let failed = |code: i32| {
            Error::io(
                "initializing the writer lock",
                &self.path,
                std::io::Error::from_raw_os_error(code),
            )
        };
        // SAFETY: `attr` is initialized by `pthread_mutexattr_init` before use and destroyed
        // after; the mutex lies in this map (see `mutex`), and no other store has the
        // directory open (the caller's contract), so nobody else uses the mutex meanwhile.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            let code = libc::pthread_mutexattr_init(attr.as_mut_ptr());
            if code != 0 {
                return Err(failed(code));
            }
            let mut code =
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            if code == 0 {
                code = libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                );
            }
            if code == 0 {
                code = libc::pthread_mutex_init(self.mutex(), attr.as_ptr());
            }
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            if code != 0 {
                return Err(failed(code));
            }
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), self.map.as_mut_ptr(), MAGIC.len());
        }
        Ok(())
    }

    /// What taking the mutex returned: taken, busy, or an error.
    fn taken(&self, code: i32) -> Result<bool> {
        match code {
            0 => Ok(true),
            libc::EBUSY => Ok(false),
            libc::EOWNERDEAD => {
                // The holder died. Whatever it left half done, the store's writer repairs
                // next (it checks on every take); the mutex itself is consistent again.
                // SAFETY: this thread holds the mutex (`EOWNERDEAD` hands it over).
                unsafe { libc::pthread_mutex_consistent(self.mutex()) };
                Ok(true)
            }
            code => Err(Error::io(
                "taking the writer lock",
                &self.path,
                std::io::Error::from_raw_os_error(code),
            )),
        }
    }

    /// Waits for the mutex. Tries a few times, yielding in between, before it sleeps in the
    /// kernel.
    pub fn lock(&self) -> Result<MutexHeld<'_>> {
        for _ in 0..SPINS {
            if let Some(held) = self.try_lock()? {
                return Ok(held);
            }
            std::thread::yield_now();
        }
        // SAFETY: the mutex was initialized (checked by `open`) and lies in this live map.
        let code = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        self.taken(code)?;
        Ok(MutexHeld(self))
    }

    /// Takes the mutex if nobody holds it; `None` if somebody does.
    pub fn try_lock(&self) -> Result<Option<MutexHeld<'_>>> {
        // SAFETY: as in `lock`.
        let code = unsafe { libc::pthread_mutex_trylock(self.mutex()) };
        Ok(self.taken(code)?.then_some(MutexHeld(self)))
    }
}

fn not_initialized(path: &std::path::Path) -> Error {
    Error::io(
        "opening the writer lock",
        path,
        std::io::Error::other(
            "not initialized: the store is open in a process of a logcache version that \
             serializes writers otherwise; close it first",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_openers_exclude_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        let a = ProcessMutex::open(dir, "LOCK.writer", true).unwrap();
        let b = ProcessMutex::open(dir, "LOCK.writer", false).unwrap();
        let held = a.lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert!(b.try_lock().unwrap().is_none()));
        });
        drop(held);
        assert!(b.try_lock().unwrap().is_some());
    }

    #[test]
    fn a_holder_that_dies_releases_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        let a = ProcessMutex::open(dir, "LOCK.writer", true).unwrap();
        let path = tmp.path().to_path_buf();
        std::thread::spawn(move || {
            // Mapped until the thread is gone, as a process's maps are when it dies.
            let b = ProcessMutex::open(&Dir::real(&path), "LOCK.writer", false).unwrap();
            std::mem::forget(Box::leak(Box::new(b)).lock().unwrap());
        })
        .join()
        .unwrap();
        // The thread exited holding it (joined: it is gone): the kernel marked the mutex,
        // and the next take succeeds.
        drop(
            a.try_lock()
                .unwrap()
                .expect("the dead holder's mutex is free"),
        );
        drop(a.try_lock().unwrap().expect("free after a normal release"));
    }

    #[test]
    fn a_file_never_initialized_is_a_typed_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        std::fs::write(tmp.path().join("LOCK.writer"), b"").unwrap();
        assert!(matches!(
            ProcessMutex::open(dir, "LOCK.writer", false),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn initializing_again_frees_a_mutex_left_held() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        let a = ProcessMutex::open(dir, "LOCK.writer", true).unwrap();
        std::mem::forget(a.lock().unwrap());
        // As after a restart: the bytes say "held" by a thread that will never release it.
        let b = ProcessMutex::open(dir, "LOCK.writer", true).unwrap();
        drop(b.try_lock().unwrap().expect("free after initializing"));
    }
}
