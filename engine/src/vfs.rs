//! File I/O behind a trait, one instance per store: every file the engine creates, opens,
//! writes, syncs, reads, maps, renames, deletes or locks, and every directory it lists or
//! syncs, goes through the store's [`Vfs`] ([`Options::vfs`](crate::Options::vfs)).
//!
//! [`RealVfs`] is the operating system's file system. [`Faulty`] wraps any `Vfs` and makes
//! chosen operations fail, as a failing disk would, for one store only (tests run in
//! parallel). A simulated disk for crash tests implements the same trait.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// An existing file, for reading only.
    Read,
    /// An existing file, for reading and writing.
    Write,
    /// For reading and writing, created empty if missing, kept as it is otherwise.
    Create,
    /// For reading and writing; it must not exist yet.
    CreateNew,
    /// For reading and writing, created if missing and emptied otherwise.
    Truncate,
}

/// Advice on how a map will be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Random reads: no read-ahead on faults.
    Random,
    /// The range will be read soon: read it ahead now.
    WillNeed,
}

/// An advisory lock on a whole file (`flock`), held by one open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Several holders at once.
    Shared,
    /// One holder.
    Exclusive,
}

/// The file system a store works on.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Opens the file at `path`.
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn VfsFile>>;
    /// Deletes the file at `path` (durable only once its directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable only once the directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and deletions in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Creates `dir` and its parents where missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// What is at `path`: `None` if nothing.
    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    /// Whether files can be created in `dir` (false on a read-only file system).
    fn is_writable(&self, dir: &Path) -> bool;
    /// The id of the current boot: it changes when the machine restarts, and so tells an
    /// index that was in use when the OS stopped (its unsynced pages may be lost) from one a
    /// killed process left. `[0, 0]` where there is none, which no index records, so that
    /// only a clean close makes an index trusted there.
    fn boot_id(&self) -> [u64; 2];
    /// A seed for the key hash of a new index: random by default, so that no one can choose
    /// keys that pile into one bucket; a simulated disk draws it from its own generator, so
    /// that a run replays exactly.
    fn hash_seed(&self) -> u64 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        hasher.finish()
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of this many bytes.
    File(u64),
    /// A directory.
    Dir,
}

/// An open file.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Its length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from offset `at` (an error if the file ends first).
    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()>;
    /// Writes all of `buf` at offset `at`, extending the file if needed.
    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()>;
    /// Makes the file's bytes durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's bytes and metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
    /// Reserves the first `len` bytes (extending the file with zeros), so that writing them
    /// never needs a new block: a full disk fails here, not later.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Frees the blocks of `from..from + len` (they read as zeros), keeping the length;
    /// then reserves them again if `reserve`. Best effort where unsupported.
    fn punch_hole(&self, from: u64, len: u64, reserve: bool) -> io::Result<()>;
    /// The extents of `from..` that hold data (not holes), where the file system can tell:
    /// `None` if it cannot.
    fn data_after(&self, from: u64) -> Option<Vec<(u64, u64)>>;
    /// Maps the whole file into memory, shared with every other map of it, writable if
    /// `writable`.
    fn map(&self, writable: bool) -> io::Result<Box<dyn VfsMap>>;
    /// Takes the advisory lock, waiting for it if `wait`; whether it was taken.
    fn lock(&self, kind: LockKind, wait: bool) -> io::Result<bool>;
    /// Releases the advisory lock.
    fn unlock(&self) -> io::Result<()>;
    /// Starts writing back `from..from + len` without waiting (a hint).
    fn start_writeback(&self, from: u64, len: u64);
    /// Fails where a read of the file's map would fail on this disk (for fault injection;
    /// reads through a map make no call the `Vfs` sees).
    fn check_read(&self) -> io::Result<()> {
        Ok(())
    }
    /// Writes zeros over `from..to`, a MiB at a time (where blocks cannot be reserved or
    /// punched).
    fn write_zeros(&self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// A file mapped into memory.
///
/// # Safety
/// [`VfsMap::as_ptr`] must point at [`VfsMap::size`] bytes that stay valid, at the same
/// address, for as long as the map lives; writable only if the map was made writable; shared
/// with every other map of the same file (a write through one is seen through the others),
/// and aligned to 4 KiB.
pub unsafe trait VfsMap: Send + Sync + fmt::Debug {
    /// The first byte.
    fn as_ptr(&self) -> *mut u8;
    /// The length in bytes.
    fn size(&self) -> usize;
    /// Writes the map through to the file and makes it durable.
    fn flush(&self) -> io::Result<()>;
    /// Advice on how `from..from + len` will be read (a hint: failing changes nothing).
    fn advise(&self, advice: Advice, from: usize, len: usize);
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealVfs;

/// The default file system of a store: the real one.
pub fn real() -> Arc<dyn Vfs> {
    Arc::new(RealVfs)
}

impl Vfs for RealVfs {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn VfsFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match how {
            Open::Read => {}
            Open::Write => {
                options.write(true);
            }
            Open::Create => {
                options.write(true).create(true).truncate(false);
            }
            Open::CreateNew => {
                options.write(true).create_new(true);
            }
            Open::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        Ok(Box::new(RealFile(options.open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Some(EntryKind::Dir)),
            Ok(meta) => Ok(Some(EntryKind::File(meta.len()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_writable(&self, dir: &Path) -> bool {
        rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
            && !rustix::fs::statvfs(dir)
                .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    }

    /// Linux: `/proc/sys/kernel/random/boot_id`.
    fn boot_id(&self) -> [u64; 2] {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
        if hex.len() != 32 {
            return [0, 0];
        }
        let word = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        let boot = [word(&hex[..16]), word(&hex[16..])];
        if boot == [0, 0] { [0, 1] } else { boot }
    }
}

/// A file of the real file system.
#[derive(Debug)]
struct RealFile(File);

impl VfsFile for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, at)
    }

    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.0.write_all_at(buf, at)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        use rustix::io::Errno;
        match fallocate(&self.0, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => {
                self.write_zeros(self.size()?, len)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn punch_hole(&self, from: u64, len: u64, reserve: bool) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        let keep = FallocateFlags::KEEP_SIZE;
        fallocate(&self.0, FallocateFlags::PUNCH_HOLE | keep, from, len)?;
        if reserve {
            fallocate(&self.0, keep, from, len)?;
        }
        Ok(())
    }

    fn data_after(&self, from: u64) -> Option<Vec<(u64, u64)>> {
        use rustix::fs::{SeekFrom, seek};
        let end = self.size().ok()?;
        let mut extents = Vec::new();
        let mut at = from;
        while at < end {
            let data = match seek(&self.0, SeekFrom::Data(at)) {
                Ok(data) => data,
                Err(rustix::io::Errno::NXIO) => break,
                Err(_) => return None,
            };
            let hole = match seek(&self.0, SeekFrom::Hole(data)) {
                Ok(hole) if hole > data => hole,
                // No hole after it that the file system reports: data to the end.
                _ => end,
            };
            extents.push((data, hole));
            at = hole;
        }
        Some(extents)
    }

    fn map(&self, writable: bool) -> io::Result<Box<dyn VfsMap>> {
        let options = MmapOptions::new();
        let map = if writable {
            options.map_raw(&self.0)?
        } else {
            options.map_raw_read_only(&self.0)?
        };
        Ok(Box::new(RealMap(map)))
    }

    fn lock(&self, kind: LockKind, wait: bool) -> io::Result<bool> {
        match (kind, wait) {
            (LockKind::Exclusive, true) => self.0.lock().map(|()| true),
            (LockKind::Shared, true) => self.0.lock_shared().map(|()| true),
            (LockKind::Exclusive, false) => try_taken(self.0.try_lock()),
            (LockKind::Shared, false) => try_taken(self.0.try_lock_shared()),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }

    fn start_writeback(&self, from: u64, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor this file owns; it reads no memory
            // of the process.
            let _ = unsafe {
                libc::sync_file_range(
                    self.0.as_raw_fd(),
                    from as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, len);
    }
}

fn try_taken(result: Result<(), TryLockError>) -> io::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// A map of a real file.
#[derive(Debug)]
struct RealMap(MmapRaw);

// SAFETY: an `MmapRaw` is valid at its address for its length until dropped, shared
// (`MAP_SHARED`) with every other map of the file, writable only if made so, and page-aligned.
unsafe impl VfsMap for RealMap {
    fn as_ptr(&self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    fn size(&self) -> usize {
        self.0.len()
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    fn advise(&self, advice: Advice, from: usize, len: usize) {
        let advice = match advice {
            Advice::Random => memmap2::Advice::Random,
            Advice::WillNeed => memmap2::Advice::WillNeed,
        };
        let len = len.min(self.0.len().saturating_sub(from));
        let _ = self.0.advise_range(advice, from, len);
    }
}

/// Switches that make operations of a [`Faulty`] file system fail.
#[derive(Debug, Default)]
pub struct Faults {
    allocate: AtomicBool,
    sync: AtomicBool,
    reads: AtomicBool,
}

impl Faults {
    /// The next file space reservation finds the disk full (ENOSPC).
    pub fn fail_next_allocation(&self) {
        self.allocate.store(true, Ordering::SeqCst);
    }

    /// The next fdatasync fails with EIO.
    pub fn fail_next_sync(&self) {
        self.sync.store(true, Ordering::SeqCst);
    }

    /// While on, every read of a segment by compaction, eviction or hint writing fails with
    /// EIO (gets read the map and make no call that could fail).
    pub fn fail_reads(&self, on: bool) {
        self.reads.store(on, Ordering::SeqCst);
    }

    fn take(flag: &AtomicBool, error: impl FnOnce() -> io::Error) -> io::Result<()> {
        if flag.swap(false, Ordering::SeqCst) {
            Err(error())
        } else {
            Ok(())
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// A file system that fails where its [`Faults`] say, and otherwise is `inner`.
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn Vfs>,
    faults: Arc<Faults>,
}

impl Faulty {
    /// `inner`, failing where `faults` say.
    pub fn new(inner: Arc<dyn Vfs>, faults: Arc<Faults>) -> Faulty {
        Faulty { inner, faults }
    }
}

impl Vfs for Faulty {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn VfsFile>> {
        let inner = self.inner.open(path, how)?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.inner.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        self.inner.kind(path)
    }

    fn is_writable(&self, dir: &Path) -> bool {
        self.inner.is_writable(dir)
    }

    fn boot_id(&self) -> [u64; 2] {
        self.inner.boot_id()
    }

    fn hash_seed(&self) -> u64 {
        self.inner.hash_seed()
    }
}

/// A file of a [`Faulty`] file system.
#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn VfsFile>,
    faults: Arc<Faults>,
}

impl VfsFile for FaultyFile {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.inner.read_at(buf, at)
    }

    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.inner.write_at(buf, at)
    }

    fn sync_data(&self) -> io::Result<()> {
        Faults::take(&self.faults.sync, eio)?;
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        Faults::take(&self.faults.allocate, || {
            io::Error::from(io::ErrorKind::StorageFull)
        })?;
        self.inner.allocate(len)
    }

    fn punch_hole(&self, from: u64, len: u64, reserve: bool) -> io::Result<()> {
        self.inner.punch_hole(from, len, reserve)
    }

    fn data_after(&self, from: u64) -> Option<Vec<(u64, u64)>> {
        self.inner.data_after(from)
    }

    fn map(&self, writable: bool) -> io::Result<Box<dyn VfsMap>> {
        self.inner.map(writable)
    }

    fn lock(&self, kind: LockKind, wait: bool) -> io::Result<bool> {
        self.inner.lock(kind, wait)
    }

    fn unlock(&self) -> io::Result<()> {
        self.inner.unlock()
    }

    fn start_writeback(&self, from: u64, len: u64) {
        self.inner.start_writeback(from, len)
    }

    fn check_read(&self) -> io::Result<()> {
        if self.faults.reads.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.check_read()
    }
}

/// `dir.join(name)` in one allocation (`Path::join` copies `dir`, then grows it for `name`):
/// paths of segment files are made at every open, creation and removal of one.
pub(crate) fn join(dir: &Path, name: impl AsRef<Path>) -> PathBuf {
    let name = name.as_ref();
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.as_os_str().len());
    path.push(dir);
    path.push(name);
    path
}

/// A store directory on its file system: derefs to its path.
#[derive(Clone)]
pub(crate) struct Dir {
    vfs: Arc<dyn Vfs>,
    path: PathBuf,
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.fmt(f)
    }
}

impl std::ops::Deref for Dir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Dir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Dir {
    /// Directory `path` of `vfs`.
    pub fn new(vfs: Arc<dyn Vfs>, path: PathBuf) -> Dir {
        Dir { vfs, path }
    }

    /// The directory of the real file system at `path`.
    pub fn real(path: &Path) -> Dir {
        Dir::new(real(), path.to_path_buf())
    }

    /// [`join`] on its path; shadows the `Path` method the deref offers.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        join(&self.path, name)
    }

    /// Its file system.
    pub fn vfs(&self) -> &dyn Vfs {
        &*self.vfs
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether something is at `path`.
    pub fn exists(&self, path: &Path) -> bool {
        matches!(self.vfs.kind(path), Ok(Some(_)))
    }

    /// The first `max` bytes of the file at `path` (all of it if shorter).
    pub fn read_prefix(&self, path: &Path, max: u64) -> io::Result<Vec<u8>> {
        let file = self.vfs.open(path, Open::Read)?;
        let len = usize::try_from(file.size()?.min(max))
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let mut bytes = vec![0; len];
        file.read_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// The whole file at `path`.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.read_prefix(path, u64::MAX)
    }

    /// Writes `bytes` as the whole file at `path` (created or emptied first) and makes them
    /// durable (not its directory entry).
    pub fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = self.vfs.open(path, Open::Truncate)?;
        file.write_at(bytes, 0)?;
        file.sync_all()
    }
}

/// A map with its address kept at hand, so that an access makes no call through the trait.
#[derive(Debug)]
pub(crate) struct Mapped {
    map: Box<dyn VfsMap>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the map itself is `Send + Sync`; `ptr` is its address, valid while it lives (the
// `VfsMap` contract), and every use site of the bytes states why its access is free of races
// (atomics, or bytes no other thread writes).
unsafe impl Send for Mapped {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// `map`, with its address.
    pub fn new(map: Box<dyn VfsMap>) -> Mapped {
        let (ptr, len) = (map.as_ptr(), map.size());
        Mapped { map, ptr, len }
    }

    /// The first byte.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The first byte, for writing (only where the map is writable).
    #[inline]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes the map through to the file and makes it durable.
    pub fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Advice on how `from..from + len` will be read (a hint).
    pub fn advise(&self, advice: Advice, from: usize, len: usize) {
        self.map.advise(advice, from, len);
    }
}
