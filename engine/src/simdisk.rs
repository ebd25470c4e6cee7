//! A simulated disk: a [`Vfs`] in memory that can lose power.
//!
//! Every file has the bytes the page cache holds (what reads, writes and maps see) and the
//! bytes the disk holds (as of its last fsync). Namespace changes (creations, renames,
//! deletions) become durable when their directory is synced. [`SimDisk::power_cut`] keeps,
//! per file, the durable bytes plus any subset of the 512-byte sectors written since, and,
//! of the namespace changes since the last directory sync, a prefix (a journaling file system
//! commits them in order): what a power cut can leave. Faults ([`SimFaults`]) make chosen
//! operations fail as a failing disk would: a full disk, EIO on a sync or a read, short
//! writes. Everything is decided by the disk's own seeded generator, so a run replays exactly.
//!
//! The disk is for one thread: a store on it must not run background work
//! (`Options::background(false)`, or `auto_compaction(false)` without a size limit), as its
//! maps are plain memory the disk copies when it syncs.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{HashMap, HashSet};

/// Maps by name, with a fast hash of a fixed seed: their order (of a listing, of the files a
/// power cut visits) then depends on the run only, so a run replays without sorting names,
/// which compares them with `memcmp`, whose libFuzzer hook is costly.
type Fixed = foldhash::fast::FixedState;
use parking_lot::Mutex;

use crate::vfs::{Advice, EntryKind, LockKind, Open, Vfs, VfsFile, VfsMap};

/// The unit a power cut keeps or loses.
pub const SECTOR: usize = 512;

/// How often operations fail, as chances out of 2^16 (0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// A space reservation finds the disk full.
    pub enospc: u16,
    /// A sync fails with EIO (and makes nothing durable).
    pub sync_eio: u16,
    /// A read (or a walk over a map) fails with EIO.
    pub read_eio: u16,
    /// A write stops part of the way with EIO, having written a prefix.
    pub short_write: u16,
}

/// What a [`SimDisk`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Faults injected so far.
    pub faults: u64,
    /// Syncs (of files, maps and directories) so far.
    pub syncs: u64,
}

/// A disk in memory, shared by every store opened on it.
#[derive(Debug)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    /// Handles ever opened: each has its own locks, as an open file description has.
    handles: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The namespace as processes see it.
    files: HashMap<OsString, Arc<SimFile>, Fixed>,
    dirs: HashSet<OsString, Fixed>,
    /// The namespace as the disk holds it.
    durable: HashMap<OsString, Arc<SimFile>, Fixed>,
    /// Namespace changes not durable yet, in order: a path bound to a file, or unbound.
    pending: Vec<(OsString, Option<Arc<SimFile>>)>,
    boot: u64,
    rng: u64,
    faults: SimFaults,
    stats: SimStats,
}

impl State {
    fn next(&mut self) -> u64 {
        // xorshift64*: small, fast and good enough to pick what a crash keeps.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, out_of_65536: u16) -> bool {
        out_of_65536 != 0 && (self.next() & 0xffff) < u64::from(out_of_65536)
    }

    fn fault(&mut self, out_of_65536: u16) -> bool {
        let hit = self.chance(out_of_65536);
        self.stats.faults += u64::from(hit);
        hit
    }

    fn bind(&mut self, path: &Path, file: Option<Arc<SimFile>>) {
        match &file {
            Some(f) => self
                .files
                .insert(path.as_os_str().to_owned(), Arc::clone(f)),
            None => self.files.remove(path.as_os_str()),
        };
        self.pending.push((path.as_os_str().to_owned(), file));
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl SimDisk {
    /// An empty disk whose choices come from `seed`, failing as `faults` say.
    pub fn new(seed: u64, faults: SimFaults) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Arc::new(Mutex::new(State {
                files: HashMap::default(),
                dirs: HashSet::default(),
                durable: HashMap::default(),
                pending: Vec::new(),
                boot: 1,
                rng: seed | 1,
                faults,
                stats: SimStats::default(),
            })),
            handles: AtomicU64::new(0),
        })
    }

    /// Changes how often operations fail.
    pub fn set_faults(&self, faults: SimFaults) {
        self.state.lock().faults = faults;
    }

    /// What the disk counted.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }

    /// Cuts the power: every file keeps its durable bytes and any subset of the sectors
    /// written since its last sync; the namespace keeps a prefix of its changes since the
    /// last directory sync; locks are gone, and the next boot begins (so an index in use now
    /// is not trusted). Every store on the disk must have been dropped or crashed
    /// ([`crate::Store::simulate_crash`]) first: the files it held belong to the old boot (a map
    /// still open panics).
    pub fn power_cut(&self) {
        let mut st = self.state.lock();
        st.stats.power_cuts += 1;
        let pending = std::mem::take(&mut st.pending);
        let kept = (st.next() % (pending.len() as u64 + 1)) as usize;
        let mut names = std::mem::take(&mut st.durable);
        for (path, file) in pending.into_iter().take(kept) {
            match file {
                Some(f) => names.insert(path, f),
                None => names.remove(&path),
            };
        }
        // One new file per old one (hard links do not exist here, but a rename of a file
        // that is also under its old name until the cut can leave it under both).
        let mut fresh: HashMap<*const SimFile, Arc<SimFile>, Fixed> = HashMap::default();
        let mut files = HashMap::default();
        // In the map's order, which the run alone decides (`Fixed`).
        for (path, old) in names {
            let key = Arc::as_ptr(&old);
            let new = match fresh.get(&key) {
                Some(f) => Arc::clone(f),
                None => {
                    let f = Arc::new(SimFile::from_data(old.after_cut(&mut st)));
                    fresh.insert(key, Arc::clone(&f));
                    f
                }
            };
            files.insert(path, new);
        }
        st.durable = files.clone();
        st.files = files;
        st.boot += 1;
    }
}

impl SimDisk {
    /// The bytes of the file at `path` as processes see them now.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        st.files
            .get(path.as_os_str())
            .map(|f| f.data.lock().current())
    }

    /// Every file: its path, its length, how many bytes differ from what the disk holds,
    /// and whether its name is durable. For following a failing seed.
    pub fn listing(&self) -> Vec<(PathBuf, usize, usize, bool)> {
        let st = self.state.lock();
        let mut files: Vec<_> = st.files.iter().collect();
        files.sort_unstable_by(|a, b| a.0.cmp(b.0));
        files
            .into_iter()
            .map(|(path, f)| {
                let data = f.data.lock();
                let current = data.current();
                let differ = current
                    .iter()
                    .zip(data.durable.iter().chain(std::iter::repeat(&0)))
                    .filter(|(a, b)| a != b)
                    .count();
                let named = st.durable.get(path).is_some_and(|d| Arc::ptr_eq(d, f));
                (PathBuf::from(path), data.len, differ, named)
            })
            .collect()
    }
}

impl Vfs for SimDisk {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn VfsFile>> {
        let mut st = self.state.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent.as_os_str()) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let existing = st.files.get(path.as_os_str()).cloned();
        let file = match (how, existing) {
            (Open::Read | Open::Write, None) => {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            (Open::CreateNew, Some(_)) => {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            (Open::Truncate, Some(f)) => {
                f.data.lock().set_len(0)?;
                f
            }
            (_, Some(f)) => f,
            (_, None) => {
                let f = Arc::new(SimFile::from_data(FileData::empty()));
                st.bind(path, Some(Arc::clone(&f)));
                f
            }
        };
        drop(st);
        Ok(Box::new(SimHandle {
            disk: Arc::clone(&self.state),
            file,
            writable: how != Open::Read,
            id: self.handles.fetch_add(1, Ordering::Relaxed) + 1,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.files.contains_key(path.as_os_str()) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        st.bind(path, None);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let file = st
            .files
            .get(from.as_os_str())
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.bind(to, Some(file));
        st.bind(from, None);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.stats.syncs += 1;
        let chance = st.faults.sync_eio;
        if st.fault(chance) {
            return Err(eio());
        }
        // Every change so far becomes durable (a journal commits in order: a later change's
        // commit carries the earlier ones).
        let _ = dir;
        for (path, file) in std::mem::take(&mut st.pending) {
            match file {
                Some(f) => st.durable.insert(path, f),
                None => st.durable.remove(&path),
            };
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let st = self.state.lock();
        if !st.dirs.contains(dir.as_os_str()) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        // Names are compared as bytes: the engine builds every path by joining a name to
        // its directory's.
        let dir = dir.as_os_str().as_bytes();
        let names: Vec<OsString> = st
            .files
            .keys()
            .filter_map(|p| {
                let name = p.as_bytes().strip_prefix(dir)?.strip_prefix(b"/")?;
                (!name.is_empty() && !name.contains(&b'/'))
                    .then(|| std::ffi::OsStr::from_bytes(name).to_os_string())
            })
            .collect();
        // Unsorted, as a real directory lists: the engine must not rely on an order.
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        for d in dir.ancestors() {
            st.dirs.insert(d.as_os_str().to_owned());
        }
        Ok(())
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let st = self.state.lock();
        if st.dirs.contains(path.as_os_str()) {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(st
            .files
            .get(path.as_os_str())
            .map(|f| EntryKind::File(f.data.lock().len as u64)))
    }

    fn is_writable(&self, _dir: &Path) -> bool {
        true
    }

    fn boot_id(&self) -> [u64; 2] {
        [0x5157_4449_534b, self.state.lock().boot]
    }

    fn hash_seed(&self) -> u64 {
        self.state.lock().next()
    }
}

/// One file's bytes: in the page cache (`ptr`, `len`) and on the disk (`durable`).
#[derive(Debug)]
struct SimFile {
    data: Mutex<FileData>,
    /// Advisory locks: shared holders, and the exclusive holder (handle ids).
    locks: Mutex<(BTreeSet<u64>, Option<u64>)>,
}

#[derive(Debug)]
struct FileData {
    /// `cap` bytes, zeroed when allocated; a map points into them, so they are touched
    /// only through this pointer, never through a reference, and not moved while mapped.
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    durable: Vec<u8>,
    maps: usize,
    /// Writable maps now open.
    writable_maps: usize,
    /// The pages ([`PAGE`] bytes) written, cut or grown since the last sync: elsewhere the
    /// page-cache bytes equal the durable ones (up to the shorter length), so a sync copies
    /// and a power cut looks at these only.
    dirty: Vec<u64>,
    /// A writable map was open since the last sync: what it wrote is not in `dirty`, so
    /// every page counts as written.
    map_written: bool,
}

/// The granularity of the record of written bytes (a multiple of [`SECTOR`]).
const PAGE: usize = 4096;

// SAFETY: the bytes behind `ptr` are owned by this `FileData` (freed on drop) and every
// access to them holds the file's mutex or goes through a map, which the disk's one-thread
// contract serializes with it.
unsafe impl Send for FileData {}

impl FileData {
    fn empty() -> FileData {
        FileData {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
            durable: Vec::new(),
            maps: 0,
            writable_maps: 0,
            dirty: Vec::new(),
            map_written: false,
        }
    }

    /// Grows the buffer to hold `len` bytes (zeros after the old end).
    fn reserve(&mut self, len: usize) -> io::Result<()> {
        if len <= self.cap {
            return Ok(());
        }
        if self.maps > 0 {
            // Growing would move the bytes a map points at: no file the engine maps grows.
            return Err(io::Error::other("a mapped simulated file cannot grow"));
        }
        let cap = len.next_multiple_of(4096);
        let new = spare::take(cap)?;
        // SAFETY: `new` is `cap` bytes long and ours alone; the old buffer (dangling if none,
        // with `len` 0) is live, at least `self.len` long, and distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len);
            std::ptr::write_bytes(new.as_ptr().add(self.len), 0, cap - self.len);
        }
        self.free();
        self.ptr = new;
        self.cap = cap;
        Ok(())
    }

    /// Copies `bytes` into the buffer at `at`.
    ///
    /// # Safety
    /// `at..at + bytes.len()` lies inside the buffer, and no map is open.
    unsafe fn write(&mut self, at: usize, bytes: &[u8]) {
        debug_assert!(at + bytes.len() <= self.cap && self.maps == 0);
        // SAFETY: the caller's promise; `bytes` is not the buffer (no reference into it
        // outlives a borrow of `self`).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len())
        };
    }

    fn free(&mut self) {
        if self.cap > 0 {
            // SAFETY: made by `spare::take(self.cap)` in `reserve`, not given back since;
            // nothing points at it any more (no map is open when a file's buffer goes).
            unsafe { spare::give(self.ptr, self.cap) };
            self.cap = 0;
        }
    }

    /// Records that bytes `from..to` may differ from the durable ones.
    fn mark(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let (first, last) = (from / PAGE, (to - 1) / PAGE);
        if self.dirty.len() <= last / 64 {
            self.dirty.resize(last / 64 + 1, 0);
        }
        for page in first..=last {
            self.dirty[page / 64] |= 1 << (page % 64);
        }
    }

    /// The byte ranges (page by page, in order) that may differ from the durable bytes.
    fn written(&self) -> Vec<std::ops::Range<usize>> {
        let end = self.len.max(self.durable.len());
        if self.map_written {
            return (0..end)
                .step_by(PAGE)
                .map(|at| at..(at + PAGE).min(end))
                .collect();
        }
        let mut out = Vec::new();
        for (word_at, &word) in self.dirty.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let at = (word_at * 64 + bits.trailing_zeros() as usize) * PAGE;
                bits &= bits - 1;
                if at < end {
                    out.push(at..(at + PAGE).min(end));
                }
            }
        }
        out
    }

    fn set_len(&mut self, len: usize) -> io::Result<()> {
        self.reserve(len)?;
        let old = self.len;
        self.mark(old.min(len), old.max(len));
        if len < self.len {
            // SAFETY: `len..self.len` lies inside the buffer.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(len), 0, self.len - len) };
        }
        self.len = len;
        Ok(())
    }

    /// The page-cache bytes.
    fn bytes(&self) -> &[u8] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: `len` bytes of the buffer are initialized (zeroed or written); a map may
        // write them, but only on the disk's one thread, which is here now.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// A copy of the page-cache bytes.
    fn current(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }

    /// Makes the page-cache bytes the disk's: copies the pages written since the last sync.
    fn sync(&mut self) {
        let mut durable = std::mem::take(&mut self.durable);
        let bytes = self.bytes();
        // A map may have written any page: then one copy of the whole (libc's memcpy beats
        // comparing the pages first, above all in an instrumented fuzz build).
        if self.map_written {
            durable.clear();
        } else {
            let both = durable.len().min(bytes.len());
            durable.truncate(both);
            for range in self.written() {
                let range = range.start.min(both)..range.end.min(both);
                durable[range.clone()].copy_from_slice(&bytes[range]);
            }
        }
        // Past the old durable length (all of it after a map): what the page cache holds.
        let from = durable.len();
        durable.extend_from_slice(&bytes[from..]);
        debug_assert!(durable == bytes, "a write was not recorded as dirty");
        self.durable = durable;
        self.dirty.clear();
        self.map_written = self.writable_maps > 0;
    }
}

impl Drop for FileData {
    fn drop(&mut self) {
        self.free();
    }
}

impl SimFile {
    fn from_data(data: FileData) -> SimFile {
        SimFile {
            data: Mutex::new(data),
            locks: Mutex::new((BTreeSet::new(), None)),
        }
    }

    /// What a power cut leaves of this file: its durable bytes, plus each sector written
    /// since with an even chance, and the length of either. The new file takes over this
    /// one's buffer (no map is open after a cut), which then holds those bytes: only the
    /// sectors the cut lost are copied back.
    fn after_cut(&self, st: &mut State) -> FileData {
        let mut data = self.data.lock();
        // The new file takes the buffer: a map left open would point into it.
        assert_eq!(data.maps, 0, "a map outlived the stores of a power cut");
        // The file is gone after the cut (the new boot gets new files): its durable bytes
        // become the new file's.
        let mut out = std::mem::take(&mut data.durable);
        let len = data.len;
        if st.next() & 1 == 1 {
            out.resize(len, 0);
        }
        let both = out.len().min(len);
        // Only written pages can differ (elsewhere both hold the same bytes, or zeros); a
        // page that holds its durable bytes again loses nothing either way.
        for page in data.written() {
            let page = page.start..page.end.min(both);
            if page.is_empty() || out[page.clone()] == data.bytes()[page.clone()] {
                continue;
            }
            for start in page.clone().step_by(SECTOR) {
                let sector = start..(start + SECTOR).min(page.end);
                if st.next() & 1 == 1 {
                    out[sector.clone()].copy_from_slice(&data.bytes()[sector]);
                } else {
                    // SAFETY: `sector` lies within the first `len` bytes of the buffer, and
                    // no map is open.
                    unsafe { data.write(sector.start, &out[sector]) };
                }
            }
        }
        if out.len() > len {
            // Cut back after its last sync, the file gets its old end back.
            data.reserve(out.len())
                .expect("memory for a simulated file");
            // SAFETY: the buffer now holds `out.len()` bytes; no map is open.
            unsafe { data.write(len, &out[len..]) };
        } else {
            // SAFETY: `out.len()..len` lies inside the buffer; past `len` it is zero already.
            unsafe { std::ptr::write_bytes(data.ptr.as_ptr().add(out.len()), 0, len - out.len()) };
        }
        let mut fresh = FileData::empty();
        (fresh.ptr, fresh.cap, fresh.len) = (data.ptr, data.cap, out.len());
        // The buffer is the new file's now.
        (data.cap, data.len) = (0, 0);
        debug_assert!(fresh.bytes() == out, "the buffer holds what the cut left");
        // Page cache and disk hold the same bytes: nothing is dirty.
        fresh.durable = out;
        fresh
    }
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
struct SimHandle {
    /// The disk's state.
    disk: Arc<Mutex<State>>,
    file: Arc<SimFile>,
    writable: bool,
    id: u64,
}

impl SimHandle {
    fn fault(&self, pick: impl Fn(&SimFaults) -> u16) -> bool {
        let mut st = self.disk.lock();
        let chance = pick(&st.faults);
        st.fault(chance)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(9))
        }
    }

    fn sync(&self) -> io::Result<()> {
        {
            let mut st = self.disk.lock();
            st.stats.syncs += 1;
            let chance = st.faults.sync_eio;
            if st.fault(chance) {
                return Err(eio());
            }
        }
        self.file.data.lock().sync();
        Ok(())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

impl VfsFile for SimHandle {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.data.lock().len as u64)
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        if self.fault(|f| f.read_eio) {
            return Err(eio());
        }
        let data = self.file.data.lock();
        let at = usize::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if at.checked_add(buf.len()).is_none_or(|end| end > data.len) {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        // SAFETY: `at..at + buf.len()` lies inside the file's initialized bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.ptr.as_ptr().add(at), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.check_writable()?;
        let short = self.fault(|f| f.short_write);
        let len = if short { buf.len() / 2 } else { buf.len() };
        let mut data = self.file.data.lock();
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let end = at + len;
        if end > data.len {
            data.set_len(end)?;
        }
        data.mark(at, end);
        // SAFETY: `at..end` lies inside the buffer (just grown to hold it).
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), data.ptr.as_ptr().add(at), len) };
        if short { Err(eio()) } else { Ok(()) }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if self.fault(|f| f.enospc) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut data = self.file.data.lock();
        if len > data.len {
            data.set_len(len)?;
        }
        Ok(())
    }

    fn punch_hole(&self, from: u64, len: u64, _reserve: bool) -> io::Result<()> {
        self.check_writable()?;
        let mut data = self.file.data.lock();
        let from = (from as usize).min(data.len);
        let end = from.saturating_add(len as usize).min(data.len);
        data.mark(from, end);
        // SAFETY: `from..end` lies inside the file's bytes.
        unsafe { std::ptr::write_bytes(data.ptr.as_ptr().add(from), 0, end - from) };
        Ok(())
    }

    fn data_after(&self, _from: u64) -> Option<Vec<(u64, u64)>> {
        None
    }

    fn map(&self, writable: bool) -> io::Result<Box<dyn VfsMap>> {
        if writable {
            self.check_writable()?;
        }
        let mut data = self.file.data.lock();
        // A map of an empty file still needs an address.
        data.reserve(1)?;
        data.maps += 1;
        if writable {
            data.writable_maps += 1;
            data.map_written = true;
        }
        Ok(Box::new(SimMap {
            handle: SimHandle {
                disk: Arc::clone(&self.disk),
                file: Arc::clone(&self.file),
                writable,
                id: 0,
            },
            ptr: data.ptr,
            len: data.len,
        }))
    }

    fn lock(&self, kind: LockKind, wait: bool) -> io::Result<bool> {
        let mut locks = self.file.locks.lock();
        let (shared, exclusive) = &mut *locks;
        let others_shared = shared.iter().any(|&h| h != self.id);
        let others_exclusive = exclusive.is_some_and(|h| h != self.id);
        let free = match kind {
            LockKind::Exclusive => !others_shared && !others_exclusive,
            LockKind::Shared => !others_exclusive,
        };
        if !free {
            return if wait {
                // One thread: nobody could release it.
                Err(io::Error::other("a simulated lock would wait forever"))
            } else {
                Ok(false)
            };
        }
        shared.remove(&self.id);
        *exclusive = exclusive.filter(|&h| h != self.id);
        match kind {
            LockKind::Exclusive => *exclusive = Some(self.id),
            LockKind::Shared => {
                shared.insert(self.id);
            }
        }
        Ok(true)
    }

    fn unlock(&self) -> io::Result<()> {
        let mut locks = self.file.locks.lock();
        locks.0.remove(&self.id);
        if locks.1 == Some(self.id) {
            locks.1 = None;
        }
        Ok(())
    }

    fn start_writeback(&self, _from: u64, _len: u64) {}

    fn check_read(&self) -> io::Result<()> {
        if self.fault(|f| f.read_eio) {
            Err(eio())
        } else {
            Ok(())
        }
    }
}

/// A map of a simulated file: its buffer.
#[derive(Debug)]
struct SimMap {
    handle: SimHandle,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: see `FileData`: the buffer is the file's, owned while the file lives (the map
// holds the file), and accesses follow the disk's one-thread contract.
unsafe impl Send for SimMap {}
// SAFETY: as for `Send`.
unsafe impl Sync for SimMap {}

// SAFETY: the buffer stays at its address while mapped (`FileData::reserve` refuses to move
// it while `maps > 0`), is `len` bytes long, shared by every map of the file (they all point
// at it), and aligned to 4 KiB (its layout).
unsafe impl VfsMap for SimMap {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn size(&self) -> usize {
        self.len
    }

    fn flush(&self) -> io::Result<()> {
        self.handle.sync()
    }

    fn advise(&self, _advice: Advice, _from: usize, _len: usize) {}
}

impl Drop for SimMap {
    fn drop(&mut self) {
        let mut data = self.handle.file.data.lock();
        data.maps -= 1;
        if self.handle.writable {
            data.writable_maps -= 1;
        }
    }
}

/// Buffers of dropped files, kept for the next files of the same size: a simulation makes
/// and drops the same few files (index tables, segments) on every run, and glibc's `free` of
/// a block this large consolidates the heap each time.
mod spare {
    use std::alloc::{Layout, alloc, dealloc};
    use std::cell::RefCell;
    use std::io;
    use std::ptr::NonNull;

    /// Buffers kept per thread, at most.
    const KEPT: usize = 32;

    struct Spares(Vec<(NonNull<u8>, usize)>);

    impl Drop for Spares {
        fn drop(&mut self) {
            for (ptr, cap) in self.0.drain(..) {
                // SAFETY: each was allocated by `take` with this layout and is unused.
                unsafe { dealloc(ptr.as_ptr(), layout(cap)) };
            }
        }
    }

    thread_local! {
        static SPARES: RefCell<Spares> = const { RefCell::new(Spares(Vec::new())) };
    }

    fn layout(cap: usize) -> Layout {
        Layout::from_size_align(cap, 4096).expect("a page multiple")
    }

    /// A buffer of `cap` bytes (a non-zero multiple of 4 KiB), aligned to 4 KiB, its bytes
    /// unspecified.
    pub(super) fn take(cap: usize) -> io::Result<NonNull<u8>> {
        debug_assert!(cap > 0 && cap.is_multiple_of(4096));
        let kept = SPARES.with_borrow_mut(|s| {
            let at = s.0.iter().position(|&(_, c)| c == cap)?;
            Some(s.0.swap_remove(at).0)
        });
        if let Some(ptr) = kept {
            return Ok(ptr);
        }
        // SAFETY: the layout is valid and not zero-sized.
        let ptr = unsafe { alloc(layout(cap)) };
        NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    /// Gives back a buffer from [`take`].
    ///
    /// # Safety
    /// `ptr` came from `take(cap)`, is not given back yet, and nothing uses it any more.
    pub(super) unsafe fn give(ptr: NonNull<u8>, cap: usize) {
        let full = SPARES.with_borrow_mut(|s| {
            if s.0.len() < KEPT {
                s.0.push((ptr, cap));
                false
            } else {
                true
            }
        });
        if full {
            // SAFETY: the caller's promise: allocated by `take(cap)` and unused.
            unsafe { dealloc(ptr.as_ptr(), layout(cap)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(seed: u64) -> Arc<SimDisk> {
        let disk = SimDisk::new(seed, SimFaults::default());
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk
    }

    #[test]
    fn a_cut_keeps_synced_bytes_and_any_part_of_the_rest() {
        let (mut kept_all, mut lost_all) = (false, false);
        for seed in 1..200 {
            let disk = disk(seed);
            let path = Path::new("/d/f");
            let f = disk.open(path, Open::CreateNew).unwrap();
            f.write_at(&[1; 1024], 0).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            f.write_at(&[2; 1024], 1024).unwrap();
            drop(f);
            disk.power_cut();
            let after = disk.contents(path).expect("a synced name survives");
            assert_eq!(
                &after[..1024],
                &[1; 1024][..],
                "seed {seed}: synced bytes kept"
            );
            let rest = &after[1024..];
            // Unsynced sectors are kept or lost whole (torn at sector bounds), as zeros or 2s.
            for sector in rest.chunks(SECTOR) {
                assert!(sector.iter().all(|&b| b == 2) || sector.iter().all(|&b| b == 0));
            }
            kept_all |= rest == [2; 1024];
            lost_all |= rest.is_empty() || rest.iter().all(|&b| b == 0);
        }
        assert!(
            kept_all && lost_all,
            "some cuts keep the unsynced write, some lose it"
        );
    }

    #[test]
    fn a_cut_after_a_truncation_keeps_either_length_and_then_holds_still() {
        let (mut short, mut long) = (false, false);
        for seed in 1..200 {
            let disk = disk(seed);
            let path = Path::new("/d/f");
            let f = disk.open(path, Open::CreateNew).unwrap();
            f.write_at(&[1; 2048], 0).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            drop(f);
            let f = disk.open(path, Open::Truncate).unwrap();
            f.write_at(&[3; 1024], 0).unwrap();
            drop(f);
            disk.power_cut();
            let after = disk.contents(path).expect("a synced name survives");
            assert!(after.len() == 1024 || after.len() == 2048, "seed {seed}");
            for (i, sector) in after.chunks(SECTOR).enumerate() {
                let first = sector[0];
                assert!(
                    sector.iter().all(|&b| b == first),
                    "seed {seed}: torn sector"
                );
                // Before the old end: the old bytes or the new; after it, the old ones.
                assert!(
                    first == 1 || (first == 3 && i < 2),
                    "seed {seed}: sector {i}"
                );
            }
            short |= after.len() == 1024;
            long |= after.len() == 2048;
            // What a cut left is on the disk: the next cut keeps it as it is.
            disk.power_cut();
            assert_eq!(disk.contents(path).unwrap(), after, "seed {seed}");
        }
        assert!(short && long, "a cut keeps either length");
    }

    #[test]
    fn a_name_is_durable_once_its_directory_is_synced() {
        let mut vanished = false;
        for seed in 1..100 {
            let disk = disk(seed);
            let f = disk.open(Path::new("/d/new"), Open::CreateNew).unwrap();
            f.sync_data().unwrap();
            drop(f);
            disk.power_cut();
            vanished |= disk.contents(Path::new("/d/new")).is_none();

            let f = disk.open(Path::new("/d/kept"), Open::CreateNew).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            drop(f);
            disk.power_cut();
            assert!(disk.contents(Path::new("/d/kept")).is_some(), "seed {seed}");
        }
        assert!(vanished, "an unsynced creation can be lost");
    }

    #[test]
    fn a_sync_makes_what_a_map_wrote_durable() {
        let disk = disk(7);
        let f = disk.open(Path::new("/d/m"), Open::CreateNew).unwrap();
        f.allocate(3 * PAGE as u64).unwrap();
        f.sync_all().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        let map = f.map(true).unwrap();
        // SAFETY: the map is 3 pages long and this test's alone.
        unsafe { map.as_ptr().add(PAGE + 5).write(9) };
        map.flush().unwrap();
        drop((map, f));
        disk.power_cut();
        let after = disk.contents(Path::new("/d/m")).unwrap();
        assert_eq!(after.len(), 3 * PAGE);
        assert_eq!(after[PAGE + 5], 9);
        assert_eq!(after.iter().filter(|&&b| b != 0).count(), 1);
    }

    #[test]
    fn a_new_file_starts_zeroed_even_in_a_reused_buffer() {
        let disk = disk(3);
        for round in 0..4u8 {
            let path = PathBuf::from(format!("/d/{round}"));
            let f = disk.open(&path, Open::CreateNew).unwrap();
            f.allocate(2 * PAGE as u64).unwrap();
            let mut buf = vec![0xAA; 2 * PAGE];
            f.read_at(&mut buf, 0).unwrap();
            assert!(
                buf.iter().all(|&b| b == 0),
                "round {round}: a new file reads zeros"
            );
            f.write_at(&[round + 1; 2 * PAGE], 0).unwrap();
            drop(f);
            // Dropping the name drops the file: its buffer goes back for the next round.
            disk.remove_file(&path).unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
        }
    }

    #[test]
    fn a_listing_names_the_directory_s_own_files_only() {
        let disk = disk(1);
        disk.create_dir_all(Path::new("/d/sub")).unwrap();
        for p in ["/d/a", "/d/b", "/d/sub/c", "/dd"] {
            disk.open(Path::new(p), Open::CreateNew).unwrap();
        }
        let mut names = disk.list(Path::new("/d")).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(disk.list(Path::new("/nowhere")).is_err());
    }
}
