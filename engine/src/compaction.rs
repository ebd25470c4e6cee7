//! Compaction (merge): copies the live records of sealed segments into new segments, points
//! the index at the copies, and removes the old files, while reads and writes go on.
//!
//! Ordering is what makes it safe. Output segments take ids right after every existing
//! segment below the writer's current segment (writer ids leave gaps for this), so on open
//! they replay after their inputs and before any write made during or after the compaction.
//! Each output is written under a temporary name, fsynced, renamed and its directory fsynced
//! before the index points at it; inputs are deleted only after every output is durable, in
//! ascending id order, so a tombstone's segment never disappears before an older value it
//! hides.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::error::{Error, IoContext, Result};
use crate::hint::{self, HintBuilder, HintEntry};
use crate::keydir::Location;
use crate::pacer::Pacer;
use crate::record::{self, FLAG_TOMBSTONE};
use crate::scan::Records;
use crate::segment::{self, FORMAT_VERSION, FileKind, Segment};
use crate::store::Inner;

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
    /// Wall-clock time.
    pub duration: Duration,
    /// Part of it spent paused so that durable writes made meanwhile were not held up (see
    /// docs/guarantees.md, "Compaction and durable writes").
    pub paused: Duration,
}

/// A record copied into an output, to be pointed at once the output is durable.
struct Moved {
    key: Box<[u8]>,
    from: Location,
    to: Location,
}

/// An output segment being written under its temporary name.
struct Output {
    id: u64,
    temp: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes of the segment so far (file and buffer).
    len: u64,
    hint: HintBuilder,
    moved: Vec<Moved>,
    /// Bytes of tombstones written: dead from the start.
    tombstone_bytes: u64,
    /// Bytes handed to the OS since the last fdatasync.
    unsynced: u64,
    /// Bytes handed to the OS since the pacer last looked.
    unpaced: u64,
}

const OUTPUT_BUFFER: usize = 1 << 20;

impl Output {
    fn create(dir: &Path, id: u64) -> Result<Output> {
        let temp = segment::temp_path(dir, id, FileKind::Data);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .context("creating a compaction output", &temp)?;
        let mut header = segment::encode_header(id, FileKind::Data).to_vec();
        header.resize(segment::data_start(FORMAT_VERSION), 0);
        if let Err(e) = file.write_all(&header) {
            let _ = fs::remove_file(&temp);
            return Err(Error::io("writing a compaction output", &temp, e));
        }
        Ok(Output {
            id,
            temp,
            file,
            buf: Vec::with_capacity(OUTPUT_BUFFER),
            len: header.len() as u64,
            hint: HintBuilder::new(id, FORMAT_VERSION),
            moved: Vec::new(),
            tombstone_bytes: 0,
            unsynced: 0,
            unpaced: 0,
        })
    }

    /// Appends a record; returns its location.
    fn push(&mut self, flags: u8, expires_at: u64, key: &[u8], value: &[u8]) -> Result<Location> {
        let offset = self.len;
        record::encode_into(&mut self.buf, flags, expires_at, key, value);
        let len = record::padded_len(key.len(), value.len()) as u32;
        self.len += u64::from(len);
        let tombstone = flags & FLAG_TOMBSTONE != 0;
        self.hint.push(&HintEntry {
            tombstone,
            expires_at,
            offset: offset as u32,
            len,
            key,
        });
        if tombstone {
            self.tombstone_bytes += u64::from(len);
        }
        if self.buf.len() >= OUTPUT_BUFFER {
            self.write_buffer()?;
        }
        Ok(Location {
            segment: self.id,
            offset: offset as u32,
            len,
            expires_at,
        })
    }

    fn write_buffer(&mut self) -> Result<()> {
        self.file
            .write_all(&self.buf)
            .context("writing a compaction output", &self.temp)?;
        self.unsynced += self.buf.len() as u64;
        self.unpaced += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// After each buffer written, lets the pacer slow the compaction down while durable
    /// writers are syncing (see [`crate::pacer`]).
    fn pace(&mut self, pacer: &mut Pacer, foreground_syncs: u64) -> Result<Duration> {
        if self.unpaced == 0 {
            return Ok(Duration::ZERO);
        }
        let step = pacer.after_chunk(self.unpaced, foreground_syncs, self.unsynced);
        self.unpaced = 0;
        if step.sync {
            self.file
                .sync_data()
                .context("syncing a compaction output", &self.temp)?;
            self.unsynced = 0;
        }
        if !step.sleep.is_zero() {
            std::thread::sleep(step.sleep);
        }
        Ok(step.sleep)
    }

    /// Makes the output durable under its final name, with its hint file, and opens it as a
    /// sealed segment.
    fn finish(mut self, dir: &Path) -> Result<(Segment, Vec<Moved>, u64)> {
        self.write_buffer()?;
        self.file
            .sync_all()
            .context("syncing a compaction output", &self.temp)?;
        let path = segment::path(dir, self.id);
        fs::rename(&self.temp, &path).context("renaming a compaction output", &self.temp)?;
        segment::sync_dir(dir)?;
        drop(self.file);
        let seg = Segment::open(dir, self.id, false)?;
        seg.set_end(self.len);
        // The data is durable; a hint that fails to be written only makes the next open slower.
        let hint = self.hint.finish(self.len);
        seg.set_has_hint(hint::write(dir, self.id, &hint).is_ok());
        Ok((seg, self.moved, self.tombstone_bytes))
    }

    /// Removes the unfinished output.
    fn abandon(self) {
        let _ = fs::remove_file(&self.temp);
    }
}

/// Compacts `inputs` (sealed segments, ascending by id), calling `progress(bytes read, bytes
/// to read)` after each input. The caller holds the store's compaction lock.
pub(crate) fn compact(
    inner: &Inner,
    inputs: &[Arc<Segment>],
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
    let input_ids: BTreeSet<u64> = inputs.iter().map(|s| s.id()).collect();
    // Every write from now on goes to a segment with an id of at least `floor`.
    let floor = inner.writer.lock().write_floor();
    let (mut next_id, oldest_outside) = {
        let segments = inner.segments.read();
        let next_id = segments
            .range(..floor)
            .next_back()
            .map_or(0, |(&id, _)| id + 1);
        let oldest_outside = segments.keys().copied().find(|id| !input_ids.contains(id));
        (next_id, oldest_outside)
    };
    let now = now_ms();
    let total: u64 = inputs.iter().map(|s| s.end()).sum();
    let mut out: Option<Output> = None;
    let mut pacer = Pacer::new(inner.commit.syncs());
    let mut expired: Vec<(Box<[u8]>, Location)> = Vec::new();
    let result = (|| -> Result<()> {
        for seg in inputs {
            progress(stats.bytes_read, total);
            let bytes = seg.read(0, seg.end() as usize)?;
            stats.bytes_read += bytes.len() as u64;
            let mut walk = Records::new(bytes, seg.version());
            for (offset, rec) in walk.by_ref() {
                if inner.is_closing() {
                    return Err(Error::Closed);
                }
                let from = Location {
                    segment: seg.id(),
                    offset: offset as u32,
                    len: record::span(rec.encoded_len(), seg.version()) as u32,
                    expires_at: rec.expires_at,
                };
                let current = inner.keydir.read().get(rec.key);
                let is_current =
                    current.is_some_and(|l| l.segment == from.segment && l.offset == from.offset);
                let is_expired = from.is_expired(now);
                if is_current && !is_expired {
                    let output = match &mut out {
                        Some(o) => o,
                        None => out.insert(new_output(inner, &mut next_id, floor)?),
                    };
                    let to = output.push(0, rec.expires_at, rec.key, rec.value)?;
                    output.moved.push(Moved {
                        key: rec.key.into(),
                        from,
                        to,
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
                    if deletes && older_outside && (current.is_none() || is_current) {
                        let output = match &mut out {
                            Some(o) => o,
                            None => out.insert(new_output(inner, &mut next_id, floor)?),
                        };
                        output.push(FLAG_TOMBSTONE, 0, rec.key, &[])?;
                        stats.tombstones_kept += 1;
                    } else {
                        stats.records_dropped += 1;
                    }
                }
                if let Some(o) = out.as_mut() {
                    stats.paused += o.pace(&mut pacer, inner.commit.syncs())?;
                }
                if out
                    .as_ref()
                    .is_some_and(|o| o.len >= inner.options.max_segment_size)
                {
                    let done = out.take().expect("checked");
                    stats.bytes_written += install(inner, done)?;
                    stats.segments_out += 1;
                }
            }
            if let Some((offset, reason)) = walk.end().and_then(|end| end.invalid) {
                return Err(Error::Corrupt {
                    segment: seg.id(),
                    offset,
                    reason,
                });
            }
        }
        if let Some(done) = out.take() {
            stats.bytes_written += install(inner, done)?;
            stats.segments_out += 1;
        }
        progress(total, total);
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(o) = out.take() {
            o.abandon();
        }
        return Err(e);
    }

    {
        let mut keydir = inner.keydir.write();
        for (key, from) in &expired {
            keydir.remove_if_at(key, from);
        }
    }
    retire_inputs(inner, inputs, &input_ids)?;
    stats.bytes_reclaimed = stats.bytes_read.saturating_sub(stats.bytes_written);
    stats.duration = started.elapsed();
    Ok(stats)
}

fn new_output(inner: &Inner, next_id: &mut u64, floor: u64) -> Result<Output> {
    if *next_id >= floor {
        return Err(Error::SegmentIdsExhausted);
    }
    let output = Output::create(&inner.dir, *next_id)?;
    *next_id += 1;
    Ok(output)
}

/// Makes a finished output durable and visible, then points the index at the records it
/// holds, unless a newer write moved a key meanwhile. Returns the output's size.
fn install(inner: &Inner, output: Output) -> Result<u64> {
    let (seg, moved, tombstone_bytes) = output.finish(&inner.dir)?;
    let (id, len) = (seg.id(), seg.end());
    inner.segments.write().insert(id, Arc::new(seg));
    // Swap in chunks so readers never wait long for the index.
    for chunk in moved.chunks(4096) {
        let mut keydir = inner.keydir.write();
        for m in chunk {
            keydir.relocate(&m.key, &m.from, m.to);
        }
    }
    inner.keydir.write().add_dead_records(id, tombstone_bytes);
    Ok(len)
}

/// Drops the inputs from the store and deletes their files, oldest first.
fn retire_inputs(inner: &Inner, inputs: &[Arc<Segment>], ids: &BTreeSet<u64>) -> Result<()> {
    {
        let mut keydir = inner.keydir.write();
        #[cfg(debug_assertions)]
        keydir.assert_nothing_in(ids);
        keydir.forget_segments(ids);
    }
    {
        let mut segments = inner.segments.write();
        for id in ids {
            segments.remove(id);
        }
    }
    // Oldest first, each deletion durable before the next.
    for seg in inputs {
        segment::remove(&inner.dir, seg.id())?;
    }
    Ok(())
}
