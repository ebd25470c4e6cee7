//! The writer: appends records to the active segment and points the index at them, as one op
//! (see `index::op`); rotates segments; refuses writes once the disk state is uncertain.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::index::file::{Shape, header, row};
use crate::index::op::Append;
use crate::index::plan::{NewRecord, PlanBuffers, Planned, Planner};
use crate::index::slot::{self, KeyHash, Location};
use crate::options::Options;
use crate::record;
use crate::segment::{FORMAT_VERSION, MAX_SEGMENT_LEN, Segment, data_start, next_writer_id};
use crate::vfs::Dir;

/// How many keys ahead of the one planned a batch fetches buckets: enough for the misses to
/// overlap, few enough that the lines are still cached when planned.
const PREFETCH_AHEAD: usize = 8;

/// One change of a write: a record to append and what it does to the index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        expires_at: u64,
    },
    Delete {
        key: &'a [u8],
    },
}

impl<'a> Change<'a> {
    /// The key it writes.
    pub fn key(&self) -> &'a [u8] {
        match *self {
            Change::Put { key, .. } | Change::Delete { key } => key,
        }
    }

    /// Bytes its record takes, padding included.
    pub fn len(&self) -> usize {
        match self {
            Change::Put { key, value, .. } => record::padded_len(key.len(), value.len()),
            Change::Delete { key } => record::padded_len(key.len(), 0),
        }
    }
}

/// Where a write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The segment id written to.
    pub segment: u64,
    /// Offset of the first appended byte.
    pub offset: u64,
}

/// The append side of the store. Lives behind the store's writer mutex.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: Dir,
    max_segment_size: u64,
    /// Bytes appended since open: the log position group commit syncs up to.
    written: u64,
    /// Why writes are refused, after a failure that left the disk state uncertain.
    failure: Option<String>,
    /// Planning memory, kept from write to write.
    buffers: PlanBuffers,
    /// Where large appends are encoded before their `pwrite`.
    staging: Vec<u8>,
    /// The hashes of a write's keys.
    hashes: Vec<KeyHash>,
}

impl Writer {
    pub fn new(dir: Dir, options: &Options) -> Writer {
        Writer {
            dir,
            max_segment_size: options.segment_size(),
            written: 0,
            failure: None,
            buffers: PlanBuffers::default(),
            staging: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// The id of the segment writes go to now, or of the one the next write creates. Every
    /// write from now on lands in a segment with this id or a higher one.
    pub fn write_floor(&self, index: &Index) -> u64 {
        let table = index.table();
        match table.word(header::ACTIVE).load(Ordering::Acquire) as u32 {
            0 => table.word(header::NEXT_WRITER_ID).load(Ordering::Acquire),
            n => table.row(n, row::ID).load(Ordering::Acquire),
        }
    }

    /// The active segment's id and the end of its records: where the next write goes,
    /// unless it rotates. `(0, 0)` before the first segment exists.
    #[cfg(feature = "fuzzing")]
    pub fn position(&self, index: &Index) -> (u64, u64) {
        match self.active(index).ok().flatten() {
            Some((_, seg)) => (seg.id(), seg.end()),
            None => (0, 0),
        }
    }

    /// Bytes appended since open.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Refuses all further writes with `reason` (after a failed fsync).
    pub fn disable(&mut self, reason: String) {
        self.failure.get_or_insert(reason);
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failure {
            Some(reason) => Err(Error::WritesDisabled(reason.clone())),
            None => Ok(()),
        }
    }

    /// The segment appended to, if there is one, with its number. Its end of records is the
    /// segment table's (another process may have appended since this one last looked). An
    /// active segment that cannot be opened is an error, never "none": a writer that took it
    /// for none would start another and leave this one unsealed and unsynced.
    pub fn active(&self, index: &Index) -> Result<Option<(u32, Arc<Segment>)>> {
        let number = index.counter(header::ACTIVE) as u32;
        if number == 0 {
            return Ok(None);
        }
        index.segment(number).map(|seg| Some((number, seg)))
    }

    /// Writes `changes` as one op: their records, contiguous in one segment, and the index
    /// changes, which readers see all at once. A delete of an absent key writes nothing; if
    /// nothing is left, nothing is written (`None`). On error nothing was written.
    pub fn write(&mut self, index: &Index, changes: &[Change<'_>]) -> Result<Option<Appended>> {
        self.check_usable()?;
        let len: usize = changes.iter().map(Change::len).sum();
        let (number, segment) = self.active_with_room(index, len as u64)?;
        let start = index.table().row(number, row::END).load(Ordering::Acquire);
        let planner = loop {
            let table = Arc::clone(&index.table());
            let buffers = std::mem::take(&mut self.buffers);
            let mut planner = Planner::with_buffers(index, Arc::clone(&table), buffers);
            let mut offset = start;
            let mut room = true;
            let hashes = &mut self.hashes;
            hashes.clear();
            hashes.extend(changes.iter().map(|c| planner.hash(c.key())));
            for (i, change) in changes.iter().enumerate() {
                if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                    planner.prefetch(ahead);
                }
                let at = Location { number, offset };
                offset += change.len() as u64;
                match *change {
                    Change::Put {
                        key, expires_at, ..
                    } => {
                        let new = NewRecord {
                            at,
                            len: change.len() as u32,
                            expiring: expires_at != 0,
                        };
                        if planner.put_hashed(key, hashes[i], new)? == Planned::NeedsRoom {
                            room = false;
                            break;
                        }
                    }
                    Change::Delete { key } => {
                        planner.delete_hashed(key, hashes[i])?;
                    }
                }
            }
            let shape = table.shape();
            let planned = planner.entries.len();
            if !room || planned > shape.op_entries as usize {
                self.buffers = planner.into_buffers();
                drop(table);
                grow(index, shape, planned, !room)?;
                continue;
            }
            break planner;
        };
        let entries = &planner.entries;
        if changes.len() == 1 && matches!(changes[0], Change::Delete { .. }) && entries.is_empty() {
            self.buffers = planner.into_buffers();
            return Ok(None);
        }
        let table = index.table();
        let several = changes.len() > 1 || entries.len() > 1;
        let last = changes.len() - 1;
        index.execute(
            &table,
            Some(Append {
                segment: &segment,
                number,
                len,
                staging: &mut self.staging,
            }),
            entries,
            several,
            |buf| {
                let mut at = 0;
                for (i, change) in changes.iter().enumerate() {
                    let more = if i < last {
                        record::FLAG_BATCH_CONTINUES
                    } else {
                        0
                    };
                    let out = &mut buf[at..];
                    match *change {
                        Change::Put {
                            key,
                            value,
                            expires_at,
                        } => record::encode_to(out, more, expires_at, key, value),
                        Change::Delete { key } => {
                            record::encode_to(out, more | record::FLAG_TOMBSTONE, 0, key, &[])
                        }
                    }
                    at += change.len();
                }
            },
        );
        segment.start_writeback();
        self.buffers = planner.into_buffers();
        self.written += len as u64;
        Ok(Some(Appended {
            segment: segment.id(),
            offset: start,
        }))
    }

    /// What an fsync must cover to make every append so far durable: the active segment
    /// (older segments were synced when sealed), with its number, and the log position it
    /// makes durable.
    #[allow(clippy::type_complexity)]
    pub fn sync_target(&mut self, index: &Index) -> Result<(Option<(u32, Arc<Segment>)>, u64)> {
        self.check_usable()?;
        Ok((self.active(index)?, self.written))
    }

    /// The active segment, after rotating if `len` more bytes would not fit in it.
    fn active_with_room(&mut self, index: &Index, len: u64) -> Result<(u32, Arc<Segment>)> {
        if let Some((number, active)) = self.active(index)? {
            if len <= active.room() {
                return Ok((number, active));
            }
            self.seal_active(index)?;
        }
        // A record larger than a segment gets a segment of its own, as large as it needs.
        let start = data_start(FORMAT_VERSION) as u64;
        let capacity = self.max_segment_size.max(start + len).min(MAX_SEGMENT_LEN);
        let id = index.counter(header::NEXT_WRITER_ID);
        if self.dir.exists(&crate::segment::path(&self.dir, id)) {
            // Left by a writer of another process that died between creating the file and
            // recording it: no row names it, nothing points into it.
            crate::segment::remove(&self.dir, id)?;
        }
        let segment = Arc::new(Segment::create(&self.dir, id, capacity)?);
        let number = index.add_row(id, row::ACTIVE, capacity, start, FORMAT_VERSION)?;
        index.register(number, Arc::clone(&segment));
        let table = index.table();
        table
            .word(header::NEXT_WRITER_ID)
            .store(next_writer_id(id), Ordering::Release);
        table
            .word(header::ACTIVE)
            .store(u64::from(number), Ordering::Release);
        Ok((number, segment))
    }

    /// Makes the active segment durable and immutable. A sealed segment is always fully
    /// synced, which keeps every crash state a prefix of the log.
    pub fn seal_active(&mut self, index: &Index) -> Result<()> {
        self.check_usable()?;
        let Some((number, active)) = self.active(index)? else {
            return Ok(());
        };
        if let Err(e) = index.sync_segment(number, &active) {
            let reason = format!("fsync of segment {} failed: {e}", active.id());
            self.disable(reason);
            return Err(Error::io("syncing", active.path(), e));
        }
        let table = index.table();
        table
            .row(number, row::STATE)
            .store(row::SEALED, Ordering::Release);
        table.word(header::ACTIVE).store(0, Ordering::Release);
        active.seal();
        Ok(())
    }
}

/// Grows the index: more regions if a key found no room (`for_room`), else an op log that
/// holds `entries`.
pub(crate) fn grow(index: &Index, shape: Shape, entries: usize, for_room: bool) -> Result<()> {
    let mut bigger = shape;
    if for_room {
        if shape.region_bits >= slot::MAX_REGION_BITS {
            return Err(Error::IndexFull);
        }
        bigger.region_bits += 1;
    } else {
        bigger.op_entries = (entries as u32).next_power_of_two();
    }
    index.grow(bigger)
}
