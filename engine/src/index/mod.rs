//! The shared, persistent index: a hash table in memory-mapped files of the store directory,
//! from each key to its newest record, with the segment table and the counters beside it.
//!
//! [`Index`] is one process's view: the maps of the current table file and of every segment
//! it has needed. Reads take no lock: a slot is one atomic word, stored only after the record
//! it points at is complete. Changes are planned ([`plan`]) and then carried out through the op
//! log ([`op`]), which lets whoever writes next finish a change its writer did not.

pub(crate) mod file;
pub(crate) mod op;
pub(crate) mod plan;
pub(crate) mod slot;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::index::file::{PointerFile, Shape, TableFile, header, row};
use crate::index::slot::{BUCKET_BITS, BUCKET_SLOTS, KeyHash, Location};
use crate::record::{self, Record};
use crate::segment::Segment;
use crate::vfs::Dir;

/// A record an index slot points at, found for a key.
pub(crate) struct Found<'a> {
    /// The record, verified (checksum, and the key asked for).
    pub record: Record<'a>,
    /// Where it lies.
    pub at: Location,
    /// The segment it lies in.
    pub segment: &'a Arc<Segment>,
}

/// One process's view of the shared index.
#[derive(Debug)]
pub(crate) struct Index {
    dir: Dir,
    pointer: PointerFile,
    table: ArcSwap<TableFile>,
    /// The segments this process has mapped, by number.
    segments: RwLock<Vec<Option<Arc<Segment>>>>,
    /// False in a read-only store: every file is mapped read-only.
    writable: bool,
}

/// The slot positions of a key's two buckets: `[home, alternative]`, each the index of the
/// bucket's first slot.
pub(crate) fn buckets(table: &TableFile, h: KeyHash) -> [usize; 2] {
    let region = slot::region(h.tag, table.shape().region_bits) as usize;
    let base = region << BUCKET_BITS;
    [h.bucket, slot::alternative(h.bucket, h.tag)]
        .map(|bucket| (base + bucket as usize) * BUCKET_SLOTS)
}

impl Index {
    /// An index over `table`, named by `pointer`.
    pub fn new(dir: &Dir, pointer: PointerFile, table: TableFile) -> Index {
        Index {
            dir: dir.clone(),
            pointer,
            table: ArcSwap::from_pointee(table),
            segments: RwLock::new(Vec::new()),
            writable: true,
        }
    }

    /// An index over `table` that maps every file read-only and changes nothing.
    pub fn read_only(dir: &Dir, pointer: PointerFile, table: TableFile) -> Index {
        Index {
            writable: false,
            ..Index::new(dir, pointer, table)
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The pointer file.
    pub fn pointer(&self) -> &PointerFile {
        &self.pointer
    }

    /// Makes a pointer made with [`PointerFile::create_pending`] the store's `INDEX`.
    pub fn install_pointer(&mut self) -> Result<()> {
        self.pointer.install(&self.dir)
    }

    /// The current table.
    pub fn table(&self) -> arc_swap::Guard<Arc<TableFile>> {
        self.table.load()
    }

    /// Makes `table` the current table (after growing).
    pub fn replace_table(&self, table: TableFile) {
        self.pointer.set_generation(table.generation());
        self.table.store(Arc::new(table));
    }

    /// A header counter of the current table.
    pub fn counter(&self, at: usize) -> u64 {
        self.table().word(at).load(Ordering::Acquire)
    }

    /// Maps the table `INDEX` names now, if another process grew the index since this one
    /// looked. Every lookup and every write starts with this (one atomic load when nothing
    /// changed), so a write another process made is seen by the next lookup.
    pub fn refresh(&self) -> Result<()> {
        self.current_table().map(drop)
    }

    /// The current table: [`Index::table`] after [`Index::refresh`], with one load.
    pub fn current_table(&self) -> Result<arc_swap::Guard<Arc<TableFile>>> {
        let table = self.table();
        if self.pointer.generation() == table.generation() {
            return Ok(table);
        }
        drop(table);
        let table = TableFile::open_current(&self.dir, &self.pointer, self.writable)?;
        self.table.store(Arc::new(table));
        Ok(self.table())
    }

    /// [`Index::current_table`] for the reads that cannot fail (`len`, `keys`, `stats`): another
    /// store may have grown the index since this one looked. If the new table cannot be
    /// mapped, the one this store has (the state before the growth).
    pub fn current_table_or_mapped(&self) -> arc_swap::Guard<Arc<TableFile>> {
        self.current_table().unwrap_or_else(|_| self.table())
    }

    /// The mapped segment `number`, mapping it if this process has not yet, or if the row
    /// now names another segment (rows are reused once a segment is deleted).
    pub fn segment(&self, number: u32) -> Result<Arc<Segment>> {
        self.segment_in(&self.table(), number)
    }

    /// [`Index::segment`], its row read from `table` (the current one, or one just replaced).
    pub fn segment_in(&self, table: &TableFile, number: u32) -> Result<Arc<Segment>> {
        self.with_segment(table, number, Arc::clone)
    }

    /// Runs `f` on segment `number` ([`Index::segment_in`]) without taking a reference of its
    /// own when this process has it mapped already (the read path: no reference count to
    /// raise and lower). No segment is mapped or dropped by this process meanwhile.
    pub fn with_segment<T>(
        &self,
        table: &TableFile,
        number: u32,
        f: impl FnOnce(&Arc<Segment>) -> T,
    ) -> Result<T> {
        if number == 0 || number > table.shape().segments {
            return Err(bad_slot(number));
        }
        let state = table.row(number, row::STATE).load(Ordering::Acquire);
        let id = table.row(number, row::ID).load(Ordering::Acquire);
        let end = table.row(number, row::END).load(Ordering::Acquire);
        if state == row::FREE {
            return Err(bad_slot(number));
        }
        {
            // Recursive: `f` may be a caller's closure that reads the store again, which must
            // not wait behind a writer queued meanwhile (a plain read lock would, and never
            // get it). Writers (mapping a segment) are rare and wait for a gap.
            let segments = self.segments.read_recursive();
            if let Some(Some(seg)) = segments.get(number as usize)
                && seg.id() == id
            {
                // Another process may have appended to it.
                seg.raise_end(end.min(seg.capacity()));
                return Ok(f(seg));
            }
        }
        let writable = state == row::ACTIVE && self.writable;
        // The row knows the format version: a damaged file header costs nothing here, since
        // every record carries its own checksum.
        let version = table
            .row(number, row::VERSION_AND_FLAGS)
            .load(Ordering::Acquire) as u16;
        let (seg, _) = Segment::open_with(&self.dir, id, writable, Some(version))?;
        let seg = Arc::new(seg);
        if end > seg.capacity() {
            // The file was cut behind the index's back.
            return Err(Error::Corrupt {
                segment: id,
                offset: seg.capacity(),
                reason: "segment file shorter than its records in the index",
            });
        }
        seg.set_end(end);
        if state == row::SEALED {
            seg.seal_in_memory();
        }
        self.register(number, Arc::clone(&seg));
        Ok(f(&seg))
    }

    /// Whether the active segment (if any) is durable as far as its records reach.
    pub fn active_is_synced(&self) -> bool {
        let table = self.table();
        let number = table.word(header::ACTIVE).load(Ordering::Acquire) as u32;
        number == 0 || synced_to_end(&table, number)
    }

    /// Whether segment `number` is still `seg` and an fdatasync has made all its records
    /// durable (its synced length has reached its end).
    pub fn is_synced(&self, number: u32, seg: &Segment) -> bool {
        let table = self.table();
        table.row(number, row::ID).load(Ordering::Acquire) == seg.id()
            && synced_to_end(&table, number)
    }

    /// fdatasyncs segment `number` (`seg`) and records how far its records are now durable
    /// ([`row::SYNCED`]): as far as they reached before the fdatasync began.
    pub fn sync_segment(&self, number: u32, seg: &Segment) -> std::io::Result<()> {
        let table = self.table();
        let end = table.row(number, row::END).load(Ordering::Acquire);
        seg.sync_data()?;
        if table.row(number, row::ID).load(Ordering::Acquire) == seg.id() {
            table
                .row(number, row::SYNCED)
                .fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Records that segment `number` is `seg` (just created, or opened by recovery).
    pub fn register(&self, number: u32, seg: Arc<Segment>) {
        let mut segments = self.segments.write();
        let i = number as usize;
        if segments.len() <= i {
            segments.resize(i + 1, None);
        }
        segments[i] = Some(seg);
    }

    /// Forgets segment `number` (deleted).
    pub fn unregister(&self, number: u32) {
        if let Some(slot) = self.segments.write().get_mut(number as usize) {
            *slot = None;
        }
    }

    /// Finds `key` in `table` and hands its record to `f`. `Ok(None)` if the key is absent;
    /// [`Error::Corrupt`] if a slot with the key's tag points at bytes that are no valid
    /// record (the index never points at damage on purpose).
    ///
    /// A slot with the key's tag that leads elsewhere is looked at again before the answer is
    /// trusted: another process may have moved that record (compaction) and reused its
    /// segment's row between the load of the slot and the mapping of the segment.
    pub fn find<R>(
        &self,
        table: &TableFile,
        key: &[u8],
        h: KeyHash,
        f: impl FnOnce(Found<'_>) -> R,
    ) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut passed = [(0usize, 0u64); 2 * BUCKET_SLOTS];
            let mut n_passed = 0;
            let mut failure = None;
            for base in buckets(table, h) {
                for i in base..base + BUCKET_SLOTS {
                    let value = table.slot(i).load(Ordering::Acquire);
                    if value == 0 || slot::tag_of(value) != h.tag {
                        continue;
                    }
                    passed[n_passed] = (i, value);
                    n_passed += 1;
                    let at = slot::location_of(value);
                    let probed = self.with_segment(table, at.number, |seg| {
                        match record::decode(seg.tail(at.offset)) {
                            Ok(rec) if rec.key == key => {
                                let f = f.take().expect("called once");
                                Ok(Some(f(Found {
                                    record: rec,
                                    at,
                                    segment: seg,
                                })))
                            }
                            Ok(_) => Ok(None),
                            Err(e) => Err(Error::Corrupt {
                                segment: seg.id(),
                                offset: at.offset,
                                reason: e.reason(),
                            }),
                        }
                    });
                    match probed {
                        Ok(Ok(Some(hit))) => return Ok(Some(hit)),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) | Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
            let unchanged = passed[..n_passed]
                .iter()
                .all(|&(i, value)| table.slot(i).load(Ordering::Acquire) == value);
            if unchanged || attempts >= 16 {
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
        }
    }

    /// Whether `key`'s slot holds exactly `at` (the record at `at` is the key's newest).
    pub fn points_at(&self, table: &TableFile, key: &[u8], at: Location) -> bool {
        let h = slot::hash(table.seed(), key);
        let want = slot::encode(h.tag, at);
        buckets(table, h).into_iter().any(|base| {
            (base..base + BUCKET_SLOTS).any(|i| table.slot(i).load(Ordering::Acquire) == want)
        })
    }

    /// The live bytes of each segment row, recounted from the slots: the bytes (padding
    /// included) of every record a slot points at. `None` if a record cannot be read (damage:
    /// the counts then cannot be checked). Debug builds check the rows' live bytes against
    /// it (redb keeps a debug-only shadow of its allocations for the same reason); the same
    /// walk asserts that no key has two slots (docs/format.md, invariants).
    #[cfg(debug_assertions)]
    pub fn recount_live(&self, table: &TableFile) -> Option<std::collections::BTreeMap<u32, u64>> {
        let mut live = std::collections::BTreeMap::new();
        let mut keys = std::collections::HashSet::new();
        let mut twice = None;
        let mut readable = true;
        self.for_each_slot(table, |value| {
            let at = slot::location_of(value);
            let len = self.segment_in(table, at.number).ok().and_then(|seg| {
                record::decode(seg.tail(at.offset)).ok().map(|rec| {
                    if !keys.insert(rec.key.to_vec()) {
                        twice.get_or_insert_with(|| rec.key.to_vec());
                    }
                    record::span(rec.encoded_len(), seg.version()) as u64
                })
            });
            match len {
                Some(len) => *live.entry(at.number).or_insert(0) += len,
                None => readable = false,
            }
        });
        if !readable {
            return None;
        }
        debug_assert!(twice.is_none(), "key {twice:?} has two slots");
        Some(live)
    }

    /// Visits every slot in use: `f(slot value)`.
    pub fn for_each_slot(&self, table: &TableFile, mut f: impl FnMut(u64)) {
        Self::for_each_slot_at(table, |_, value| f(value));
    }

    /// Visits every slot in use: `f(position, slot value)`. A bucket is one cache line, and
    /// most are empty in a table with room: one test skips an empty bucket.
    pub fn for_each_slot_at(table: &TableFile, mut f: impl FnMut(usize, u64)) {
        for base in (0..table.shape().slots()).step_by(BUCKET_SLOTS) {
            let bucket: [u64; BUCKET_SLOTS] =
                std::array::from_fn(|i| table.slot(base + i).load(Ordering::Acquire));
            if bucket.iter().fold(0, |any, &v| any | v) == 0 {
                continue;
            }
            for (i, value) in bucket.into_iter().enumerate() {
                if value != 0 {
                    f(base + i, value);
                }
            }
        }
    }

    /// The shape a new table should have to hold `keys` keys, `segments` segments and ops of
    /// `op_entries` entries.
    pub fn shape_for(keys: u64, segments: u32, op_entries: u32) -> Shape {
        let per_region = ((1u64 << BUCKET_BITS) * BUCKET_SLOTS as u64) * 7 / 10;
        let mut region_bits = 0;
        while (per_region << region_bits) < keys && region_bits < slot::MAX_REGION_BITS {
            region_bits += 1;
        }
        Shape {
            region_bits,
            segments: segments.max(64).next_power_of_two().min(1 << 16),
            op_entries: op_entries.max(256).next_power_of_two(),
        }
    }
}

/// Whether row `number`'s synced length has reached the end of its records.
fn synced_to_end(table: &TableFile, number: u32) -> bool {
    table.row(number, row::SYNCED).load(Ordering::Acquire)
        >= table.row(number, row::END).load(Ordering::Acquire)
}

fn bad_slot(number: u32) -> Error {
    Error::Corrupt {
        segment: 0,
        offset: u64::from(number),
        reason: "index slot names a segment that does not exist",
    }
}

/// Header words copied into a grown table.
const CARRIED_WORDS: [usize; 9] = [
    header::KEYS,
    header::EXPIRING,
    header::EVICTIONS,
    header::APPENDED,
    header::SYNCED,
    header::NEXT_WRITER_ID,
    header::ACTIVE,
    header::COMPACTIONS,
    header::COUNTER_CHANGES,
];

/// Segment table fields copied into a grown table.
const ROW_FIELDS: [usize; 7] = [
    row::ID,
    row::STATE,
    row::END,
    row::LIVE,
    row::CAPACITY,
    row::VERSION_AND_FLAGS,
    row::SYNCED,
];

impl Index {
    /// Replaces the table by a copy of `shape` (at least as large in every way): every slot
    /// moves to its region in the new table, same bucket, same place. The caller holds the
    /// writer lock and no op is in progress. Readers go on with the old table until they see
    /// the new one; it holds the same slots.
    pub fn grow(&self, shape: Shape) -> Result<()> {
        let old = self.table();
        let old_shape = old.shape();
        assert!(
            shape.region_bits >= old_shape.region_bits
                && shape.segments >= old_shape.segments
                && shape.op_entries >= old_shape.op_entries
        );
        let generation = old.generation() + 1;
        let new = TableFile::create(&self.dir, generation, old.seed(), shape)?;
        for at in CARRIED_WORDS {
            new.word(at)
                .store(old.word(at).load(Ordering::Acquire), Ordering::Relaxed);
        }
        for number in 1..=old_shape.segments {
            for field in ROW_FIELDS {
                let value = old.row(number, field).load(Ordering::Acquire);
                new.row(number, field).store(value, Ordering::Relaxed);
            }
        }
        let region_slots = (1usize << BUCKET_BITS) * BUCKET_SLOTS;
        for pos in 0..old_shape.slots() {
            let value = old.slot(pos).load(Ordering::Acquire);
            if value == 0 {
                continue;
            }
            let region = slot::region(slot::tag_of(value), shape.region_bits) as usize;
            new.slot(region * region_slots + pos % region_slots)
                .store(value, Ordering::Relaxed);
        }
        let old_path = old.path().to_path_buf();
        drop(old);
        self.replace_table(new);
        // Best effort: a leftover old table is removed on the next open.
        let _ = self.dir.vfs().remove_file(&old_path);
        Ok(())
    }

    /// A free row of the segment table for segment `id`, filled in; grows the table when
    /// every row is taken. The caller holds the writer lock.
    pub fn add_row(
        &self,
        id: u64,
        state: u64,
        capacity: u64,
        end: u64,
        version: u16,
    ) -> Result<u32> {
        loop {
            let table = self.table();
            let free = (1..=table.shape().segments)
                .find(|&n| table.row(n, row::STATE).load(Ordering::Acquire) == row::FREE);
            let Some(number) = free else {
                let mut shape = table.shape();
                shape.segments = (shape.segments * 2).min(slot::MAX_NUMBER);
                if shape.segments == table.shape().segments {
                    return Err(Error::IndexFull);
                }
                drop(table);
                self.grow(shape)?;
                continue;
            };
            table.row(number, row::ID).store(id, Ordering::Relaxed);
            table.row(number, row::END).store(end, Ordering::Relaxed);
            table.row(number, row::SYNCED).store(0, Ordering::Relaxed);
            table.row(number, row::LIVE).store(0, Ordering::Relaxed);
            table
                .row(number, row::CAPACITY)
                .store(capacity, Ordering::Relaxed);
            table
                .row(number, row::VERSION_AND_FLAGS)
                .store(u64::from(version), Ordering::Relaxed);
            table
                .row(number, row::STATE)
                .store(state, Ordering::Release);
            return Ok(number);
        }
    }

    /// Frees row `number` (its segment is gone).
    pub fn free_row(&self, number: u32) {
        let table = self.table();
        table
            .row(number, row::STATE)
            .store(row::FREE, Ordering::Release);
        table.row(number, row::LIVE).store(0, Ordering::Release);
        drop(table);
        self.unregister(number);
    }

    /// The numbers of the segment table's rows in use, ascending by segment id.
    pub fn rows(&self) -> Vec<(u32, u64)> {
        let table = self.table();
        let mut rows: Vec<(u32, u64)> = (1..=table.shape().segments)
            .filter(|&n| table.row(n, row::STATE).load(Ordering::Acquire) != row::FREE)
            .map(|n| (n, table.row(n, row::ID).load(Ordering::Acquire)))
            .collect();
        rows.sort_by_key(|&(_, id)| id);
        rows
    }
}
