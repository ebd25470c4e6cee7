//! Size-limit eviction: delete the oldest segments, and the keys whose newest value they
//! hold, until the store fits in `Options::max_disk_bytes` (least-recently-stored).
//!
//! Deleting the oldest segment can never bring a value back: no older segment exists for a
//! tombstone in it to be hiding. Keys whose newest record is in it simply disappear.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::index::file::{header, row};
use crate::index::slot::Location;
use crate::scan::Records;
use crate::segment::{self, Segment};
use crate::shared::Shared;

/// Bytes the store's segments take on disk as the size limit counts them.
pub(crate) fn disk_bytes(shared: &Shared) -> u64 {
    let table = shared.index.table();
    shared
        .index
        .rows()
        .into_iter()
        .map(|(number, _)| {
            if table.row(number, row::STATE).load(Ordering::Acquire) == row::ACTIVE {
                table.row(number, row::CAPACITY).load(Ordering::Acquire)
            } else {
                table.row(number, row::END).load(Ordering::Acquire)
            }
        })
        .fold(0u64, u64::saturating_add)
}

/// Bytes of the index files: the table, the pointer and the counters.
pub(crate) fn index_bytes(shared: &Shared) -> u64 {
    let counters = match shared
        .dir
        .vfs()
        .kind(&shared.dir.join(crate::counters::COUNTERS_FILE))
    {
        Ok(Some(crate::vfs::EntryKind::File(len))) => len,
        _ => 0,
    };
    shared.index.table().shape().file_len() + crate::index::file::PAGE as u64 + counters
}

/// Evicts oldest sealed segments while the store (segments and index) is over `limit` bytes;
/// returns how many keys were evicted. The caller holds the maintenance lock.
pub(crate) fn evict_to_limit(shared: &Shared, limit: u64) -> Result<u64> {
    let mut evicted = 0;
    loop {
        if disk_bytes(shared) + index_bytes(shared) <= limit || shared.is_closing() {
            return Ok(evicted);
        }
        let table = shared.index.table();
        let oldest = shared.index.rows().into_iter().next();
        let Some((number, _)) = oldest
            .filter(|&(n, _)| table.row(n, row::STATE).load(Ordering::Acquire) == row::SEALED)
        else {
            return Ok(evicted);
        };
        drop(table);
        let seg = shared.index.segment(number)?;
        evicted += evict_segment(shared, number, &seg)?;
    }
}

/// Removes one (the oldest) segment and every key whose newest record it holds.
fn evict_segment(shared: &Shared, number: u32, seg: &Arc<Segment>) -> Result<u64> {
    let mut doomed: Vec<(Box<[u8]>, Location)> = Vec::new();
    seg.read_ahead(seg.end());
    // Damage is skipped: a slot left pointing into it is cleared with the segment's others.
    let mut walk =
        Records::skipping_damage(seg.read(0, seg.end() as usize)?, seg.version(), u64::MAX);
    for (offset, rec) in walk.by_ref() {
        let at = Location { number, offset };
        if shared.is_current(rec.key, at) {
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
    let mut evicted = 0u64;
    for chunk in doomed.chunks(crate::compaction::chunk(shared)) {
        let mut removed = 0;
        shared.change_index(|plan| {
            removed = 0;
            for (key, at) in chunk {
                removed += usize::from(plan.remove_if_at(key, *at)?);
            }
            Ok(true)
        })?;
        evicted += removed as u64;
    }
    shared
        .index
        .table()
        .word(header::EVICTIONS)
        .fetch_add(evicted, Ordering::AcqRel);
    shared.clear_slots_into(&[number])?;
    segment::remove(&shared.dir, seg.id())?;
    let _writer = shared.lock_writer()?;
    shared.index.free_row(number);
    Ok(evicted)
}
