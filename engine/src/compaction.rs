//! Compaction (merge): copies the live records of sealed segments into new segments, points
//! the index at the copies, and removes the old files, while reads and writes go on.
//!
//! Ordering is what makes it safe. Output segments take ids right after every existing
//! segment below the writer's current segment (writer ids leave gaps for this), so a rebuild
//! replays them after their inputs and before any write made during or after the compaction.
//! Each output is written under a temporary name, fsynced, renamed and its directory fsynced,
//! then recorded in the segment table, and only then does the index point at its records (and
//! only where it still points at the record copied: a write made meanwhile wins). Inputs are
//! deleted once nothing points into them, in ascending id order, so a tombstone's segment
//! never disappears before an older value it hides.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::index::file::{header, row};
use crate::index::plan::NewRecord;
use crate::index::slot::Location;
use crate::output::Output;
use crate::pacer::Pacer;
use crate::record::{self, FLAG_TOMBSTONE};
use crate::scan::Records;
use crate::segment::{self, FORMAT_VERSION, Segment};
use crate::shared::Shared;

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Segments compacted (and removed).
    pub segments_in: usize,
    /// Segments written.
    pub segments_out: usize,
    /// Bytes of the input segments, all read.
    pub bytes_read: u64,
    /// Bytes of the output segments written (hint files not included).
    pub bytes_written: u64,
    /// Disk bytes freed: input bytes minus output bytes.
    pub bytes_reclaimed: u64,
    /// Live records copied.
    pub records_copied: u64,
    /// Records dropped: overwritten, deleted, expired, and tombstones no longer needed.
    pub records_dropped: u64,
    /// Tombstones kept because an older segment outside the compaction may still hold a value
    /// they hide.
    pub tombstones_kept: u64,
    /// Bytes of the inputs that held no valid record (damage), skipped: what the index still
    /// pointed at there is lost. With `Options::strict`, damage fails the compaction instead.
    pub damaged_bytes: u64,
    /// Wall-clock time.
    pub duration: Duration,
    /// Part of it spent paused so that durable writes made meanwhile were not held up (see
    /// docs/guarantees.md, "Compaction and durable writes").
    pub paused: Duration,
}

/// A record copied into an output, to be pointed at once the output is recorded.
struct Moved {
    key: Box<[u8]>,
    from: Location,
    /// Offset and length of the copy in its output.
    to: u64,
    len: u32,
    expiring: bool,
}

/// An output being written, with the records it will take over.
struct Pending {
    output: Output,
    moved: Vec<Moved>,
}

/// Index changes are made at most this many records at a time (and no more than the op log
/// holds, so that a small store's index does not grow for them), so writers never wait long.
const CHUNK: usize = 4096;

/// How many records one index change of compaction or eviction takes.
pub(crate) fn chunk(shared: &Shared) -> usize {
    (shared.index.table().shape().op_entries as usize).min(CHUNK)
}

/// Compacts `inputs` (sealed segments with their numbers, ascending by id), calling
/// `progress(bytes read, bytes to read)` after each input. The caller holds the store's
/// maintenance lock.
pub(crate) fn compact(
    shared: &Shared,
    inputs: &[(u32, Arc<Segment>)],
    progress: &dyn Fn(u64, u64),
) -> Result<CompactionStats> {
    let started = Instant::now();
    let mut stats = CompactionStats {
        segments_in: inputs.len(),
        ..CompactionStats::default()
    };
    if inputs.is_empty() {
        return Ok(stats);
    }
    let input_ids: BTreeSet<u64> = inputs.iter().map(|(_, s)| s.id()).collect();
    // Every write from now on goes to a segment with an id of at least `floor`.
    let floor = shared.lock_writer()?.write_floor(&shared.index);
    let rows = shared.index.rows();
    let mut next_id = rows
        .iter()
        .map(|&(_, id)| id)
        .filter(|&id| id < floor)
        .max()
        .map_or(0, |id| id + 1);
    let oldest_outside = rows
        .iter()
        .map(|&(_, id)| id)
        .find(|id| !input_ids.contains(id));
    let now = now_ms();
    let total: u64 = inputs.iter().map(|(_, s)| s.end()).sum();
    let mut out: Option<Pending> = None;
    let mut pacer = Pacer::new(shared.commit.syncs());
    let mut expired: Vec<(Box<[u8]>, Location)> = Vec::new();
    let result = (|| -> Result<()> {
        for (number, seg) in inputs {
            progress(stats.bytes_read, total);
            seg.read_ahead(seg.end());
            let bytes = seg.read(0, seg.end() as usize)?;
            stats.bytes_read += bytes.len() as u64;
            // Inputs are sealed, so synced whole: damage anywhere in them is no torn write.
            let skip_below = if shared.options.strict { 0 } else { u64::MAX };
            let mut walk = Records::skipping_damage(bytes, seg.version(), skip_below);
            for (offset, rec) in walk.by_ref() {
                if shared.is_closing() {
                    return Err(Error::Closed);
                }
                let from = Location {
                    number: *number,
                    offset,
                };
                let is_current = shared.is_current(rec.key, from);
                let is_expired = rec.expires_at != 0 && rec.expires_at <= now;
                if is_current && !is_expired {
                    let pending = match &mut out {
                        Some(p) => p,
                        None => out.insert(new_output(shared, &mut next_id, floor)?),
                    };
                    let (to, len) = pending.output.push(0, rec.expires_at, rec.key, rec.value)?;
                    pending.moved.push(Moved {
                        key: rec.key.into(),
                        from,
                        to,
                        len,
                        expiring: rec.expires_at != 0,
                    });
                    stats.records_copied += 1;
                } else {
                    if is_current {
                        expired.push((rec.key.into(), from));
                    }
                    // A deletion (tombstone or expired value) must survive while an older
                    // segment outside this compaction may hold a value it hides.
                    let deletes = rec.is_tombstone() || is_expired;
                    let older_outside = oldest_outside.is_some_and(|id| id < seg.id());
                    // Not needed where the index points at a newer value of the key: that
                    // value hides the older ones.
                    if deletes && older_outside && (is_current || !shared.has_slot(rec.key)) {
                        let pending = match &mut out {
                            Some(p) => p,
                            None => out.insert(new_output(shared, &mut next_id, floor)?),
                        };
                        pending.output.push(FLAG_TOMBSTONE, 0, rec.key, &[])?;
                        stats.tombstones_kept += 1;
                    } else {
                        stats.records_dropped += 1;
                    }
                }
                if let Some(p) = out.as_mut() {
                    stats.paused += p.output.pace(&mut pacer, shared.commit.syncs())?;
                }
                if out
                    .as_ref()
                    .is_some_and(|p| p.output.len() >= shared.options.segment_size())
                {
                    let done = out.take().expect("checked");
                    stats.bytes_written += install(shared, done)?;
                    stats.segments_out += 1;
                }
            }
            stats.damaged_bytes += walk.damage().iter().map(|d| d.len).sum::<u64>();
            if let Some((offset, reason)) = walk.end().and_then(|end| end.invalid) {
                return Err(Error::Corrupt {
                    segment: seg.id(),
                    offset,
                    reason,
                });
            }
        }
        if let Some(done) = out.take() {
            stats.bytes_written += install(shared, done)?;
            stats.segments_out += 1;
        }
        progress(total, total);
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(p) = out.take() {
            p.output.abandon();
        }
        return Err(e);
    }
    for chunk in expired.chunks(chunk(shared)) {
        shared.change_index(|plan| {
            for (key, from) in chunk {
                plan.remove_if_at(key, *from)?;
            }
            Ok(true)
        })?;
    }
    retire_inputs(shared, inputs)?;
    shared
        .index
        .table()
        .word(header::COMPACTIONS)
        .fetch_add(1, Ordering::AcqRel);
    stats.bytes_reclaimed = stats.bytes_read.saturating_sub(stats.bytes_written);
    stats.duration = started.elapsed();
    Ok(stats)
}

fn new_output(shared: &Shared, next_id: &mut u64, floor: u64) -> Result<Pending> {
    if *next_id >= floor {
        return Err(Error::SegmentIdsExhausted);
    }
    let output = Output::create(&shared.dir, *next_id)?;
    *next_id += 1;
    Ok(Pending {
        output,
        moved: Vec::new(),
    })
}

/// Makes a finished output durable and records it, then points the index at the records it
/// holds, unless a newer write moved a key meanwhile. Returns the output's size.
fn install(shared: &Shared, pending: Pending) -> Result<u64> {
    let seg = Arc::new(pending.output.finish(&shared.dir)?);
    let (id, len) = (seg.id(), seg.end());
    let number = {
        let _writer = shared.lock_writer()?;
        let number = shared
            .index
            .add_row(id, row::SEALED, seg.capacity(), len, FORMAT_VERSION)?;
        if seg.has_hint() {
            shared
                .index
                .table()
                .row(number, row::VERSION_AND_FLAGS)
                .fetch_or(row::HAS_HINT, Ordering::AcqRel);
        }
        number
    };
    seg.seal_in_memory();
    shared.index.register(number, Arc::clone(&seg));
    for chunk in pending.moved.chunks(chunk(shared)) {
        shared.change_index(|plan| {
            for m in chunk {
                let to = NewRecord {
                    at: Location {
                        number,
                        offset: m.to,
                    },
                    len: m.len,
                    expiring: m.expiring,
                };
                plan.relocate(&m.key, m.from, to)?;
            }
            Ok(true)
        })?;
    }
    Ok(len)
}

/// Deletes the inputs, oldest first: each file (durably), then its row.
fn retire_inputs(shared: &Shared, inputs: &[(u32, Arc<Segment>)]) -> Result<()> {
    let numbers: Vec<u32> = inputs.iter().map(|(n, _)| *n).collect();
    shared.clear_slots_into(&numbers)?;
    for (number, seg) in inputs {
        segment::remove(&shared.dir, seg.id())?;
        let _writer = shared.lock_writer()?;
        shared.index.free_row(*number);
    }
    Ok(())
}

/// Every sealed segment with its number, total record bytes and dead bytes (expired entries
/// counted as dead when `expired` says so), ascending by id.
pub(crate) fn sealed_usage(
    shared: &Shared,
    expired: &hashbrown::HashMap<u32, u64>,
) -> Vec<(u32, Arc<Segment>, u64, u64)> {
    let table = shared.index.table();
    let start = segment::data_start(FORMAT_VERSION) as u64;
    let mut out = Vec::new();
    for (number, _) in shared.index.rows() {
        if table.row(number, row::STATE).load(Ordering::Acquire) != row::SEALED {
            continue;
        }
        let Ok(seg) = shared.index.segment(number) else {
            continue;
        };
        let records = table
            .row(number, row::END)
            .load(Ordering::Acquire)
            .saturating_sub(start);
        let live = table.row(number, row::LIVE).load(Ordering::Acquire);
        let dead = records
            .saturating_sub(live)
            .saturating_add(expired.get(&number).copied().unwrap_or(0));
        out.push((number, seg, records, dead.min(records)));
    }
    out
}

/// Bytes of records that have expired but that the index still points at, per segment
/// number (empty when nothing can expire). Reads the header of every such record.
pub(crate) fn expired_bytes(shared: &Shared, now: u64) -> hashbrown::HashMap<u32, u64> {
    let mut out = hashbrown::HashMap::new();
    let table = shared.index.table();
    if table.word(header::EXPIRING).load(Ordering::Acquire) == 0 {
        return out;
    }
    shared.index.for_each_slot(&table, |value| {
        let at = crate::index::slot::location_of(value);
        if let Ok(seg) = shared.index.segment(at.number)
            && let Ok(rec) = record::decode(seg.tail(at.offset))
            && rec.expires_at != 0
            && rec.expires_at <= now
        {
            *out.entry(at.number).or_default() += record::aligned(rec.encoded_len()) as u64;
        }
    });
    out
}
