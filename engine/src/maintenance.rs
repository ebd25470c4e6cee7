//! Background work and explicit compaction: hint files for sealed segments, choosing what to
//! compact, evicting to the size limit. One pass at a time (the store's maintenance lock).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::compaction::{self, CompactionStats, expired_bytes, sealed_usage};
use crate::error::Result;
use crate::eviction;
use crate::hint;
use crate::index::file::row;
use crate::segment::Segment;
use crate::shared::Shared;

/// How old the background thread's count of expired bytes may be (it reads every record the
/// index points at that can expire).
const EXPIRED_SCAN_EVERY: Duration = Duration::from_secs(30);

/// Sealed segments with their numbers, total record bytes and dead bytes (expired entries
/// counted as dead), ascending by id. `fresh`: count expired bytes now, rather than reuse a
/// count up to [`EXPIRED_SCAN_EVERY`] old.
fn usage(shared: &Shared, fresh: bool) -> Vec<(u32, Arc<Segment>, u64, u64)> {
    let expired = {
        let mut cached = shared.expired_scan.lock();
        let stale = cached.0.is_none_or(|at| at.elapsed() >= EXPIRED_SCAN_EVERY);
        if fresh || stale {
            *cached = (Some(Instant::now()), expired_bytes(shared, now_ms()));
        }
        cached.1.clone()
    };
    sealed_usage(shared, &expired)
}

/// Every sealed segment up to the newest one with dead bytes: a prefix of the log, so every
/// tombstone in it can be dropped.
fn select_all_dirty(usage: &[(u32, Arc<Segment>, u64, u64)]) -> Vec<(u32, Arc<Segment>)> {
    let Some(last_dirty) = usage.iter().rposition(|u| u.3 > 0) else {
        return Vec::new();
    };
    usage[..=last_dirty]
        .iter()
        .map(|(n, s, _, _)| (*n, Arc::clone(s)))
        .collect()
}

/// What automatic compaction should compact now, if anything.
fn select_auto(shared: &Shared) -> Vec<(u32, Arc<Segment>)> {
    let usage = usage(shared, false);
    let total_dead: u64 = usage.iter().map(|u| u.3).sum();
    if total_dead >= shared.options.compaction_dead_bytes {
        return select_all_dirty(&usage);
    }
    usage
        .iter()
        .filter(|(_, _, records, dead)| {
            *dead > 0 && *dead as f64 >= shared.options.compaction_dead_ratio * *records as f64
        })
        .map(|(n, s, _, _)| (*n, Arc::clone(s)))
        .collect()
}

/// Compacts everything with dead bytes (after sealing the active segment), then evicts to the
/// size limit. The caller holds the maintenance lock.
pub(crate) fn compact_all(shared: &Shared, progress: &dyn Fn(u64, u64)) -> Result<CompactionStats> {
    shared.lock_writer()?.seal_active(&shared.index)?;
    let inputs = select_all_dirty(&usage(shared, true));
    let stats = compaction::compact(shared, &inputs, progress)?;
    evict(shared)?;
    Ok(stats)
}

fn evict(shared: &Shared) -> Result<()> {
    if let Some(limit) = shared.options.max_disk_bytes {
        eviction::evict_to_limit(shared, limit)?;
    }
    Ok(())
}

/// Writes hint files for sealed segments that lack one.
fn write_missing_hints(shared: &Shared) {
    let table = shared.index.table();
    let unhinted: Vec<u32> = shared
        .index
        .rows()
        .into_iter()
        .map(|(number, _)| number)
        .filter(|&n| {
            table.row(n, row::STATE).load(Ordering::Acquire) == row::SEALED
                && table.row(n, row::VERSION_AND_FLAGS).load(Ordering::Acquire) & row::HAS_HINT == 0
        })
        .collect();
    drop(table);
    for number in unhinted {
        if shared.is_closing() {
            return;
        }
        let written = shared
            .index
            .segment(number)
            .and_then(|seg| hint::write_for_segment(&shared.dir, &seg));
        match written {
            Ok(()) => {
                let Ok(_writer) = shared.lock_writer() else {
                    shared.count_maintenance_error();
                    continue;
                };
                shared
                    .index
                    .table()
                    .row(number, row::VERSION_AND_FLAGS)
                    .fetch_or(row::HAS_HINT, Ordering::AcqRel);
            }
            Err(_) => shared.count_maintenance_error(),
        }
    }
}

/// One round of background work: hint files for sealed segments that lack one, then an
/// automatic compaction if one is due, then eviction. Failures are counted and retried next
/// round.
pub(crate) fn background_pass(shared: &Shared) {
    let _guard = shared.maintenance.lock();
    // One process at a time: another may be at it already.
    let Some(locks) = &shared.locks else {
        return;
    };
    let _held = match locks.maintenance.try_lock() {
        Ok(Some(held)) => held,
        Ok(None) => return,
        Err(_) => {
            shared.count_maintenance_error();
            return;
        }
    };
    // Another store may have grown the index since this one looked: the rows to hint are
    // those of the current table (no row is freed meanwhile: that takes the maintenance lock).
    if shared.index.refresh().is_err() {
        shared.count_maintenance_error();
        return;
    }
    write_missing_hints(shared);
    if shared.options.auto_compaction && !shared.is_closing() {
        let inputs = select_auto(shared);
        if !inputs.is_empty() && compaction::compact(shared, &inputs, &|_, _| {}).is_err() {
            shared.count_maintenance_error();
        }
    }
    if !shared.is_closing() && evict(shared).is_err() {
        shared.count_maintenance_error();
    }
}
