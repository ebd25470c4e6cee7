//! Rebuilding the index from the segment files, when it cannot be trusted (after an OS crash
//! or a power cut) or is missing: replay every segment in id order, from its hint file where
//! one is valid, cutting a torn tail off the newest writer segment.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, IoContext, Result};
use crate::hint;
use crate::index::Index;
use crate::index::file::{PointerFile, TableFile, header, row};
use crate::index::plan::{NewRecord, Planned, Planner};
use crate::index::slot::Location;
use crate::record;
use crate::recovery::{DamagedRange, Listing, RecoveryReport, TornTail, remove_files};
use crate::scan::{Records, ScanEnd};
use crate::segment::{self, FORMAT_VERSION, FileKind, Segment, WRITER_ID_STRIDE, next_writer_id};
use crate::vfs::Dir;
use crate::writer::grow;

/// Plans this many records before carrying them out as one op.
const CHUNK: usize = 256;

/// Applies records to a new index in chunks, growing it as needed.
struct Replay<'a> {
    index: &'a Index,
    planner: Planner<'a>,
    planned: usize,
    now_ms: u64,
}

impl<'a> Replay<'a> {
    fn new(index: &'a Index, now_ms: u64) -> Replay<'a> {
        Replay {
            index,
            planner: Planner::new(index, Arc::clone(&index.table())),
            planned: 0,
            now_ms,
        }
    }

    /// Carries out what is planned.
    fn flush(&mut self) {
        let entries = self.planner.take_entries();
        if !entries.is_empty() {
            let table = Arc::clone(&self.index.table());
            self.index.execute(&table, None, &entries, false, |_| {});
        }
        self.planner = Planner::new(self.index, Arc::clone(&self.index.table()));
        self.planned = 0;
    }

    /// Replays one record: a value points its key at it; a tombstone, or a value already
    /// expired, removes the key.
    fn apply(
        &mut self,
        key: &[u8],
        at: Location,
        len: u32,
        tombstone: bool,
        expires_at: u64,
    ) -> Result<()> {
        let expired = expires_at != 0 && expires_at <= self.now_ms;
        loop {
            if tombstone || expired {
                self.planner.delete(key)?;
                break;
            }
            let new = NewRecord {
                at,
                len,
                expiring: expires_at != 0,
            };
            if self.planner.put(key, new)? == Planned::Done {
                break;
            }
            // A put that finds no room plans nothing: carry out what is planned, grow, plan this
            // record again.
            self.flush();
            let shape = self.index.table().shape();
            grow(self.index, shape, 0, true)?;
            self.planner = Planner::new(self.index, Arc::clone(&self.index.table()));
        }
        self.planned += 1;
        let capacity = self.index.table().shape().op_entries as usize;
        if self.planned >= CHUNK || self.planner.entries.len() + 16 >= capacity {
            self.flush();
        }
        Ok(())
    }
}

/// Rebuilds the index of `dir` from its (format version 2) segments. A rebuild that fails
/// (a segment of another format version; damage, with `strict`) leaves the directory as it
/// was: the new index lies under names the next open ignores until it is complete, and
/// leftovers are removed only after that.
pub(crate) fn rebuild(
    dir: &Dir,
    listing: &Listing,
    now_ms: u64,
    strict: bool,
    report: &mut RecoveryReport,
) -> Result<Index> {
    let first_generation = listing.tables.iter().max().map_or(1, |g| g + 1);
    let rebuilt = rebuild_index(dir, listing, now_ms, strict, first_generation, report);
    if rebuilt.is_err() {
        // Best effort: what is left is removed by the next open anyway.
        let _ = dir
            .vfs()
            .remove_file(&crate::index::file::pending_path(dir));
        if let Ok(now) = crate::recovery::list(dir) {
            for generation in now.tables.into_iter().filter(|&g| g >= first_generation) {
                let table = dir.join(crate::index::file::table_name(generation));
                let _ = dir.vfs().remove_file(&table);
            }
        }
    }
    rebuilt
}

fn rebuild_index(
    dir: &Dir,
    listing: &Listing,
    now_ms: u64,
    strict: bool,
    generation: u64,
    report: &mut RecoveryReport,
) -> Result<Index> {
    let mut ids = listing.data.clone();
    // Files to remove once the new index is in place.
    let mut leftovers = Vec::new();
    if let Some(&last) = ids.last()
        && is_torn_creation(dir, &segment::path(dir, last), last)?
    {
        leftovers.push(segment::path(dir, last));
        report.empty_segments_removed += 1;
        ids.pop();
    }
    // A hint without its segment is left from a deletion cut short.
    leftovers.extend(
        listing
            .hints
            .iter()
            .filter(|id| ids.binary_search(id).is_err())
            .map(|&id| dir.join(segment::file_name(id, FileKind::Hint))),
    );

    // How far the newest segment was durable, as the old index last knew it.
    let newest_synced = ids
        .last()
        .map_or(0, |&id| synced_length(dir, &listing.tables, id));
    // The new pointer replaces `INDEX` only once the new table is complete: a crash or a
    // failure meanwhile leaves the old index as it was.
    let pointer = PointerFile::create_pending(dir, 0)?;
    let shape = Index::shape_for(0, ids.len() as u32 + 8, 256);
    let table = TableFile::create(dir, generation, dir.vfs().hash_seed(), shape)?;
    let mut index = Index::new(dir, pointer, table);
    let mut replay = Replay::new(&index, now_ms);
    for (i, &id) in ids.iter().enumerate() {
        let is_newest = i + 1 == ids.len();
        let has_hint = listing.hints.contains(&id);
        let writer_segment = id % WRITER_ID_STRIDE == 0;
        // The writer goes on appending to the newest segment it created, if it has room.
        let resumable = is_newest && writer_segment && !has_hint;
        let if_damaged = (!strict).then_some(FORMAT_VERSION);
        let (seg, damaged_header) = Segment::open_with(dir, id, resumable, if_damaged)?;
        let seg = Arc::new(seg);
        if damaged_header {
            report.damaged.push(DamagedRange {
                segment: id,
                offset: 0,
                len: segment::SEGMENT_HEADER_LEN as u64,
                reason: "file header damaged",
            });
        }
        if seg.version() != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                segment: id,
                found: seg.version(),
                supported: FORMAT_VERSION,
            });
        }
        let state = if resumable { row::ACTIVE } else { row::SEALED };
        let start = segment::data_start(FORMAT_VERSION) as u64;
        let number = index.add_row(id, state, seg.capacity(), start, FORMAT_VERSION)?;
        index.register(number, Arc::clone(&seg));
        // Damage in bytes known to be durable is skipped: every segment but the newest
        // writer segment was synced whole (when sealed, or before its rename for compaction
        // output); the newest one, as far as its last recorded fdatasync.
        let skip_below = match (strict, is_newest && writer_segment) {
            (true, _) => 0,
            (false, true) => newest_synced,
            (false, false) => u64::MAX,
        };
        let (records, end) =
            replay_segment(dir, &seg, number, has_hint, skip_below, &mut replay, report)?;
        report.records += records;
        let hinted = end.is_none();
        if let Some(end) = end
            && let Some((offset, reason)) = torn_tail(&seg, &end)
        {
            // Only the newest segment the writer made can end in a write a crash cut short:
            // older ones were synced when sealed, compaction output before its rename.
            if !(is_newest && writer_segment) {
                return Err(Error::Corrupt {
                    segment: id,
                    offset,
                    reason,
                });
            }
            report.torn_tail = Some(TornTail {
                segment: id,
                offset: end.valid_len,
                bytes: seg.capacity() - end.valid_len,
                reason,
            });
            seg.zero_from(end.valid_len)?;
        }
        replay.flush();
        let table = index.table();
        table
            .row(number, row::END)
            .store(seg.end(), Ordering::Release);
        if resumable && seg.room() > 0 {
            drop(table);
            index
                .sync_segment(number, &seg)
                .context("syncing", seg.path())?;
            let table = index.table();
            table
                .word(header::ACTIVE)
                .store(u64::from(number), Ordering::Release);
        } else if is_newest && records == 0 && !has_hint {
            drop(table);
            index.free_row(number);
            drop(seg);
            remove_files(dir, &[segment::path(dir, id)])?;
            report.empty_segments_removed += 1;
        } else {
            table
                .row(number, row::STATE)
                .store(row::SEALED, Ordering::Release);
            if hinted {
                table
                    .row(number, row::VERSION_AND_FLAGS)
                    .fetch_or(row::HAS_HINT, Ordering::AcqRel);
            }
            seg.seal_in_memory();
        }
    }
    replay.flush();
    let table = index.table();
    let next = ids
        .last()
        .map_or(WRITER_ID_STRIDE, |&id| next_writer_id(id));
    table
        .word(header::NEXT_WRITER_ID)
        .store(next, Ordering::Release);
    table.sync()?;
    index.pointer().set_generation(table.generation());
    drop(table);
    index.install_pointer()?;
    remove_files(dir, &leftovers)?;
    Ok(index)
}

/// Replays segment `seg` (row `number`), from its hint if it has a valid one (a rejected hint
/// is removed), else by walking it; sets the end of its records. Returns the records replayed
/// and, after a walk, where it stopped.
fn replay_segment(
    dir: &Dir,
    seg: &Segment,
    number: u32,
    has_hint: bool,
    skip_below: u64,
    replay: &mut Replay<'_>,
    report: &mut RecoveryReport,
) -> Result<(u64, Option<ScanEnd>)> {
    let id = seg.id();
    if has_hint {
        let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
        let bytes = dir.read(&hint_path).context("reading", &hint_path)?;
        let mut entries = Vec::new();
        match hint::load(&bytes, id, seg.version(), seg.capacity(), |e| {
            entries.push(e)
        }) {
            Ok(loaded) => {
                for e in &entries {
                    let at = Location {
                        number,
                        offset: u64::from(e.offset),
                    };
                    let expires_at = if e.tombstone { 0 } else { e.expires_at };
                    replay.apply(e.key, at, e.len, e.tombstone, expires_at)?;
                }
                seg.set_end(loaded.end);
                report.hints_used += 1;
                return Ok((loaded.records, None));
            }
            Err(_) => {
                report.hints_rejected += 1;
                remove_files(dir, &[hint_path])?;
            }
        }
    }
    let mut records = 0u64;
    seg.read_ahead(u64::MAX);
    let mut walk = Records::skipping_damage(seg.whole(), seg.version(), skip_below);
    for (offset, rec) in walk.by_ref() {
        records += 1;
        let at = Location { number, offset };
        let len = record::span(rec.encoded_len(), seg.version()) as u32;
        replay.apply(rec.key, at, len, rec.is_tombstone(), rec.expires_at)?;
    }
    report
        .damaged
        .extend(walk.damage().iter().map(|d| DamagedRange {
            segment: id,
            offset: d.offset,
            len: d.len,
            reason: d.reason,
        }));
    let end = walk.end().expect("walked to the end");
    let start = segment::data_start(seg.version()) as u64;
    seg.set_end(end.valid_len.max(start).min(seg.capacity()));
    Ok((records, Some(end)))
}

/// How far segment `id` was durable by the newest of the old tables (`generations`), if one
/// can be read and names it; 0 (nothing known) otherwise. The value is only ever raised
/// after an fdatasync returned, so whatever of it reached the disk is a durable length.
fn synced_length(dir: &Dir, generations: &[u64], id: u64) -> u64 {
    let Some(&generation) = generations.iter().max() else {
        return 0;
    };
    let Ok(table) = TableFile::open(dir, generation, false) else {
        return 0;
    };
    (1..=table.shape().segments)
        .find(|&n| {
            table.row(n, row::STATE).load(Ordering::Acquire) != row::FREE
                && table.row(n, row::ID).load(Ordering::Acquire) == id
        })
        .map_or(0, |n| {
            let synced = table.row(n, row::SYNCED).load(Ordering::Acquire);
            let end = table.row(n, row::END).load(Ordering::Acquire);
            let capacity = table.row(n, row::CAPACITY).load(Ordering::Acquire);
            // A value beyond the records is no durable length: a damaged table.
            if synced <= end && end <= capacity {
                synced
            } else {
                0
            }
        })
}

/// What follows the valid records of a segment, if it is not the clean end: a record a crash
/// cut short, damage, or data after zeros (a write whose first page was lost).
fn torn_tail(seg: &Segment, end: &ScanEnd) -> Option<(u64, &'static str)> {
    if let Some(invalid) = end.invalid {
        return Some(invalid);
    }
    seg.first_nonzero_from(end.valid_len)
        .map(|_| (end.valid_len, "data after the end of the records"))
}

/// Whether the newest segment file is what a crash during its creation leaves: no complete,
/// valid header (the header is synced before any record is appended), either because the file
/// is shorter than a header or because the header is still the zeros it was reserved with.
fn is_torn_creation(dir: &Dir, path: &Path, id: u64) -> Result<bool> {
    let head = dir
        .read_prefix(path, segment::SEGMENT_HEADER_LEN as u64)
        .context("reading the header of", path)?;
    let unwritten = head.len() < segment::SEGMENT_HEADER_LEN || record::is_end(&head);
    Ok(unwritten && segment::check_header(&head, id, FileKind::Data).is_err())
}
