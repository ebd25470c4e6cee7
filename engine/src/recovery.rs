//! Opening a store directory: use the shared index if it can be trusted, else rebuild it from
//! the segments; finish what a dead writer left half done; clear away leftovers.
//!
//! The index can be trusted when it was closed cleanly (everything synced) or when it was last
//! changed during the current boot: then the OS kept every byte any process wrote, even a
//! process that died. After an OS crash or a power cut (another boot, and not clean) the page
//! cache is gone, the index may be ahead of or behind the segments, and it is rebuilt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::error::{Error, IoContext, Result};
use crate::index::file::{self, PointerFile, TableFile, header, row};
use crate::index::{Index, op};
use crate::options::Options;
use crate::segment::{self, FileKind};
use crate::vfs::{Dir, Open};
use crate::{migrate, rebuild};

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the store.
    pub segments: usize,
    /// Valid records scanned (0 when the index was used as it was).
    pub records: u64,
    /// The torn tail cut off the newest segment, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Segment files removed because they held nothing the index needs: a segment whose
    /// creation a crash cut short, one a compaction or eviction had finished with, a
    /// compaction output never put to use.
    pub empty_segments_removed: usize,
    /// Segments whose records came from their hint file instead of a scan, in a rebuild.
    pub hints_used: usize,
    /// Hint files found invalid (then removed, and their segments scanned).
    pub hints_rejected: usize,
    /// Temporary files of an interrupted compaction, hint write or rebuild, removed.
    pub temp_files_removed: usize,
    /// Why the index was rebuilt from the segments, if it was.
    pub index_rebuilt: Option<&'static str>,
    /// Whether a write a dead process left half done was finished (or dropped).
    pub op_repaired: bool,
    /// Segments of format version 1 rewritten as version 2.
    pub segments_upgraded: usize,
    /// Damaged bytes a rebuild skipped: where records were known to be durable, so that
    /// the damage cannot be a torn write. Their entries are lost; the store goes on.
    pub damaged: Vec<DamagedRange>,
}

/// Bytes of a segment that held no valid record where records were known to be durable:
/// damage (a flipped bit, a zeroed block), skipped. The entries whose records lay there, and
/// those of the record (or batch) right after them, are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment.
    pub segment: u64,
    /// Where the skipped bytes start.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// Why the first of them was not a valid record.
    pub reason: &'static str,
}

/// Bytes at the end of the newest segment that did not form whole, valid records (a write cut
/// by a crash) and were cut off on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: u64,
    /// Where the valid records ended and the cut began.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the first discarded record was invalid.
    pub reason: &'static str,
}

/// The files of ours found in a store directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Data segment ids, ascending.
    pub data: Vec<u64>,
    /// Segment ids that have a hint file.
    pub hints: BTreeSet<u64>,
    /// Files still under a temporary name.
    pub temps: Vec<PathBuf>,
    /// Table file generations.
    pub tables: Vec<u64>,
}

/// Lists the files of ours in `dir`.
pub(crate) fn list(dir: &Dir) -> Result<Listing> {
    let mut listing = Listing::default();
    for name in dir.vfs().list(dir.path()).context("listing", dir.path())? {
        let Some(name) = name.to_str() else { continue };
        let temp_of = |file: &str| name.strip_suffix(".tmp") == Some(file);
        if temp_of(file::POINTER_FILE) || temp_of(crate::counters::COUNTERS_FILE) {
            listing.temps.push(dir.join(name));
            continue;
        }
        if let Some(generation) = file::parse_table_name(name) {
            listing.tables.push(generation);
            continue;
        }
        match segment::parse_file_name(name) {
            Some((_, _, true)) => listing.temps.push(dir.join(name)),
            Some((id, FileKind::Data, false)) => listing.data.push(id),
            Some((id, FileKind::Hint, false)) => {
                listing.hints.insert(id);
            }
            None => {}
        }
    }
    listing.data.sort_unstable();
    Ok(listing)
}

/// Removes `paths`, then makes the removal durable.
pub(crate) fn remove_files(dir: &Dir, paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    for p in paths {
        dir.vfs()
            .remove_file(p)
            .context("removing the leftover file", p)?;
    }
    segment::sync_dir(dir)
}

/// Opens the index of the store in `dir` (which the caller has locked), rebuilding it if it
/// cannot be trusted, and marks it as changing during this boot.
pub(crate) fn open_index(
    dir: &Dir,
    now_ms: u64,
    options: &Options,
) -> Result<(Index, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    let mut listing = list(dir)?;
    // Leftovers of an interrupted change, removed once the open has succeeded (an open that
    // fails changes nothing).
    let temps = std::mem::take(&mut listing.temps);
    let boot = dir.vfs().boot_id();
    let pointer = PointerFile::open(dir, true)?;
    let trusted = match pointer {
        None => Err("no index"),
        Some(pointer) if !(pointer.is_clean() || (boot != [0, 0] && pointer.boot() == boot)) => {
            drop(pointer);
            Err("the index may have lost writes (not closed cleanly before a restart)")
        }
        Some(pointer) => match TableFile::open(dir, pointer.generation(), true) {
            Ok(table) => Ok(Index::new(dir, pointer, table)),
            Err(_) => Err("the index file is missing or damaged"),
        },
    };
    let index = match trusted.and_then(|index| reconcile(index, &listing, &mut report)) {
        Ok(index) => index,
        Err(why) if !options.rebuild_index => return Err(needs_rebuild(dir, why)),
        Err(why) => {
            report.index_rebuilt = Some(why);
            report.segments_upgraded =
                migrate::upgrade(dir, &listing.data, &listing.hints, now_ms)?;
            if report.segments_upgraded > 0 {
                listing = list(dir)?;
            }
            rebuild::rebuild(dir, &listing, now_ms, options.strict, &mut report)?
        }
    };
    let temps: Vec<PathBuf> = temps.into_iter().filter(|p| dir.exists(p)).collect();
    remove_files(dir, &temps)?;
    report.temp_files_removed = temps.len();
    // Every table file but the current one: a rebuild made only the current one.
    let current = index.table().generation();
    let stale: Vec<PathBuf> = listing
        .tables
        .iter()
        .copied()
        .filter(|&g| g != current)
        .map(|g| dir.join(file::table_name(g)))
        .collect();
    remove_files(dir, &stale)?;
    report.op_repaired |= index.repair(&index.table())?;
    // Its last writer may have died before syncing the active segment: make what it holds
    // durable before anything is appended after it or relied on.
    let active = index.counter(header::ACTIVE) as u32;
    if active != 0 {
        let seg = index.segment(active)?;
        index
            .sync_segment(active, &seg)
            .context("syncing", seg.path())?;
    }
    report.segments = index.rows().len();
    // The mark must reach the disk before any change the index then takes: a power cut
    // that left `INDEX` saying "clean" would have the next boot trust a table whose newer
    // pages were lost (the simulation found this).
    let pointer = index.pointer();
    if pointer.is_clean() || pointer.boot() != boot {
        pointer.mark_dirty(boot);
        pointer.sync()?;
    }
    Ok((index, report))
}

/// The error of an open that would have to rebuild the index and may not
/// (`Options::rebuild_index` off).
fn needs_rebuild(dir: &Dir, why: &'static str) -> Error {
    Error::BadIndex {
        path: dir.join(file::POINTER_FILE),
        reason: why,
    }
}

/// Maps the index of the store in `dir` for reading only: it must have been closed cleanly
/// (there is no rebuilding it without writing), and nothing is changed.
pub(crate) fn open_read_only(dir: &Dir) -> Result<(Index, RecoveryReport)> {
    let not_usable = |reason| Error::BadIndex {
        path: dir.join(file::POINTER_FILE),
        reason,
    };
    let pointer = PointerFile::open(dir, false)?
        .ok_or_else(|| not_usable("missing: a read-only store needs an index closed cleanly"))?;
    if !pointer.is_clean() {
        return Err(not_usable(
            "not closed cleanly: open the store writable once to rebuild it",
        ));
    }
    let table = TableFile::open(dir, pointer.generation(), false)?;
    let index = Index::read_only(dir, pointer, table);
    validate(&index).map_err(not_usable)?;
    if index.table().word(header::OP_STATE).load(Ordering::Acquire) != op::IDLE {
        return Err(not_usable("a write was left unfinished"));
    }
    let report = RecoveryReport {
        segments: index.rows().len(),
        ..RecoveryReport::default()
    };
    Ok((index, report))
}

/// Maps the index of the store in `dir` that other stores have open (and so recovered): the
/// table `INDEX` names now.
pub(crate) fn join_index(dir: &Dir) -> Result<(Index, RecoveryReport)> {
    let pointer = PointerFile::open(dir, true)?.ok_or_else(|| Error::BadIndex {
        path: dir.join(file::POINTER_FILE),
        reason: "missing while the store is open elsewhere",
    })?;
    let table = TableFile::open_current(dir, &pointer, true)?;
    let index = Index::new(dir, pointer, table);
    let report = RecoveryReport {
        segments: index.rows().len(),
        ..RecoveryReport::default()
    };
    Ok((index, report))
}

/// Checks a trusted index against the files: every segment it names must exist (a row whose
/// file is gone and that holds nothing live is freed); a segment file it does not name is
/// unreachable (a leftover of compaction or eviction, or a segment created by a writer that
/// died before recording it) and is removed, with hints of segments that are gone. An
/// inconsistency that cannot be explained that way makes the index untrusted.
fn reconcile(
    index: Index,
    listing: &Listing,
    report: &mut RecoveryReport,
) -> std::result::Result<Index, &'static str> {
    validate(&index)?;
    let dir = index.dir().clone();
    let rows = index.rows();
    let known: BTreeSet<u64> = rows.iter().map(|&(_, id)| id).collect();
    let on_disk: BTreeSet<u64> = listing.data.iter().copied().collect();
    for &(number, id) in &rows {
        if !on_disk.contains(&id) {
            if index.table().row(number, row::LIVE).load(Ordering::Acquire) != 0 {
                return Err("the index names a segment file that is missing");
            }
            index.free_row(number);
        }
    }
    let mut leftovers = Vec::new();
    for &id in on_disk.difference(&known) {
        // Compaction output is recorded only after its file is complete, and pointed at only
        // after that; a writer records its segment before appending to it. So a file the
        // index does not name is output never used, or a writer segment with no record.
        let path = segment::path(&dir, id);
        if id % segment::WRITER_ID_STRIDE != 0 || holds_no_record(&dir, &path) {
            leftovers.push(path);
        } else {
            return Err("a segment file holds records the index does not know");
        }
    }
    report.empty_segments_removed += leftovers.len();
    leftovers.extend(
        listing
            .hints
            .iter()
            .filter(|id| !known.contains(id))
            .map(|&id| dir.join(segment::file_name(id, FileKind::Hint))),
    );
    remove_files(&dir, &leftovers).map_err(|_| "leftover files cannot be removed")?;
    Ok(index)
}

/// Checks what the engine itself never writes wrong, so that damage to the index file (it is
/// not checksummed: it changes on every write) makes it rebuilt rather than acted on: row
/// states, ends within capacities, distinct ids below the next writer id, the active row, and
/// an unfinished op that stays inside the table and appends where the active segment ends.
fn validate(index: &Index) -> std::result::Result<(), &'static str> {
    let table = index.table();
    let shape = table.shape();
    let load = |at| table.word(at).load(Ordering::Acquire);
    let next_id = load(header::NEXT_WRITER_ID);
    if next_id == 0 || !next_id.is_multiple_of(segment::WRITER_ID_STRIDE) {
        return Err("the index's next segment id is damaged");
    }
    let mut ids = BTreeSet::new();
    for number in 1..=shape.segments {
        let field = |f| table.row(number, f).load(Ordering::Acquire);
        match field(row::STATE) {
            row::FREE => continue,
            row::ACTIVE | row::SEALED => {}
            _ => return Err("a segment table row is damaged"),
        }
        let (id, end) = (field(row::ID), field(row::END));
        let start = segment::data_start(segment::FORMAT_VERSION) as u64;
        if id >= next_id
            || !ids.insert(id)
            || end > field(row::CAPACITY)
            || field(row::CAPACITY) > segment::MAX_SEGMENT_LEN
            || field(row::LIVE) > end
            || end < start
            || !end.is_multiple_of(crate::record::ALIGN as u64)
        {
            return Err("a segment table row is damaged");
        }
    }
    let active = load(header::ACTIVE);
    if active != 0
        && (active > u64::from(shape.segments)
            || table.row(active as u32, row::STATE).load(Ordering::Acquire) != row::ACTIVE)
    {
        return Err("the index's active segment is damaged");
    }
    let state = load(header::OP_STATE);
    if state == op::IDLE {
        return Ok(());
    }
    let entries = load(header::OP_ENTRIES);
    let snapshots = load(header::OP_SNAPSHOTS);
    let number = load(header::OP_SEGMENT);
    let well_formed = match state {
        op::WRITING => {
            number == active
                && active != 0
                && load(header::OP_START)
                    == table.row(active as u32, row::END).load(Ordering::Acquire)
                && load(header::OP_START) <= load(header::OP_END)
                && load(header::OP_END)
                    <= table
                        .row(active as u32, row::CAPACITY)
                        .load(Ordering::Acquire)
        }
        op::APPLYING => {
            entries <= u64::from(shape.op_entries)
                && snapshots <= shape.op_snapshots() as u64
                && (number == 0 || number == active)
                && (0..entries as usize).all(|i| {
                    (table.op_entry(i, 0).load(Ordering::Acquire) as usize) < shape.slots()
                })
                && (0..snapshots as usize).all(|i| {
                    let n = table.snapshot(i, 0).load(Ordering::Acquire);
                    (1..=u64::from(shape.segments)).contains(&n)
                })
        }
        _ => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err("the index's unfinished write is damaged")
    }
}

/// Whether the segment file at `path` has no record: shorter than its header and a record
/// header, or zeros where its first record would start.
fn holds_no_record(dir: &Dir, path: &Path) -> bool {
    let start = segment::data_start(segment::FORMAT_VERSION) as u64;
    let mut first = [0u8; crate::record::RECORD_HEADER_LEN];
    let Ok(file) = dir.vfs().open(path, Open::Read) else {
        return false;
    };
    match file.size() {
        Ok(len) if len < start + first.len() as u64 => true,
        Ok(_) => file
            .read_at(&mut first, start)
            .is_ok_and(|()| crate::record::is_end(&first)),
        Err(_) => false,
    }
}
