//! Store configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::segment::MAX_SEGMENT_LEN;
use crate::vfs::{self, Vfs};

/// The smallest segment size accepted.
const MIN_SEGMENT_LEN: u64 = 64;

/// When a write is handed to the operating system and to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The same as [`Durability::Flush`]: every write goes straight into the segment's shared
    /// map, so there is nothing to buffer. Kept for the programs that name it.
    None,
    /// Every write is in the OS's page cache (the segment's shared map) before it returns: it
    /// survives a crash of the process, not of the machine.
    #[default]
    Flush,
    /// Every write is on disk (fdatasync) before it returns. Concurrent writers share one
    /// fdatasync (group commit).
    Sync,
}

/// Options for [`Store::open`](crate::Store::open).
#[derive(Clone, Debug)]
pub struct Options {
    /// Size of a segment file: each is created (and its disk space reserved) at this size, and
    /// a new one started when the next write does not fit. A single record or batch larger
    /// than this gets a segment of its own, as large as it needs. At most 1 GiB.
    pub max_segment_size: u64,
    /// Largest accepted key, in bytes.
    pub max_key_size: usize,
    /// Largest accepted value, in bytes.
    pub max_value_size: usize,
    /// When writes reach the OS and the disk.
    pub durability: Durability,
    /// Compact automatically in a background thread (and write hint files for sealed
    /// segments). [`Store::compact`](crate::Store::compact) works either way.
    pub auto_compaction: bool,
    /// Run maintenance on a background thread: automatic compaction (if on), hint files for
    /// sealed segments, and eviction to [`Options::max_disk_bytes`]. Off, nothing runs
    /// behind the caller's back: the size limit is enforced by
    /// [`Store::compact`](crate::Store::compact) only (a deterministic simulation needs
    /// that). On by default.
    pub background: bool,
    /// A sealed segment is compacted once this share of its bytes is dead (overwritten,
    /// deleted or expired). In `(0, 1]`.
    pub compaction_dead_ratio: f64,
    /// Once this many bytes of sealed segments are dead in all, every sealed segment up to
    /// the newest one with dead bytes is compacted.
    pub compaction_dead_bytes: u64,
    /// How often the background thread checks whether to compact.
    pub compaction_interval: Duration,
    /// Keep the store's files (segments and index) under this many bytes by deleting the
    /// oldest segments, and with them the keys whose newest value they hold
    /// (least-recently-stored eviction, like `diskcache`'s default). Segments are then at most
    /// an eighth of the limit (and at least 64 KiB), so eviction works in small steps. Enforced
    /// by the background thread, which a write wakes as soon as a new segment takes the store
    /// over the limit; the newest segment is never evicted. `None`: no limit.
    pub max_disk_bytes: Option<u64>,
    /// Keep every other store (in this process or another) off the directory while this one
    /// is open: opening fails with [`Error::Locked`](crate::Error::Locked) if another has it
    /// open, and later opens fail likewise. Writes then skip the cross-process writer lock.
    /// Off by default: any number of processes may open a store and read and write at once.
    pub exclusive: bool,
    /// Open for reading only: no file in the directory is created or changed, and every write
    /// is [`Error::ReadOnly`](crate::Error::ReadOnly). The index must have been closed
    /// cleanly (a store shipped pre-warmed, for example in a container image). Chosen
    /// automatically when the directory cannot be written to.
    pub read_only: bool,
    /// Refuse damage instead of skipping it: a rebuild that finds a damaged record in a
    /// segment known to be durable fails with [`Error::Corrupt`](crate::Error::Corrupt), and so
    /// does a read of a damaged record. Off by default: a damaged record costs its entry (and
    /// the one after it, see docs/guarantees.md), is reported, and the store goes on.
    pub strict: bool,
    /// Rebuild an index that cannot be trusted (after an OS crash or a power cut, or missing
    /// or damaged) from the segments, as opening needs. Off: such an open fails with
    /// [`Error::BadIndex`](crate::Error::BadIndex) and changes nothing, since a rebuild
    /// writes the index and may cut a torn tail off the newest segment; commands that only
    /// read (`logcache stats`, `get`, `keys`, `export`) open so. On by default.
    pub rebuild_index: bool,
    /// The file system the store's files live on: the real one by default; a
    /// [`Faulty`](crate::vfs::Faulty) one, or a simulated disk, in tests.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_segment_size: 64 << 20,
            max_key_size: 64 << 10,
            max_value_size: 64 << 20,
            durability: Durability::default(),
            auto_compaction: true,
            background: true,
            compaction_dead_ratio: 0.5,
            compaction_dead_bytes: 256 << 20,
            compaction_interval: Duration::from_secs(1),
            max_disk_bytes: None,
            exclusive: false,
            read_only: false,
            strict: false,
            rebuild_index: true,
            vfs: vfs::real(),
        }
    }
}

impl Options {
    /// Sets [`Options::vfs`].
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Self {
        self.vfs = vfs;
        self
    }

    /// Sets [`Options::rebuild_index`].
    pub fn rebuild_index(mut self, rebuild: bool) -> Self {
        self.rebuild_index = rebuild;
        self
    }

    /// Sets [`Options::strict`].
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`Options::read_only`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`Options::exclusive`].
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Sets [`Options::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Options::max_segment_size`].
    pub fn max_segment_size(mut self, bytes: u64) -> Self {
        self.max_segment_size = bytes;
        self
    }

    /// Sets [`Options::max_key_size`].
    pub fn max_key_size(mut self, bytes: usize) -> Self {
        self.max_key_size = bytes;
        self
    }

    /// Sets [`Options::max_value_size`].
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets [`Options::auto_compaction`].
    pub fn auto_compaction(mut self, on: bool) -> Self {
        self.auto_compaction = on;
        self
    }

    /// Sets [`Options::background`].
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Sets [`Options::compaction_dead_ratio`].
    pub fn compaction_dead_ratio(mut self, ratio: f64) -> Self {
        self.compaction_dead_ratio = ratio;
        self
    }

    /// Sets [`Options::compaction_dead_bytes`].
    pub fn compaction_dead_bytes(mut self, bytes: u64) -> Self {
        self.compaction_dead_bytes = bytes;
        self
    }

    /// Sets [`Options::compaction_interval`].
    pub fn compaction_interval(mut self, every: Duration) -> Self {
        self.compaction_interval = every;
        self
    }

    /// Sets [`Options::max_disk_bytes`].
    pub fn max_disk_bytes(mut self, limit: Option<u64>) -> Self {
        self.max_disk_bytes = limit;
        self
    }

    /// Checks that the options are within what the format can address.
    /// The size segments are created at: `max_segment_size`, or less under a size limit.
    pub(crate) fn segment_size(&self) -> u64 {
        match self.max_disk_bytes {
            Some(limit) => self
                .max_segment_size
                .min((limit / 8).max(64 << 10))
                .max(MIN_SEGMENT_LEN),
            None => self.max_segment_size,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidOptions(msg));
        if self.max_segment_size < MIN_SEGMENT_LEN || self.max_segment_size > MAX_SEGMENT_LEN {
            return bad(format!(
                "max_segment_size must be in {MIN_SEGMENT_LEN}..={MAX_SEGMENT_LEN}, got {}",
                self.max_segment_size
            ));
        }
        if self.max_key_size > MAX_KEY_LEN {
            return bad(format!(
                "max_key_size must be at most {MAX_KEY_LEN}, got {}",
                self.max_key_size
            ));
        }
        if self.max_value_size > MAX_VALUE_LEN {
            return bad(format!(
                "max_value_size must be at most {MAX_VALUE_LEN}, got {}",
                self.max_value_size
            ));
        }
        if !(self.compaction_dead_ratio > 0.0 && self.compaction_dead_ratio <= 1.0) {
            return bad(format!(
                "compaction_dead_ratio must be in (0, 1], got {}",
                self.compaction_dead_ratio
            ));
        }
        if self.compaction_interval.is_zero() {
            return bad("compaction_interval must not be zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Options::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_options_are_rejected() {
        for opts in [
            Options::default().max_segment_size(0),
            Options::default().max_segment_size(MAX_SEGMENT_LEN + 1),
            Options::default().max_key_size(MAX_KEY_LEN + 1),
            Options::default().max_value_size(MAX_VALUE_LEN + 1),
            Options::default().compaction_dead_ratio(0.0),
            Options::default().compaction_dead_ratio(f64::NAN),
            Options::default().compaction_dead_ratio(1.5),
            Options::default().compaction_interval(Duration::ZERO),
        ] {
            assert!(matches!(opts.validate(), Err(Error::InvalidOptions(_))));
        }
    }
}
