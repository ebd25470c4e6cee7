//! Carrying out a planned change so that a writer killed at any moment leaves nothing half
//! done: the op log.
//!
//! An op appends its records (if any) and changes slots and counters. Before touching the
//! table it writes, in the table file's op log, every slot change (with the value before) and
//! the counters it will change as they were; then it marks the op `APPLYING`, applies it, and
//! marks it `IDLE`. Whoever finds an op not `IDLE` (the next writer, or the next open) finishes
//! it ([`Index::repair`]): an op still `WRITING` never touched the table, so its partly
//! written records are zeroed and it is dropped; an op `APPLYING` had its records complete,
//! so it is applied again from the log, which gives the same result however far the first
//! attempt got. Applying is idempotent because counters are recomputed from the snapshot,
//! not incremented.

use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use crate::error::Result;
use crate::index::Index;
use crate::index::file::{TableFile, header, row};
use crate::index::plan::Entry;
use crate::index::slot;
use crate::segment::Segment;

/// No op in progress.
pub(crate) const IDLE: u64 = 0;
/// Records are being appended; the table is untouched.
pub(crate) const WRITING: u64 = 1;
/// The records are complete and the log holds the whole change; it is being applied.
pub(crate) const APPLYING: u64 = 2;

/// Where an op's records go.
pub(crate) struct Append<'a> {
    pub segment: &'a Segment,
    pub number: u32,
    pub len: usize,
    /// Memory for [`Segment::append_at`] to fill large appends in.
    pub staging: &'a mut Vec<u8>,
}

/// A record's length (below 2^31: records are at most 1 GiB) and expiry flag in 32 bits.
fn pack(len: u32, expiring: bool) -> u64 {
    debug_assert!(len < 1 << 31);
    u64::from(len) | (u64::from(expiring) << 31)
}

fn unpack(word: u64) -> (u32, bool) {
    ((word & 0x7fff_ffff) as u32, word >> 31 & 1 == 1)
}

impl Index {
    /// Appends the records `encode` writes (if `append`) and applies `entries` to `table`, so
    /// that a crash at any point leaves either none of it or, once its records are complete,
    /// all of it. `several`: the op makes more than one change readers must see together (a
    /// batch, or moves); readers retry while it is applied. The caller holds the writer lock
    /// and planned `entries` against `table` (at most its op log's capacity).
    pub fn execute(
        &self,
        table: &TableFile,
        append: Option<Append<'_>>,
        entries: &[Entry],
        several: bool,
        encode: impl FnOnce(&mut [u8]),
    ) {
        assert!(entries.len() <= table.shape().op_entries as usize);
        debug_assert_eq!(table.word(header::OP_STATE).load(Ordering::Acquire), IDLE);
        let appended = table.word(header::APPENDED).load(Ordering::Acquire);
        match append {
            Some(a) => {
                let start = table.row(a.number, row::END).load(Ordering::Acquire);
                table
                    .word(header::OP_SEGMENT)
                    .store(u64::from(a.number), Ordering::Relaxed);
                table.word(header::OP_START).store(start, Ordering::Relaxed);
                table
                    .word(header::OP_END)
                    .store(start + a.len as u64, Ordering::Relaxed);
                table
                    .word(header::OP_APPENDED_AFTER)
                    .store(appended.wrapping_add(a.len as u64), Ordering::Relaxed);
                table
                    .word(header::OP_STATE)
                    .store(WRITING, Ordering::Release);
                a.segment.append_at(start, a.len, a.staging, encode);
            }
            None => {
                table.word(header::OP_SEGMENT).store(0, Ordering::Relaxed);
                table
                    .word(header::OP_APPENDED_AFTER)
                    .store(appended, Ordering::Relaxed);
            }
        }
        for (i, e) in entries.iter().enumerate() {
            table.op_entry(i, 0).store(e.pos as u64, Ordering::Relaxed);
            table.op_entry(i, 1).store(e.old, Ordering::Relaxed);
            table.op_entry(i, 2).store(e.new, Ordering::Relaxed);
            let lens = pack(e.old_len, e.old_expiring) | (pack(e.new_len, e.new_expiring) << 32);
            table.op_entry(i, 3).store(lens, Ordering::Relaxed);
        }
        let mut touched: SmallVec<[u32; 8]> = entries
            .iter()
            .flat_map(|e| [e.old, e.new])
            .filter(|&v| v != 0)
            .map(|v| slot::location_of(v).number)
            // A damaged slot may name no segment: it has no live bytes to move.
            .filter(|&n| (1..=table.shape().segments).contains(&n))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for (i, &number) in touched.iter().enumerate() {
            let live = table.row(number, row::LIVE).load(Ordering::Acquire);
            table
                .snapshot(i, 0)
                .store(u64::from(number), Ordering::Relaxed);
            table.snapshot(i, 1).store(live, Ordering::Relaxed);
        }
        let keys = table.word(header::KEYS).load(Ordering::Acquire);
        let expiring = table.word(header::EXPIRING).load(Ordering::Acquire);
        table
            .word(header::OP_ENTRIES)
            .store(entries.len() as u64, Ordering::Relaxed);
        table
            .word(header::OP_SNAPSHOTS)
            .store(touched.len() as u64, Ordering::Relaxed);
        table
            .word(header::OP_KEYS_BEFORE)
            .store(keys, Ordering::Relaxed);
        table
            .word(header::OP_EXPIRING_BEFORE)
            .store(expiring, Ordering::Relaxed);
        if several {
            table
                .word(header::BATCH_SEQUENCE)
                .fetch_add(1, Ordering::AcqRel);
        }
        table
            .word(header::OP_STATE)
            .store(APPLYING, Ordering::Release);
        apply_logged(table);
    }

    /// Finishes the op a dead writer left in `table`, if any (see the module docs). The caller
    /// holds the writer lock.
    pub fn repair(&self, table: &TableFile) -> Result<bool> {
        match table.word(header::OP_STATE).load(Ordering::Acquire) {
            IDLE => {
                // Odd with no op in progress: a damaged word, which would keep readers
                // waiting for a batch that never ends.
                let sequence = table.word(header::BATCH_SEQUENCE);
                if sequence.load(Ordering::Acquire) % 2 == 1 {
                    sequence.fetch_add(1, Ordering::AcqRel);
                    return Ok(true);
                }
                Ok(false)
            }
            APPLYING => {
                apply_logged(table);
                Ok(true)
            }
            _ => {
                let number = table.word(header::OP_SEGMENT).load(Ordering::Acquire) as u32;
                let start = table.word(header::OP_START).load(Ordering::Acquire);
                let end = table.word(header::OP_END).load(Ordering::Acquire);
                if number != 0 {
                    let seg = self.segment(number)?;
                    seg.zero_range(start, end);
                    seg.set_end(start);
                }
                table.word(header::OP_STATE).store(IDLE, Ordering::Release);
                Ok(true)
            }
        }
    }
}

/// Applies the op the log holds: its slot changes, then its counters, computed from the
/// snapshot; then ends it. Idempotent.
fn apply_logged(table: &TableFile) {
    let n = table.word(header::OP_ENTRIES).load(Ordering::Acquire) as usize;
    let mut keys = table.word(header::OP_KEYS_BEFORE).load(Ordering::Acquire) as i64;
    let mut expiring = table
        .word(header::OP_EXPIRING_BEFORE)
        .load(Ordering::Acquire) as i64;
    let snapshots = table.word(header::OP_SNAPSHOTS).load(Ordering::Acquire) as usize;
    // Few segments per op: a list (on the stack) is cheaper than a map.
    let mut live: SmallVec<[(u32, i64); 8]> = (0..snapshots)
        .map(|i| {
            (
                table.snapshot(i, 0).load(Ordering::Acquire) as u32,
                table.snapshot(i, 1).load(Ordering::Acquire) as i64,
            )
        })
        .collect();
    let mut add = |number: u32, bytes: i64| match live.iter_mut().find(|(n, _)| *n == number) {
        Some((_, b)) => *b = b.saturating_add(bytes),
        None => live.push((number, bytes)),
    };
    for i in 0..n {
        let pos = table.op_entry(i, 0).load(Ordering::Acquire) as usize;
        let old = table.op_entry(i, 1).load(Ordering::Acquire);
        let new = table.op_entry(i, 2).load(Ordering::Acquire);
        let lens = table.op_entry(i, 3).load(Ordering::Acquire);
        let (old_len, old_expiring) = unpack(lens & 0xffff_ffff);
        let (new_len, new_expiring) = unpack(lens >> 32);
        table.slot(pos).store(new, Ordering::Release);
        // Saturating: a damaged counter must not make applying panic.
        keys = keys.saturating_add(i64::from(new != 0) - i64::from(old != 0));
        expiring = expiring.saturating_add(
            i64::from(new != 0 && new_expiring) - i64::from(old != 0 && old_expiring),
        );
        if old != 0 {
            add(slot::location_of(old).number, -i64::from(old_len));
        }
        if new != 0 {
            add(slot::location_of(new).number, i64::from(new_len));
        }
    }
    let rows = 1..=table.shape().segments;
    for (number, bytes) in live {
        // A damaged slot may name no segment: it has no live bytes to move.
        if rows.contains(&number) {
            table
                .row(number, row::LIVE)
                .store(bytes.max(0) as u64, Ordering::Release);
        }
    }
    table
        .word(header::KEYS)
        .store(keys.max(0) as u64, Ordering::Release);
    table
        .word(header::EXPIRING)
        .store(expiring.max(0) as u64, Ordering::Release);
    let number = table.word(header::OP_SEGMENT).load(Ordering::Acquire) as u32;
    if number != 0 {
        let end = table.word(header::OP_END).load(Ordering::Acquire);
        table.row(number, row::END).store(end, Ordering::Release);
    }
    let appended = table
        .word(header::OP_APPENDED_AFTER)
        .load(Ordering::Acquire);
    table
        .word(header::APPENDED)
        .store(appended, Ordering::Release);
    let sequence = table.word(header::BATCH_SEQUENCE);
    if sequence.load(Ordering::Acquire) % 2 == 1 {
        sequence.fetch_add(1, Ordering::AcqRel);
    }
    table.word(header::OP_STATE).store(IDLE, Ordering::Release);
}
