//! One segment file: its name, its header, creating it durably, and reading and appending
//! records through a memory map.
//!
//! A segment of format version 2 is created at its full size, its blocks reserved
//! (`fallocate`), so that appending never grows the file and a full disk is an error when the
//! segment is created, never a fault in the middle of a write. It is mapped whole, shared:
//! appends are copied into the map and reads are slices of it, without a system call. The
//! zeros after the last record mark the end of the records. Version 1 segments (records packed
//! back to back, the file ending with the last record) are read the same way, never written.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::vfs::{Advice, Dir, Mapped, Open, VfsFile};

/// The on-disk format version this build writes.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub(crate) const OLDEST_READABLE_VERSION: u16 = 1;
/// Length of a file header: magic (5), version u16, kind u8, segment id u64, crc32.
pub(crate) const SEGMENT_HEADER_LEN: usize = 20;
/// No segment may be longer: record locations address at most 1 GiB of a segment.
pub(crate) const MAX_SEGMENT_LEN: u64 = 1 << 30;
/// Segments the writer creates have ids that are multiples of this; compaction output takes
/// ids in the gaps, so that it sorts after its inputs and before any newer write.
pub(crate) const WRITER_ID_STRIDE: u64 = 1 << 20;
/// Appends this long or longer go through `pwrite` ([`Segment::append_at`]).
const STAGED_APPEND_MIN: usize = 16 << 10;
/// The page size the map's write protection works in (4 KiB on the systems we run on; a
/// larger page only means more appends go through `pwrite`, see [`Segment::append_at`]).
const PAGE: u64 = 4096;
/// A staging buffer larger than this is given back after use.
const STAGING_KEPT_MAX: usize = 8 << 20;

/// Where the first record of a segment of format `version` starts.
pub(crate) const fn data_start(version: u16) -> usize {
    if version == 1 {
        SEGMENT_HEADER_LEN
    } else {
        crate::record::aligned(SEGMENT_HEADER_LEN)
    }
}

/// The two kinds of files that belong to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `ID.data`: the records.
    Data,
    /// `ID.hint`: the index entries of a sealed segment, for fast open.
    Hint,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 5] {
        match self {
            FileKind::Data => b"LCSEG",
            FileKind::Hint => b"LCHNT",
        }
    }

    fn kind_byte(self) -> u8 {
        match self {
            FileKind::Data => 1,
            FileKind::Hint => 2,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            FileKind::Data => ".data",
            FileKind::Hint => ".hint",
        }
    }
}

/// The id the writer gives the first segment it creates after segment `id`.
pub(crate) fn next_writer_id(id: u64) -> u64 {
    (id / WRITER_ID_STRIDE)
        .saturating_add(1)
        .saturating_mul(WRITER_ID_STRIDE)
}

/// `before`, `id` in sixteen lowercase hex digits, then `after`: the names of segment,
/// hint and table files. Built by hand, in one allocation: a name is made at every open,
/// creation and removal of a segment, and the formatting machinery costs far more.
pub(crate) fn hex_name(before: &[&str], id: u64, after: &[&str]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let len = 16 + before.iter().chain(after).map(|s| s.len()).sum::<usize>();
    let mut name = String::with_capacity(len);
    before.iter().for_each(|s| name.push_str(s));
    for shift in (0..16).rev() {
        name.push(char::from(DIGITS[(id >> (shift * 4)) as usize & 15]));
    }
    after.iter().for_each(|s| name.push_str(s));
    name
}

/// File name of segment `id`'s file of `kind`: the id in sixteen lowercase hex digits.
pub(crate) fn file_name(id: u64, kind: FileKind) -> String {
    hex_name(&[], id, &[kind.suffix()])
}

/// Path of segment `id`'s data file inside `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    crate::vfs::join(dir, file_name(id, FileKind::Data))
}

/// Path of segment `id`'s file of `kind` inside `dir`, under its temporary name (`.tmp`
/// appended) while it is being written.
pub(crate) fn temp_path(dir: &Path, id: u64, kind: FileKind) -> PathBuf {
    crate::vfs::join(dir, hex_name(&[], id, &[kind.suffix(), ".tmp"]))
}

/// The segment id and kind of a file name, if it is one of ours; `temp` tells whether it
/// carries the temporary `.tmp` suffix.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, FileKind, bool)> {
    let (name, temp) = match name.strip_suffix(".tmp") {
        Some(n) => (n, true),
        None => (name, false),
    };
    [FileKind::Data, FileKind::Hint]
        .into_iter()
        .find_map(|kind| Some((parse_id(name.strip_suffix(kind.suffix())?)?, kind, temp)))
}

/// The id a file name spells: exactly 16 lowercase hex digits, as [`file_name`] and the
/// index's table names write them.
pub(crate) fn parse_id(digits: &str) -> Option<u64> {
    if digits.len() != 16 {
        return None;
    }
    digits.bytes().try_fold(0u64, |id, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(id << 4 | u64::from(digit))
    })
}

/// The header that starts segment `id`'s file of `kind`, in the current format version.
pub(crate) fn encode_header(id: u64, kind: FileKind) -> [u8; SEGMENT_HEADER_LEN] {
    encode_header_of_version(id, kind, FORMAT_VERSION)
}

/// The header that starts segment `id`'s file of `kind` in format `version` (a hint has its
/// segment's version).
pub(crate) fn encode_header_of_version(
    id: u64,
    kind: FileKind,
    version: u16,
) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..5].copy_from_slice(kind.magic());
    h[5..7].copy_from_slice(&version.to_le_bytes());
    h[7] = kind.kind_byte();
    h[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Validates the header of segment `id`'s file of `kind` at the start of `buf`; returns the
/// format version it was written in.
pub(crate) fn check_header(buf: &[u8], id: u64, kind: FileKind) -> Result<u16> {
    let corrupt = |reason| Error::Corrupt {
        segment: id,
        offset: 0,
        reason,
    };
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(corrupt("file header cut short"));
    }
    if &buf[..5] != kind.magic() {
        return Err(corrupt("not a logcache file of this kind (bad magic)"));
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..16]) != crc {
        return Err(corrupt("file header checksum mismatch"));
    }
    let version = u16::from_le_bytes([buf[5], buf[6]]);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            segment: id,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if buf[7] != kind.kind_byte() {
        return Err(corrupt("file header has an unknown kind"));
    }
    if u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")) != id {
        return Err(corrupt("file header names another segment id"));
    }
    Ok(version)
}

/// Deletes segment `id` for good: its data file (the deletion made durable before anything
/// else happens), then its hint file if it has one.
pub(crate) fn remove(dir: &Dir, id: u64) -> Result<()> {
    let data = path(dir, id);
    // Gone already: a process that retired or evicted the segment was killed after removing
    // the file and before freeing its row, and this is the next one to retire it.
    remove_if_present(dir, &data)?;
    sync_dir(dir)?;
    remove_if_present(dir, &dir.join(file_name(id, FileKind::Hint)))
}

fn remove_if_present(dir: &Dir, file: &Path) -> Result<()> {
    match dir.vfs().remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", file, e)),
    }
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Dir) -> Result<()> {
    dir.vfs()
        .sync_dir(dir.path())
        .context("syncing the directory", dir.path())
}

/// Bytes of records after which [`Segment::start_writeback`] starts writing them back.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// An open segment file, mapped whole.
#[derive(Debug)]
pub(crate) struct Segment {
    id: u64,
    /// The file's path, for messages.
    path: PathBuf,
    /// The format version the file was written in.
    version: u16,
    file: Box<dyn VfsFile>,
    map: Mapped,
    /// End of the records: bytes before it are immutable and readable; the writer appends
    /// after it (only to a writable version 2 segment).
    end: AtomicU64,
    /// Sealed: nothing will be appended any more, and the file is durable.
    sealed: AtomicBool,
    /// Whether a valid hint file exists for this (sealed) segment.
    has_hint: AtomicBool,
    /// How far the records reached when this process last began an fdatasync of the file:
    /// the pages before it were written back and are write-protected in the map.
    cleaned_to: AtomicU64,
    /// Up to where this process asked the kernel to start writing the file back
    /// ([`Segment::start_writeback`]).
    writeback_from: AtomicU64,
}

impl Segment {
    /// Creates segment `id` in `dir` with room for `capacity` bytes (header included): the
    /// file is reserved at its full size, its header written, and file and directory entry
    /// made durable before anything is appended, so a synced record never sits in a file a
    /// crash can lose. A full disk is [`Error::StorageFull`] here, with nothing left behind.
    pub fn create(dir: &Dir, id: u64, capacity: u64) -> Result<Segment> {
        debug_assert!(capacity <= MAX_SEGMENT_LEN);
        let path = path(dir, id);
        let file = dir
            .vfs()
            .open(&path, Open::CreateNew)
            .context("creating", &path)?;
        let created = file
            .allocate(capacity)
            .context("reserving space for", &path)
            .and_then(|()| {
                file.write_at(&encode_header(id, FileKind::Data), 0)
                    .and_then(|()| file.sync_all())
                    .context("writing the header of", &path)
            })
            .and_then(|()| sync_dir(dir))
            .and_then(|()| Segment::map(id, path.clone(), file, FORMAT_VERSION, true));
        match created {
            Ok(segment) => {
                segment.set_end(data_start(FORMAT_VERSION) as u64);
                Ok(segment)
            }
            Err(e) => {
                // Best effort: a header-only or torn file is removed by recovery anyway.
                let _ = dir.vfs().remove_file(&path);
                Err(e)
            }
        }
    }

    /// Opens the existing file of segment `id` and maps it, for appending too if `writable`.
    /// Checks its header; the end of its records is not known until the caller sets it.
    pub fn open(dir: &Dir, id: u64, writable: bool) -> Result<Segment> {
        Segment::open_with(dir, id, writable, None).map(|(segment, _)| segment)
    }

    /// [`Segment::open`], except that a damaged header (not one of another format version)
    /// is taken to be of version `if_damaged`, when given: the records carry their own
    /// checksums, so reading them does not depend on the header. Also says whether the header
    /// was damaged.
    pub fn open_with(
        dir: &Dir,
        id: u64,
        writable: bool,
        if_damaged: Option<u16>,
    ) -> Result<(Segment, bool)> {
        let path = path(dir, id);
        let how = if writable { Open::Write } else { Open::Read };
        let file = dir.vfs().open(&path, how).context("opening", &path)?;
        let len = file.size().context("reading the metadata of", &path)?;
        if len > MAX_SEGMENT_LEN.max(u64::from(u32::MAX)) {
            return Err(Error::Corrupt {
                segment: id,
                offset: MAX_SEGMENT_LEN,
                reason: "segment longer than the format allows",
            });
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let read = usize::try_from(len).map_or(0, |l| l.min(SEGMENT_HEADER_LEN));
        file.read_at(&mut header[..read], 0)
            .context("reading the header of", &path)?;
        let (version, damaged) = match (
            check_header(&header[..read], id, FileKind::Data),
            if_damaged,
        ) {
            (Ok(version), _) => (version, false),
            (Err(Error::Corrupt { .. }), Some(version))
                if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version)
                    && len >= data_start(version) as u64 =>
            {
                (version, true)
            }
            (Err(e), _) => return Err(e),
        };
        Ok((Segment::map(id, path, file, version, writable)?, damaged))
    }

    fn map(
        id: u64,
        path: PathBuf,
        file: Box<dyn VfsFile>,
        version: u16,
        writable: bool,
    ) -> Result<Segment> {
        let map = Mapped::new(file.map(writable).context("mapping", &path)?);
        // No read-ahead on faults (walks ask for it: `Segment::read_ahead`). With read-ahead the kernel fills
        // the page cache in large folios (up to 2 MiB with ext4 on Linux 6.16+), and a record
        // appended into one dirties all of it: each fdatasync of a durable write then wrote
        // 2 MiB instead of a page (1.6k durable writes/s instead of 7k). Random gets gain
        // nothing from read-ahead either. The advice is only a hint: failing it changes nothing.
        map.advise(Advice::Random, 0, map.len());
        Ok(Segment {
            id,
            path,
            version,
            file,
            map,
            end: AtomicU64::new(0),
            sealed: AtomicBool::new(!writable),
            has_hint: AtomicBool::new(false),
            cleaned_to: AtomicU64::new(0),
            writeback_from: AtomicU64::new(0),
        })
    }

    /// The whole mapped file, header and any bytes after the records included. Only for a
    /// segment nobody appends to meanwhile (recovery, before the store is shared).
    pub fn whole(&self) -> &[u8] {
        // SAFETY: the map is valid for its length for as long as `self` lives. Nothing appends
        // to the segment while the caller reads (this is called before the writer exists, or
        // on sealed segments), so the bytes do not change underneath the slice. Another program
        // truncating the file would fault on access (docs/guarantees.md).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// The segment from its start to the end of its records: immutable bytes.
    pub fn contents(&self) -> &[u8] {
        let end = self.end() as usize;
        // SAFETY: bytes before `end` were written before `end` was published (release store in
        // `append`, acquire load in `end`) and are never written again; the map outlives
        // `self`. See `whole` for files changed behind the engine's back.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), end) }
    }

    /// The bytes from `offset` to the end of the map (empty past it): where a record the
    /// index points at starts. What they hold is checked by decoding them.
    pub fn tail(&self, offset: u64) -> &[u8] {
        let whole = self.whole_shared();
        whole.get(offset as usize..).unwrap_or_default()
    }

    fn whole_shared(&self) -> &[u8] {
        // SAFETY: the map is valid for its length while `self` lives. Bytes a slot points at
        // were written before the slot was stored (release) and loaded (acquire), and are never
        // changed again; the writer only writes past the end of the records, which no slot
        // points into, and a reader only looks at bytes a slot points at.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// Writes zeros over `from..to` (bytes a writer appended without finishing its op; no
    /// slot points at them).
    pub fn zero_range(&self, from: u64, to: u64) {
        let to = to.min(self.capacity());
        if from >= to || self.is_sealed() {
            return;
        }
        // SAFETY: inside the writable map (bounded above, and only unsealed segments are mapped
        // writable); the caller holds the writer lock, and no reader looks at these bytes
        // because no slot points at them.
        unsafe {
            std::ptr::write_bytes(
                self.map.as_mut_ptr().add(from as usize),
                0,
                (to - from) as usize,
            )
        };
    }

    /// The offset of the first byte at or after `from` that is not zero, if any. Skips the
    /// holes and unwritten reserved blocks the file system reports (`SEEK_DATA`), so checking
    /// the zero tail of a preallocated segment does not read it page by page.
    pub fn first_nonzero_from(&self, from: u64) -> Option<u64> {
        let whole = self.whole();
        let len = whole.len() as u64;
        // Where the file system cannot tell, every byte is looked at.
        let extents = self
            .file
            .data_after(from)
            .unwrap_or_else(|| vec![(from, len)]);
        for (data, hole) in extents {
            let (data, hole) = (data.max(from), hole.min(len));
            if data >= hole {
                continue;
            }
            if let Some(i) = first_nonzero(&whole[data as usize..hole as usize]) {
                return Some(data + i as u64);
            }
        }
        None
    }

    /// Marks the segment sealed in this process only (it was sealed on disk already).
    pub fn seal_in_memory(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Length of the mapped file.
    pub fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes still free for records.
    pub fn room(&self) -> u64 {
        self.capacity().saturating_sub(self.end())
    }

    /// Writes the `len` bytes that `fill` writes (every one of them) at `at` (the end of the
    /// records, as the segment table says: another process may have appended since this one
    /// last looked), then makes them readable. Only the writer calls this, holding the writer lock, on a writable
    /// segment.
    ///
    /// Appends of [`STAGED_APPEND_MIN`] bytes or more (batches) are filled into `staging` and
    /// written with one `pwrite`: the kernel then fills page after page of the page cache
    /// without a page fault each, which made a bulk load 20% faster. The map sees the same
    /// page cache. Should the `pwrite` fail, the bytes are copied through the map, which is
    /// what smaller appends do.
    pub fn append_at(
        &self,
        at: u64,
        len: usize,
        staging: &mut Vec<u8>,
        fill: impl FnOnce(&mut [u8]),
    ) {
        assert!(
            !self.is_sealed() && at + len as u64 <= self.capacity(),
            "append beyond the segment"
        );
        // SAFETY: the map is writable (only writable segments are unsealed) and `at..at + len`
        // lies inside it (checked above). Only the writer, which holds the store's writer lock
        // (and the cross-process writer lock), touches bytes at or after the end of the
        // records, and no slot points there yet, so no reader looks at this range until the
        // op that appends it is applied.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at as usize), len) };
        // A page an fdatasync wrote back is write-protected in the map: a copy into it would
        // take a page fault (4-6 µs here), which `pwrite` does not. That is the first append
        // after each sync: a durable write each time.
        let on_a_cleaned_page = at
            < self
                .cleaned_to
                .load(Ordering::Acquire)
                .next_multiple_of(PAGE);
        if len < STAGED_APPEND_MIN && !on_a_cleaned_page {
            fill(dst);
        } else {
            // `fill` writes every byte (records and their padding), so what the buffer held
            // before needs no zeroing.
            if staging.len() < len {
                staging.resize(len, 0);
            }
            let bytes = &mut staging[..len];
            fill(bytes);
            if self.file.write_at(bytes, at).is_err() {
                dst.copy_from_slice(bytes);
            }
            if staging.capacity() > STAGING_KEPT_MAX {
                *staging = Vec::new();
            }
        }
        self.raise_end(at + len as u64);
    }

    /// Raises the end of the records to `end` if it is further (another process appended).
    pub fn raise_end(&self, end: u64) {
        debug_assert!(end <= self.capacity());
        // Every lookup calls this: a load keeps the cache line shared between the readers'
        // cores where a read-modify-write would bounce it.
        if self.end.load(Ordering::Acquire) < end {
            self.end.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// Sets the end of the records (after recovery found it, or a compaction wrote them).
    pub fn set_end(&self, end: u64) {
        debug_assert!(end <= self.capacity());
        self.end.store(end, Ordering::Release);
    }

    /// Makes the bytes from `from` to the end of the file read as zeros again, durably (after
    /// a torn write left something there). The blocks stay reserved.
    pub fn zero_from(&self, from: u64) -> Result<()> {
        let len = self.capacity().saturating_sub(from);
        if len == 0 {
            return Ok(());
        }
        if self.file.punch_hole(from, len, true).is_err() {
            self.file
                .write_zeros(from, self.capacity())
                .context("zeroing the torn tail of", &self.path)?;
        }
        self.file
            .sync_all()
            .context("zeroing the torn tail of", &self.path)
    }

    /// Marks the segment sealed (durable, never appended to again) and gives back the blocks
    /// reserved after its records (best effort).
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
        let keep = self.end().next_multiple_of(4096);
        if keep < self.capacity() {
            let _ = self.file.punch_hole(keep, self.capacity() - keep, false);
        }
    }

    /// Whether a valid hint file exists for this segment.
    pub fn has_hint(&self) -> bool {
        self.has_hint.load(Ordering::Acquire)
    }

    /// Records whether a valid hint file exists for this segment.
    pub fn set_has_hint(&self, has_hint: bool) {
        self.has_hint.store(has_hint, Ordering::Release);
    }

    /// Whether the segment is sealed (immutable).
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The segment id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The format version the segment was written in.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// End of the records.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Asks the kernel to read the first `len` bytes into the page cache now, in the
    /// background: for a walk over the records, which faults one page at a time otherwise
    /// (the map is advised random access). Only a hint: failing changes nothing.
    pub fn read_ahead(&self, len: u64) {
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.map.len());
        self.map.advise(Advice::WillNeed, 0, len);
    }

    /// Asks the kernel to start writing back, without waiting, the whole pages of records
    /// not yet asked for, once they reach [`WRITEBACK_CHUNK`]: the fdatasync that seals the
    /// segment (or a durable write) then finds little left to write, instead of stalling the
    /// writer for the whole segment (RocksDB's `bytes_per_sync`). Appends go after the end,
    /// never to a page asked for. Only a hint: failing changes nothing.
    pub fn start_writeback(&self) {
        let from = self.writeback_from.load(Ordering::Relaxed);
        let to = self.end() / PAGE * PAGE;
        if to < from + WRITEBACK_CHUNK {
            return;
        }
        self.writeback_from.store(to, Ordering::Relaxed);
        self.file.start_writeback(from, to - from);
    }

    /// fdatasync of the file (appends through the map included).
    pub fn sync_data(&self) -> io::Result<()> {
        self.cleaned_to.fetch_max(self.end(), Ordering::AcqRel);
        self.file.sync_data()
    }

    /// The `len` bytes at `offset`, which must lie before the end of the records.
    pub fn read(&self, offset: u64, len: usize) -> Result<&[u8]> {
        let out_of_range = || Error::Corrupt {
            segment: self.id,
            offset,
            reason: "record location beyond the end of the segment",
        };
        let end = offset.checked_add(len as u64).ok_or_else(out_of_range)?;
        let contents = self.contents();
        if end > contents.len() as u64 {
            return Err(out_of_range());
        }
        self.file
            .check_read()
            .context("reading a record of", &self.path)?;
        Ok(&contents[offset as usize..end as usize])
    }
}

/// The index of the first byte of `bytes` that is not zero, looking at 64 bytes at a time.
pub(crate) fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(64);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let folded = chunk.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
        });
        if folded != 0 {
            return chunk.iter().position(|&b| b != 0).map(|i| at + i);
        }
        at += 64;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(
            file_name(0x10_0000, FileKind::Data),
            "0000000000100000.data"
        );
        assert_eq!(file_name(7, FileKind::Hint), "0000000000000007.hint");
        for kind in [FileKind::Data, FileKind::Hint] {
            for id in [7, u64::MAX, 0x0123_4567_89ab_cdef] {
                assert_eq!(
                    parse_file_name(&file_name(id, kind)),
                    Some((id, kind, false))
                );
                let formatted = format!("{id:016x}{}", kind.suffix());
                assert_eq!(file_name(id, kind), formatted);
                assert_eq!(
                    path(Path::new("/d"), id),
                    Path::new("/d").join(format!("{id:016x}.data"))
                );
                let temp = temp_path(Path::new(""), id, kind);
                let temp = temp.to_str().unwrap();
                assert_eq!(parse_file_name(temp), Some((id, kind, true)));
            }
        }
        for name in [
            "LOCK",
            ".data",
            "7.data",
            "000000000007.data",
            "000000000000000A.data",
            "0000000000000007.data.bak",
            "0000000000000007.datax",
            "-000000000000007.data",
            "+000000000000007.data",
            "00000000000000007.data",
            "0x00000000000007.data",
            "000000000000000g.data",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn removing_a_segment_whose_file_is_gone_is_done() {
        // A process killed after removing the file, before freeing its row: the next one to
        // retire the segment finds nothing to remove.
        let tmp = tempfile::tempdir().unwrap();
        let dir = &Dir::real(tmp.path());
        drop(Segment::create(dir, 7, 4096).unwrap());
        remove(dir, 7).unwrap();
        assert!(!dir.exists(&path(dir, 7)));
        remove(dir, 7).unwrap();
    }

    #[test]
    fn writer_ids_leave_gaps_for_compaction() {
        assert_eq!(next_writer_id(0), WRITER_ID_STRIDE);
        assert_eq!(next_writer_id(WRITER_ID_STRIDE), 2 * WRITER_ID_STRIDE);
        assert_eq!(next_writer_id(WRITER_ID_STRIDE + 5), 2 * WRITER_ID_STRIDE);
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_header(9, FileKind::Data);
        check_header(&h, 9, FileKind::Data).unwrap();
        let wrong_kind = check_header(&h, 9, FileKind::Hint);
        assert!(matches!(wrong_kind, Err(Error::Corrupt { .. })));
        let wrong_id = check_header(&h, 8, FileKind::Data);
        assert!(matches!(wrong_id, Err(Error::Corrupt { .. })));
        let short = check_header(&h[..10], 9, FileKind::Data);
        assert!(matches!(short, Err(Error::Corrupt { .. })));
        let mut bad = h;
        bad[0] = b'X';
        let bad_magic = check_header(&bad, 9, FileKind::Data);
        assert!(matches!(bad_magic, Err(Error::Corrupt { .. })));
        let mut newer = h;
        newer[5..7].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&newer[..16]);
        newer[16..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&newer, 9, FileKind::Data),
            Err(Error::UnsupportedVersion { found, .. }) if found == FORMAT_VERSION + 1
        ));
        let v1 = encode_header_of_version(9, FileKind::Data, 1);
        assert_eq!(
            check_header(&v1, 9, FileKind::Data).unwrap(),
            1,
            "still read"
        );
    }

    #[test]
    fn writeback_starts_per_chunk_of_whole_pages_and_never_at_the_end_page() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(&Dir::real(dir.path()), 1, 3 * WRITEBACK_CHUNK).unwrap();
        let mut staging = Vec::new();
        let append = |len: u64, staging: &mut Vec<u8>| {
            seg.append_at(seg.end(), len as usize, staging, |buf| buf.fill(7));
        };
        append(WRITEBACK_CHUNK - 4096, &mut staging);
        seg.start_writeback();
        assert_eq!(
            seg.writeback_from.load(Ordering::Relaxed),
            0,
            "below a chunk"
        );
        append(4096 + 100, &mut staging);
        seg.start_writeback();
        let from = seg.writeback_from.load(Ordering::Relaxed);
        assert_eq!(from, seg.end() / PAGE * PAGE, "whole pages only");
        assert!(from < seg.end(), "the page appends go on in is left alone");
        append(PAGE, &mut staging);
        seg.start_writeback();
        assert_eq!(seg.writeback_from.load(Ordering::Relaxed), from);
        let bytes = seg.whole()[from as usize - 8..seg.end() as usize].to_vec();
        assert!(bytes.iter().all(|&b| b == 7), "the records are untouched");
    }

    #[test]
    fn appends_are_read_back_through_the_map_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(&Dir::real(dir.path()), 1, 4096).unwrap();
        assert_eq!(seg.capacity(), 4096, "created at its full size");
        let start = data_start(FORMAT_VERSION) as u64;
        assert_eq!(seg.end(), start);
        let at = seg.end();
        seg.append_at(at, 16, &mut Vec::new(), |buf| {
            buf.copy_from_slice(b"hello world, you")
        });
        assert_eq!(at, start);
        assert_eq!(seg.read(at, 5).unwrap(), b"hello");
        assert!(matches!(seg.read(at, 100), Err(Error::Corrupt { .. })));
        assert!(matches!(seg.read(u64::MAX, 2), Err(Error::Corrupt { .. })));
        assert_eq!(seg.room(), 4096 - start - 16);
        seg.sync_data().unwrap();
        seg.seal();
        assert!(seg.is_sealed());
        drop(seg);
        let again = Segment::open(&Dir::real(dir.path()), 1, false).unwrap();
        assert_eq!(again.version(), FORMAT_VERSION);
        assert_eq!(&again.whole()[start as usize..start as usize + 5], b"hello");
        assert!(
            again.whole()[(start + 16) as usize..]
                .iter()
                .all(|&b| b == 0),
            "the rest reads as zeros"
        );
        assert!(
            Segment::create(&Dir::real(dir.path()), 1, 4096).is_err(),
            "ids are never reused"
        );
    }

    #[test]
    fn large_appends_go_through_the_staging_buffer_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(&Dir::real(dir.path()), 1, 1 << 20).unwrap();
        let mut staging = vec![0xEE; 3 * STAGED_APPEND_MIN];
        let first = seg.end();
        let len = STAGED_APPEND_MIN + 8;
        seg.append_at(first, len, &mut staging, |buf| {
            assert_eq!(buf.len(), len);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
        });
        // A small one goes through the map, right after.
        let second = first + len as u64;
        seg.append_at(second, 16, &mut staging, |buf| buf.fill(5));
        assert_eq!(seg.end(), second + 16);
        let read = seg.read(first, len).unwrap();
        assert!(read.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(seg.read(second, 16).unwrap(), &[5; 16]);
        let after = seg.whole()[(second + 16) as usize..].to_vec();
        assert!(after.iter().all(|&b| b == 0), "nothing beyond the appends");
        let reopened = std::fs::read(path(dir.path(), 1)).unwrap();
        assert_eq!(&reopened[first as usize..first as usize + len], read);

        // After an fdatasync, a small append to the page it cleaned goes through `pwrite`
        // too, and reads back as exactly.
        seg.sync_data().unwrap();
        let third = seg.end();
        staging.fill(0xEE);
        seg.append_at(third, 24, &mut staging, |buf| buf.fill(9));
        assert_eq!(seg.read(third, 24).unwrap(), &[9; 24]);
        assert_eq!(
            seg.read(second, 16).unwrap(),
            &[5; 16],
            "the bytes before stay"
        );
        let after = seg.whole()[(third + 24) as usize..].to_vec();
        assert!(after.iter().all(|&b| b == 0), "nothing beyond the append");
    }

    #[test]
    fn zeroing_a_torn_tail_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(&Dir::real(dir.path()), 1, 8192).unwrap();
        let at = seg.end();
        seg.append_at(at, 5000, &mut Vec::new(), |buf| buf.fill(7));
        seg.zero_from(at + 8).unwrap();
        let whole = seg.whole();
        assert!(whole[at as usize..at as usize + 8].iter().all(|&b| b == 7));
        assert!(whole[at as usize + 8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_first_nonzero_byte_is_found_across_holes_and_written_pages() {
        let dir = tempfile::tempdir().unwrap();
        let len = 1 << 20;
        let seg = Segment::create(&Dir::real(dir.path()), 1, len).unwrap();
        let start = data_start(FORMAT_VERSION) as u64;
        assert_eq!(
            seg.first_nonzero_from(start),
            None,
            "reserved, never written"
        );
        for at in [start, 4095, 4096, 70_001, len - 1] {
            let seg = Segment::create(&Dir::real(dir.path()), at + 2, len).unwrap();
            // A byte written through the file, as a page that reached the disk.
            seg.file.write_at(&[9], at).unwrap();
            assert_eq!(seg.first_nonzero_from(start.min(at)), Some(at), "{at}");
            assert_eq!(seg.first_nonzero_from(at + 1), None, "{at}");
        }
        assert_eq!(first_nonzero(&[0; 200]), None);
        let mut bytes = [0u8; 200];
        bytes[131] = 1;
        assert_eq!(first_nonzero(&bytes), Some(131));
        bytes[199] = 1;
        bytes[131] = 0;
        assert_eq!(first_nonzero(&bytes), Some(199));
    }
}
