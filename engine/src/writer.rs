//! The single writer: appends encoded records to the active segment through a buffer, rotates
//! segments, and keeps the files consistent when a write fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::options::{Durability, Options};
use crate::segment::{SEGMENT_HEADER_LEN, Segment, next_writer_id};

/// Every segment of the store by id, the active one included.
pub(crate) type SegmentMap = RwLock<BTreeMap<u64, Arc<Segment>>>;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The segment written to.
    pub segment: u64,
    /// Offset of the first appended byte.
    pub offset: u64,
}

/// The append side of the store. Lives behind the store's writer mutex.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    max_segment_size: u64,
    buffer_size: usize,
    durability: Durability,
    /// The segment appended to; created on the first write after open.
    active: Option<Arc<Segment>>,
    next_segment_id: u64,
    /// Bytes of the active segment not yet handed to the OS; they follow its file length.
    buf: Vec<u8>,
    /// Bytes handed to the OS since open: the log position group commit syncs up to.
    written: u64,
    /// Why writes are refused, after a failure that left the disk state uncertain.
    failure: Option<String>,
}

impl Writer {
    /// A writer that will create segment `next_segment_id` on its first append.
    pub fn new(dir: PathBuf, options: &Options, next_segment_id: u64) -> Writer {
        Writer {
            dir,
            max_segment_size: options.max_segment_size,
            buffer_size: options.write_buffer_size,
            durability: options.durability,
            active: None,
            next_segment_id,
            buf: Vec::new(),
            written: 0,
            failure: None,
        }
    }

    /// The id of the segment writes go to now, or of the one the next write creates. Every
    /// write from now on lands in a segment with this id or a higher one.
    pub fn write_floor(&self) -> u64 {
        self.active
            .as_ref()
            .map_or(self.next_segment_id, |a| a.id())
    }

    /// Bytes handed to the OS since open.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Refuses all further writes with `reason` (after a failed fsync or a failed cleanup).
    pub fn disable(&mut self, reason: String) {
        self.failure.get_or_insert(reason);
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failure {
            Some(reason) => Err(Error::WritesDisabled(reason.clone())),
            None => Ok(()),
        }
    }

    /// Appends `len` bytes produced by `encode` to the active segment, rotating first if they
    /// do not fit. All `len` bytes land in one segment. With `Durability::Flush` or `Sync` they
    /// reach the OS before this returns. On error nothing of them remains, in the buffer or in
    /// the file.
    pub fn append(
        &mut self,
        len: usize,
        segments: &SegmentMap,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Appended> {
        self.check_usable()?;
        let active = self.active_with_room(len as u64, segments)?;
        let appended = Appended {
            segment: active.id(),
            offset: active.file_len() + self.buf.len() as u64,
        };
        let before = self.buf.len();
        encode(&mut self.buf);
        debug_assert_eq!(self.buf.len() - before, len);
        let must_flush = self.durability != Durability::None || self.buf.len() >= self.buffer_size;
        if must_flush && let Err(e) = self.flush() {
            self.buf.truncate(before);
            return Err(e);
        }
        Ok(appended)
    }

    /// Hands the buffered bytes to the OS. On failure the file is cut back to where it was, so
    /// it never holds a partial record, and the bytes stay buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        let Some(active) = &self.active else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let active = Arc::clone(active);
        let before = active.file_len();
        if let Err(e) = active.append(&self.buf) {
            if let Err(cleanup) = active.truncate(before) {
                self.disable(format!(
                    "could not cut segment {} back after a failed write: {cleanup}",
                    active.id()
                ));
            }
            return Err(Error::io("appending to", active.path(), e));
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Flushes and returns what an fsync must cover: the active segment (older segments were
    /// synced when sealed) and the log position it makes durable.
    pub fn sync_target(&mut self) -> Result<(Option<Arc<Segment>>, u64)> {
        self.flush()?;
        Ok((self.active.clone(), self.written))
    }

    /// A copy of the record bytes at `offset` of `segment` if they are still in the buffer.
    pub fn read_buffered(&self, segment: u64, offset: u64, len: usize) -> Option<Vec<u8>> {
        let active = self.active.as_ref().filter(|a| a.id() == segment)?;
        let start = usize::try_from(offset.checked_sub(active.file_len())?).ok()?;
        self.buf
            .get(start..start.checked_add(len)?)
            .map(<[u8]>::to_vec)
    }

    /// The active segment, after rotating if `len` more bytes would overflow it.
    fn active_with_room(&mut self, len: u64, segments: &SegmentMap) -> Result<Arc<Segment>> {
        if let Some(active) = &self.active {
            let used = active.file_len() + self.buf.len() as u64;
            if used == SEGMENT_HEADER_LEN as u64 || used + len <= self.max_segment_size {
                return Ok(Arc::clone(active));
            }
            self.seal_active(segments)?;
        }
        let segment = Arc::new(Segment::create(&self.dir, self.next_segment_id)?);
        self.next_segment_id = next_writer_id(segment.id());
        segments.write().insert(segment.id(), Arc::clone(&segment));
        self.active = Some(Arc::clone(&segment));
        Ok(segment)
    }

    /// Makes the active segment durable and immutable, and swaps in its mapped form. A sealed
    /// segment is always fully synced, which keeps every crash state a prefix of the log.
    pub fn seal_active(&mut self, segments: &SegmentMap) -> Result<()> {
        self.flush()?;
        let Some(active) = self.active.clone() else {
            return Ok(());
        };
        if let Err(e) = active.sync_data() {
            let reason = format!("fsync of segment {} failed: {e}", active.id());
            self.disable(reason);
            return Err(Error::io("syncing", active.path(), e));
        }
        let sealed = Arc::new(active.seal()?);
        segments.write().insert(sealed.id(), sealed);
        self.active = None;
        Ok(())
    }
}
