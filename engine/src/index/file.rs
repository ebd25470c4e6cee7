//! The two files of the shared index, mapped into every process that opens the store.
//!
//! `INDEX` (4 KiB) names the current table file and says whether the index can be trusted
//! after a restart. `INDEX.<generation>` holds everything else: a header with the counters,
//! the state of the write in progress and the hash seed, the segment table, the op log, and
//! the slots. Growing the index writes a new table file and then switches `INDEX` to it. Every
//! field that changes while the store is open is read and written as an aligned atomic, so
//! processes share the map without locks for reading. docs/format.md gives the layout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::index::slot::{BUCKET_BITS, BUCKET_SLOTS, MAX_REGION_BITS};
use crate::segment::{self, FORMAT_VERSION};
use crate::vfs::{Dir, Mapped, Open, VfsFile};

/// Name of the file that names the current table file.
pub(crate) const POINTER_FILE: &str = "INDEX";

/// Where a pointer file is made before it replaces `INDEX`.
pub(crate) fn pending_path(dir: &Path) -> PathBuf {
    dir.join(format!("{POINTER_FILE}.tmp"))
}
pub(crate) const PAGE: usize = 4096;
const POINTER_MAGIC: &[u8; 5] = b"LCIDX";
const TABLE_MAGIC: &[u8; 5] = b"LCTAB";

/// File name of table generation `generation`.
pub(crate) fn table_name(generation: u64) -> String {
    segment::hex_name(&[POINTER_FILE, "."], generation, &[])
}

/// The generation a file name belongs to, if it is a table file's.
pub(crate) fn parse_table_name(name: &str) -> Option<u64> {
    crate::segment::parse_id(name.strip_prefix(POINTER_FILE)?.strip_prefix('.')?)
}

/// An aligned `u64` inside a map, as an atomic.
///
/// # Safety
/// `map` must be at least `at + 8` bytes long and `at` a multiple of 8; every access to these
/// bytes, in any process, must be atomic.
unsafe fn atomic_at(map: &Mapped, at: usize) -> &AtomicU64 {
    debug_assert!(at.is_multiple_of(8) && at + 8 <= map.len());
    // SAFETY: the caller guarantees bounds and alignment (the map itself is page-aligned);
    // the map lives as long as the returned reference's borrow of it, and all accesses to
    // these bytes are atomic, so no data race arises.
    unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(at).cast::<u64>()) }
}

fn create_mapped(dir: &Dir, path: &Path, len: u64) -> Result<(Box<dyn VfsFile>, Mapped)> {
    let file = dir
        .vfs()
        .open(path, Open::Truncate)
        .context("creating", path)?;
    file.allocate(len).context("reserving space for", path)?;
    let map = file.map(true).context("mapping", path)?;
    Ok((file, Mapped::new(map)))
}

fn open_mapped(dir: &Dir, path: &Path, writable: bool) -> Result<(Box<dyn VfsFile>, Mapped)> {
    let how = if writable { Open::Write } else { Open::Read };
    let file = dir.vfs().open(path, how).context("opening", path)?;
    let map = file.map(writable).context("mapping", path)?;
    Ok((file, Mapped::new(map)))
}

fn static_header(magic: &[u8; 5], kind: u8, fields: &[u64]) -> Vec<u8> {
    let mut h = magic.to_vec();
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.push(kind);
    for f in fields {
        h.extend_from_slice(&f.to_le_bytes());
    }
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&u64::from(crc).to_le_bytes());
    h
}

/// Checks a static header written by [`static_header`] with `n` fields; returns them.
fn check_static_header(
    bytes: &[u8],
    magic: &[u8; 5],
    kind: u8,
    n: usize,
) -> std::result::Result<Vec<u64>, &'static str> {
    let len = 8 + 8 * n + 8;
    let bytes = bytes.get(..len).ok_or("index file cut short")?;
    if &bytes[..5] != magic || bytes[7] != kind {
        return Err("not an index file of this kind (bad magic)");
    }
    let crc = u64::from_le_bytes(bytes[len - 8..].try_into().expect("8 bytes"));
    if u64::from(crc32fast::hash(&bytes[..len - 8])) != crc {
        return Err("index header checksum mismatch");
    }
    if u16::from_le_bytes([bytes[5], bytes[6]]) != FORMAT_VERSION {
        return Err("index of another format version");
    }
    Ok((0..n)
        .map(|i| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes")))
        .collect())
}

/// `INDEX`: which table file is current, and whether the index survived the last restart.
#[derive(Debug)]
pub(crate) struct PointerFile {
    path: PathBuf,
    _file: Box<dyn VfsFile>,
    map: Mapped,
}

/// Offsets of the pointer file's fields (after its 24-byte static header).
mod pointer {
    /// The current table generation.
    pub const GENERATION: usize = 64;
    /// 1 when the index was last closed cleanly (synced, matching the segments); 0 while
    /// anyone may have changed it since.
    pub const CLEAN: usize = 72;
    /// The boot during which the index was last changed: 16 bytes, two words.
    pub const BOOT: usize = 80;
}

impl PointerFile {
    /// Creates a pointer file naming `generation` under a temporary name, which the next open
    /// removes: it replaces `INDEX` only once [`PointerFile::install`]ed.
    pub fn create_pending(dir: &Dir, generation: u64) -> Result<PointerFile> {
        let temp = pending_path(dir);
        let (file, map) = create_mapped(dir, &temp, PAGE as u64)?;
        file.write_at(&static_header(POINTER_MAGIC, 3, &[]), 0)
            .context("writing", &temp)?;
        let pointer = PointerFile {
            path: temp,
            _file: file,
            map,
        };
        pointer.set_generation(generation);
        Ok(pointer)
    }

    /// Makes this pointer `INDEX`, durably (it is synced first).
    pub fn install(&mut self, dir: &Dir) -> Result<()> {
        let path = dir.join(POINTER_FILE);
        if self.path == path {
            return Ok(());
        }
        self.sync()?;
        dir.vfs()
            .rename(&self.path, &path)
            .context("renaming", &self.path)?;
        segment::sync_dir(dir)?;
        self.path = path;
        Ok(())
    }

    /// Opens the pointer file; `None` if there is none.
    pub fn open(dir: &Dir, writable: bool) -> Result<Option<PointerFile>> {
        let path = dir.join(POINTER_FILE);
        if !dir.exists(&path) {
            return Ok(None);
        }
        let (file, map) = open_mapped(dir, &path, writable)?;
        let pointer = PointerFile {
            path,
            _file: file,
            map,
        };
        if pointer.map.len() < PAGE {
            return Ok(None);
        }
        // SAFETY: the map is at least a page long and lives as long as `pointer`; the static
        // header is written once, before the file is renamed into place, and never changed.
        let head = unsafe { std::slice::from_raw_parts(pointer.map.as_ptr(), 24) };
        if check_static_header(head, POINTER_MAGIC, 3, 0).is_err() {
            return Ok(None);
        }
        Ok(Some(pointer))
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: every offset used is a constant of `pointer`, aligned and inside the page;
        // these words are only ever accessed through atomics.
        unsafe { atomic_at(&self.map, at) }
    }

    /// The current table generation.
    pub fn generation(&self) -> u64 {
        self.word(pointer::GENERATION).load(Ordering::Acquire)
    }

    /// Makes `generation` the current table.
    pub fn set_generation(&self, generation: u64) {
        self.word(pointer::GENERATION)
            .store(generation, Ordering::Release);
    }

    /// Whether the index was closed cleanly and nobody has changed it since.
    pub fn is_clean(&self) -> bool {
        self.word(pointer::CLEAN).load(Ordering::Acquire) == 1
    }

    /// The boot during which the index was last changed.
    pub fn boot(&self) -> [u64; 2] {
        [
            self.word(pointer::BOOT).load(Ordering::Acquire),
            self.word(pointer::BOOT + 8).load(Ordering::Acquire),
        ]
    }

    /// Marks the index as changing during `boot` (before the first change after a clean
    /// close).
    pub fn mark_dirty(&self, boot: [u64; 2]) {
        self.word(pointer::BOOT).store(boot[0], Ordering::Release);
        self.word(pointer::BOOT + 8)
            .store(boot[1], Ordering::Release);
        self.word(pointer::CLEAN).store(0, Ordering::Release);
    }

    /// Marks the index clean (after it and the segments were synced).
    pub fn mark_clean(&self) -> Result<()> {
        self.word(pointer::CLEAN).store(1, Ordering::Release);
        self.sync()
    }

    /// Writes the pointer file through to disk.
    pub fn sync(&self) -> Result<()> {
        self.map.flush().context("syncing", &self.path)
    }
}

/// Offsets of a table file's header fields. The static part (magic, version, kind, then
/// generation, seed, region bits, segment capacity and op log capacity, then a CRC) is written
/// once; the rest are atomics, grouped by who writes them how often.
pub(crate) mod header {
    /// Live keys (slots in use).
    pub const KEYS: usize = 128;
    /// Slots whose records carry an expiry.
    pub const EXPIRING: usize = 136;
    /// Keys evicted to honour the size limit, ever.
    pub const EVICTIONS: usize = 144;
    /// Bytes appended to the log, ever: the position a sync makes durable.
    pub const APPENDED: usize = 152;
    /// The log position known durable.
    pub const SYNCED: usize = 160;
    /// The id the writer gives the next segment it creates.
    pub const NEXT_WRITER_ID: usize = 168;
    /// The number of the segment the writer appends to (0: none).
    pub const ACTIVE: usize = 176;
    /// Compactions completed, ever.
    pub const COMPACTIONS: usize = 184;
    /// The op log's state: what the writer is doing (see `oplog`).
    pub const OP_STATE: usize = 256;
    /// Entries in the op log.
    pub const OP_ENTRIES: usize = 264;
    /// Counter snapshots in the op log.
    pub const OP_SNAPSHOTS: usize = 272;
    /// The segment number the op appends to.
    pub const OP_SEGMENT: usize = 280;
    /// Where its records start.
    pub const OP_START: usize = 288;
    /// Where they end.
    pub const OP_END: usize = 296;
    /// `KEYS` before the op.
    pub const OP_KEYS_BEFORE: usize = 304;
    /// `EXPIRING` before the op.
    pub const OP_EXPIRING_BEFORE: usize = 312;
    /// `APPENDED` once the op is done.
    pub const OP_APPENDED_AFTER: usize = 320;
    /// Odd while a write of several records is being applied (readers retry around it).
    pub const BATCH_SEQUENCE: usize = 384;
    /// Incremented by every change of a counter kept for the typed layer.
    pub const COUNTER_CHANGES: usize = 448;
}

/// One row of the segment table: 64 bytes.
pub(crate) mod row {
    pub const LEN: usize = 64;
    /// The segment's id (its file name).
    pub const ID: usize = 0;
    /// `FREE`, `ACTIVE` or `SEALED`.
    pub const STATE: usize = 8;
    /// End of its records.
    pub const END: usize = 16;
    /// Bytes of its records the index points at.
    pub const LIVE: usize = 24;
    /// Its file's length when the row was made.
    pub const CAPACITY: usize = 32;
    /// Its format version (low 16 bits) and whether it has a hint file (bit 16).
    pub const VERSION_AND_FLAGS: usize = 40;
    /// How far its records were made durable by an fdatasync, as far as this process knows
    /// (0: unknown). Only ever raised, after the fdatasync returned, so that whatever value
    /// reaches the disk is a durable length: a rebuild after a power cut knows that damage
    /// before it is not a torn write.
    pub const SYNCED: usize = 48;

    pub const FREE: u64 = 0;
    pub const ACTIVE: u64 = 1;
    pub const SEALED: u64 = 2;
    pub const HAS_HINT: u64 = 1 << 16;
}

/// Bytes of one op log entry and of one counter snapshot.
pub(crate) const OP_ENTRY_LEN: usize = 32;
pub(crate) const SNAPSHOT_LEN: usize = 16;

/// The shape of a table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The table has `2^region_bits` regions.
    pub region_bits: u32,
    /// Rows of the segment table.
    pub segments: u32,
    /// Entries the op log holds.
    pub op_entries: u32,
}

impl Shape {
    /// Snapshots the op log holds: two per entry (the old and the new location's segment)
    /// and one spare.
    pub fn op_snapshots(&self) -> usize {
        2 * self.op_entries as usize + 1
    }

    fn segments_at(&self) -> usize {
        PAGE
    }

    fn op_log_at(&self) -> usize {
        self.segments_at() + self.segments as usize * row::LEN
    }

    fn snapshots_at(&self) -> usize {
        self.op_log_at() + self.op_entries as usize * OP_ENTRY_LEN
    }

    fn slots_at(&self) -> usize {
        (self.snapshots_at() + self.op_snapshots() * SNAPSHOT_LEN).next_multiple_of(PAGE)
    }

    /// Slots of the table.
    pub fn slots(&self) -> usize {
        (1usize << (self.region_bits + BUCKET_BITS)) * BUCKET_SLOTS
    }

    /// Length of the file.
    pub fn file_len(&self) -> u64 {
        (self.slots_at() + self.slots() * 8) as u64
    }
}

/// One generation of the table, mapped.
#[derive(Debug)]
pub(crate) struct TableFile {
    path: PathBuf,
    _file: Box<dyn VfsFile>,
    map: Mapped,
    generation: u64,
    seed: u64,
    shape: Shape,
    /// `shape.slots_at()`, worked out once: every lookup needs it.
    slots_at: usize,
}

impl TableFile {
    /// Creates table file `generation` of `shape`, all zero but for its static header.
    pub fn create(dir: &Dir, generation: u64, seed: u64, shape: Shape) -> Result<TableFile> {
        assert!(shape.region_bits <= MAX_REGION_BITS);
        let path = dir.join(table_name(generation));
        let (file, map) = create_mapped(dir, &path, shape.file_len())?;
        let fields = [
            generation,
            seed,
            u64::from(shape.region_bits),
            u64::from(shape.segments),
            u64::from(shape.op_entries),
        ];
        file.write_at(&static_header(TABLE_MAGIC, 4, &fields), 0)
            .context("writing", &path)?;
        Ok(TableFile {
            path,
            _file: file,
            map,
            generation,
            seed,
            shape,
            slots_at: shape.slots_at(),
        })
    }

    /// Opens the table file `pointer` names, trying again if another process grows the index
    /// meanwhile (and removes the file named a moment ago).
    pub fn open_current(dir: &Dir, pointer: &PointerFile, writable: bool) -> Result<TableFile> {
        loop {
            let generation = pointer.generation();
            match TableFile::open(dir, generation, writable) {
                Ok(table) => return Ok(table),
                Err(_) if pointer.generation() != generation => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens table file `generation`; an error if it is missing, of another version, or its
    /// header or length is not what a table file has.
    pub fn open(dir: &Dir, generation: u64, writable: bool) -> Result<TableFile> {
        let path = dir.join(table_name(generation));
        let (file, map) = open_mapped(dir, &path, writable)?;
        let bad = |reason: &'static str| Error::BadIndex {
            path: path.clone(),
            reason,
        };
        if map.len() < PAGE {
            return Err(bad("index file cut short"));
        }
        // SAFETY: the map is at least a page long and lives until the end of this function's
        // use of `head`; the static header is written once, before the table is used.
        let head = unsafe { std::slice::from_raw_parts(map.as_ptr(), PAGE) };
        let fields = check_static_header(head, TABLE_MAGIC, 4, 5).map_err(bad)?;
        let narrow = |v: u64| u32::try_from(v).map_err(|_| bad("index shape out of range"));
        let shape = Shape {
            region_bits: narrow(fields[2])?,
            segments: narrow(fields[3])?,
            op_entries: narrow(fields[4])?,
        };
        if fields[0] != generation {
            return Err(bad("index file of another generation"));
        }
        if shape.region_bits > MAX_REGION_BITS
            || shape.segments == 0
            || shape.segments > 1 << 16
            || shape.op_entries == 0
            || shape.op_entries > 1 << 24
            || (map.len() as u64) < shape.file_len()
        {
            return Err(bad("index shape out of range"));
        }
        Ok(TableFile {
            path,
            _file: file,
            map,
            generation,
            seed: fields[1],
            shape,
            slots_at: shape.slots_at(),
        })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This table's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The seed of the key hash.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// A header word (an offset of [`header`]).
    pub fn word(&self, at: usize) -> &AtomicU64 {
        assert!((64..PAGE).contains(&at));
        // SAFETY: `at` is a constant of `header`: aligned, inside the header page, past the
        // static header, and only ever accessed through atomics.
        unsafe { atomic_at(&self.map, at) }
    }

    /// Field `field` (an offset of [`row`]) of segment table row `number`.
    pub fn row(&self, number: u32, field: usize) -> &AtomicU64 {
        assert!(number >= 1 && number <= self.shape.segments && field < row::LEN);
        let at = self.shape.segments_at() + (number as usize - 1) * row::LEN + field;
        // SAFETY: rows lie inside the file (its length was checked against the shape); the
        // offset is aligned; rows are only accessed through atomics.
        unsafe { atomic_at(&self.map, at) }
    }

    /// Word `word` (0..4) of op log entry `i`.
    pub fn op_entry(&self, i: usize, word: usize) -> &AtomicU64 {
        assert!(i < self.shape.op_entries as usize && word < OP_ENTRY_LEN / 8);
        let at = self.shape.op_log_at() + i * OP_ENTRY_LEN + word * 8;
        // SAFETY: inside the op log region (checked against the shape), aligned, atomic only.
        unsafe { atomic_at(&self.map, at) }
    }

    /// Word `word` (0..2) of counter snapshot `i`.
    pub fn snapshot(&self, i: usize, word: usize) -> &AtomicU64 {
        assert!(i < self.shape.op_snapshots() && word < SNAPSHOT_LEN / 8);
        let at = self.shape.snapshots_at() + i * SNAPSHOT_LEN + word * 8;
        // SAFETY: inside the snapshot region, aligned, atomic only.
        unsafe { atomic_at(&self.map, at) }
    }

    /// Slot `i` of the table.
    #[inline]
    pub fn slot(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.shape.slots());
        // SAFETY: `i` is below the table's slot count (every caller computes it from the
        // shape), so the slot lies inside the file; aligned; slots are atomic only.
        unsafe { atomic_at(&self.map, self.slots_at + i * 8) }
    }

    /// Asks the CPU to bring slot `i`'s cache line in, for a read soon after (a hint only:
    /// it never faults and changes nothing).
    pub fn prefetch_slot(&self, i: usize) {
        debug_assert!(i < self.shape.slots());
        let at = self.map.as_ptr().wrapping_add(self.slots_at + i * 8);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never dereferences in a way that can fault, and
        // `at` lies inside the map anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Writes the whole table file through to disk.
    pub fn sync(&self) -> Result<()> {
        self.map.flush().context("syncing", &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(table_name(0x2a), "INDEX.000000000000002a");
        assert_eq!(parse_table_name(&table_name(u64::MAX)), Some(u64::MAX));
        for name in [
            "INDEX",
            "INDEX.tmp",
            "INDEX.2a",
            "INDEX.000000000000002A",
            "x.0000000000000001",
        ] {
            assert_eq!(parse_table_name(name), None, "{name}");
        }
    }

    #[test]
    fn a_table_file_opens_with_its_shape_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape {
            region_bits: 1,
            segments: 16,
            op_entries: 64,
        };
        let table = TableFile::create(&Dir::real(dir.path()), 3, 99, shape).unwrap();
        table.slot(shape.slots() - 1).store(7, Ordering::Release);
        table.row(16, row::LIVE).store(5, Ordering::Release);
        drop(table);
        let table = TableFile::open(&Dir::real(dir.path()), 3, true).unwrap();
        assert_eq!((table.shape(), table.seed()), (shape, 99));
        assert_eq!(table.slot(shape.slots() - 1).load(Ordering::Acquire), 7);
        assert_eq!(table.row(16, row::LIVE).load(Ordering::Acquire), 5);
        drop(table);
        let path = dir.path().join(table_name(3));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            TableFile::open(&Dir::real(dir.path()), 3, true),
            Err(Error::BadIndex { .. })
        ));
        assert!(
            TableFile::open(&Dir::real(dir.path()), 4, true).is_err(),
            "missing"
        );
    }

    #[test]
    fn the_pointer_file_names_the_generation_and_keeps_the_clean_flag() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            PointerFile::open(&Dir::real(dir.path()), true)
                .unwrap()
                .is_none()
        );
        let mut pointer = PointerFile::create_pending(&Dir::real(dir.path()), 5).unwrap();
        assert!(
            PointerFile::open(&Dir::real(dir.path()), true)
                .unwrap()
                .is_none(),
            "pending: not INDEX yet"
        );
        pointer.install(&Dir::real(dir.path())).unwrap();
        assert!(!pointer.is_clean());
        pointer.mark_dirty([1, 2]);
        pointer.mark_clean().unwrap();
        drop(pointer);
        let pointer = PointerFile::open(&Dir::real(dir.path()), true)
            .unwrap()
            .unwrap();
        assert_eq!(pointer.generation(), 5);
        assert!(pointer.is_clean());
        assert_eq!(pointer.boot(), [1, 2]);
    }
}
