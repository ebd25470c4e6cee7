//! The single writer: appends encoded records to the active segment's map, rotates segments,
//! and refuses writes once the disk state is uncertain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::options::Options;
use crate::segment::{FORMAT_VERSION, MAX_SEGMENT_LEN, Segment, data_start, next_writer_id};

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
    /// The segment appended to; created on the first write that needs one.
    active: Option<Arc<Segment>>,
    next_segment_id: u64,
    /// Bytes appended since open: the log position group commit syncs up to.
    written: u64,
    /// Why writes are refused, after a failure that left the disk state uncertain.
    failure: Option<String>,
}

impl Writer {
    /// A writer that appends to `active` (a writable segment recovery found room in), or
    /// creates segment `next_segment_id` on its first append.
    pub fn new(
        dir: PathBuf,
        options: &Options,
        active: Option<Arc<Segment>>,
        next_segment_id: u64,
    ) -> Writer {
        Writer {
            dir,
            max_segment_size: options.max_segment_size,
            active,
            next_segment_id,
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

    /// The active segment and the end of its records: where the next append goes, unless it
    /// rotates. `(0, 0)` before the first segment exists.
    #[cfg(feature = "fuzzing")]
    pub fn position(&self) -> (u64, u64) {
        self.active.as_ref().map_or((0, 0), |a| (a.id(), a.end()))
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

    /// Appends `len` bytes (a multiple of the record alignment) that `encode` writes, to the
    /// active segment, rotating first if they do not fit. All `len` bytes land in one segment
    /// and become readable together; they are in the OS's page cache when this returns. On
    /// error nothing was appended.
    pub fn append(
        &mut self,
        len: usize,
        segments: &SegmentMap,
        encode: impl FnOnce(&mut [u8]),
    ) -> Result<Appended> {
        self.check_usable()?;
        let active = self.active_with_room(len as u64, segments)?;
        let offset = active.append(len, encode);
        self.written += len as u64;
        Ok(Appended {
            segment: active.id(),
            offset,
        })
    }

    /// What an fsync must cover to make every append so far durable: the active segment
    /// (older segments were synced when sealed) and the log position it makes durable.
    pub fn sync_target(&mut self) -> Result<(Option<Arc<Segment>>, u64)> {
        self.check_usable()?;
        Ok((self.active.clone(), self.written))
    }

    /// The active segment, after rotating if `len` more bytes would not fit in it.
    fn active_with_room(&mut self, len: u64, segments: &SegmentMap) -> Result<Arc<Segment>> {
        if let Some(active) = &self.active {
            if len <= active.room() {
                return Ok(Arc::clone(active));
            }
            self.seal_active(segments)?;
        }
        // A record larger than a segment gets a segment of its own, as large as it needs.
        let start = data_start(FORMAT_VERSION) as u64;
        let capacity = self.max_segment_size.max(start + len).min(MAX_SEGMENT_LEN);
        let segment = Arc::new(Segment::create(&self.dir, self.next_segment_id, capacity)?);
        self.next_segment_id = next_writer_id(segment.id());
        segments.write().insert(segment.id(), Arc::clone(&segment));
        self.active = Some(Arc::clone(&segment));
        Ok(segment)
    }

    /// Makes the active segment durable and immutable. A sealed segment is always fully
    /// synced, which keeps every crash state a prefix of the log.
    pub fn seal_active(&mut self, _segments: &SegmentMap) -> Result<()> {
        self.check_usable()?;
        let Some(active) = self.active.clone() else {
            return Ok(());
        };
        if let Err(e) = active.sync_data() {
            let reason = format!("fsync of segment {} failed: {e}", active.id());
            self.disable(reason);
            return Err(Error::io("syncing", active.path(), e));
        }
        active.seal();
        self.active = None;
        Ok(())
    }
}
