//! Size-limit eviction: delete the oldest segments, and the keys whose newest value they
//! hold, until the store fits in `Options::max_disk_bytes` (least-recently-stored).
//!
//! Deleting the oldest segment can never bring a value back: no older segment exists for a
//! tombstone in it to be hiding. Keys whose newest record is in it simply disappear.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::keydir::Location;
use crate::record;
use crate::scan::Records;
use crate::segment::{self, Segment};
use crate::store::Inner;

/// Evicts oldest sealed segments while the store is over `limit` bytes; returns how many keys
/// were evicted. The caller holds the compaction lock.
pub(crate) fn evict_to_limit(inner: &Inner, limit: u64) -> Result<u64> {
    let mut evicted = 0;
    loop {
        let (total, oldest) = {
            let segments = inner.segments.read();
            let total: u64 = segments.values().map(|s| s.disk_len()).sum();
            (total, segments.values().next().cloned())
        };
        let Some(oldest) = oldest.filter(|s| s.is_sealed()) else {
            return Ok(evicted);
        };
        if total <= limit || inner.is_closing() {
            return Ok(evicted);
        }
        evicted += evict_segment(inner, &oldest)?;
    }
}

/// Removes one (the oldest) segment and every key whose newest record it holds.
fn evict_segment(inner: &Inner, seg: &Arc<Segment>) -> Result<u64> {
    let mut doomed: Vec<(Box<[u8]>, Location)> = Vec::new();
    {
        let keydir = inner.keydir.read();
        let mut walk = Records::new(seg.read(0, seg.end() as usize)?, seg.version());
        for (offset, rec) in walk.by_ref() {
            if keydir
                .get(rec.key)
                .is_some_and(|l| l.segment == seg.id() && u64::from(l.offset) == offset)
            {
                let at = Location {
                    segment: seg.id(),
                    offset: offset as u32,
                    len: record::span(rec.encoded_len(), seg.version()) as u32,
                    expires_at: rec.expires_at,
                };
                doomed.push((rec.key.into(), at));
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
    {
        let mut keydir = inner.keydir.write();
        for (key, at) in &doomed {
            keydir.remove_if_at(key, at);
        }
        keydir.forget_segments(&BTreeSet::from([seg.id()]));
        // Counted under the index lock, so `stats()` never sees keys gone but not counted.
        inner.count_evictions(doomed.len() as u64);
    }
    inner.segments.write().remove(&seg.id());
    segment::remove(&inner.dir, seg.id())?;
    Ok(doomed.len() as u64)
}
