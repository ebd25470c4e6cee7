//! Planning a change to the index: which slots change from what to what, worked out against
//! the table plus the changes planned so far, before anything is written.
//!
//! A plan is a list of [`Entry`]s in the order they must be applied. Placing a key whose two
//! buckets are full moves other slots to their alternative buckets (cuckoo hashing); the moves
//! come first and copy a slot before overwriting where it was, so a reader always finds every
//! key in one of its buckets. A plan that finds no room asks for a larger table
//! ([`Planned::NeedsRoom`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hashbrown::HashMap;

use crate::error::{Error, Result};
use crate::index::file::TableFile;
use crate::index::slot::{self, BUCKET_SLOTS, KeyHash, Location};
use crate::index::{Index, buckets};
use crate::record;
use crate::segment::Segment;

/// How far the search for room moves slots: paths of at most this many moves.
const MAX_MOVES: usize = 4;
/// Buckets the search for room looks at, at most.
const MAX_VISITS: usize = 256;

/// One slot change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The slot.
    pub pos: usize,
    /// Its value before.
    pub old: u64,
    /// Its value after.
    pub new: u64,
    /// What the old value's record takes (bytes, padding included) and whether it expires.
    pub old_len: u32,
    pub old_expiring: bool,
    /// The same of the new value's record.
    pub new_len: u32,
    pub new_expiring: bool,
}

/// A record the index should point at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRecord {
    pub at: Location,
    /// Bytes it takes, padding included.
    pub len: u32,
    pub expiring: bool,
}

/// Whether planning could place everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Planned {
    Done,
    /// A key's buckets and every path of moves from them are full: grow the table and plan
    /// again.
    NeedsRoom,
}

/// The bits of a slot value that hold the record's location.
const LOCATION_MASK: u64 = (1 << (64 - slot::TAG_BITS)) - 1;

/// Bits of [`PlanBuffers::overlaid`] at most: a filter on the buckets of slots in the
/// overlay (as many bits as the table has buckets, for a small table).
const FILTER_BITS: usize = 1 << 16;

/// The bit of a filter of `words` words (a power of two) that stands for slot `pos`'s bucket.
fn filter_bit(pos: usize, words: usize) -> usize {
    (pos / BUCKET_SLOTS) & (words * 64 - 1)
}

/// The record info counted for a value a plan moves from one slot to another: the same
/// where it arrives and where it leaves, so the two cancel out.
const MOVED: (u32, bool) = (0, false);

/// A record planned but not written yet.
#[derive(Debug, Clone, Copy)]
struct PlannedRecord {
    /// Its location as a slot holds it (the slot value's low bits, which order locations).
    at: u64,
    /// Where its key lies in the arena, and how long it is.
    key_at: usize,
    key_len: usize,
    /// Its length and expiry flag.
    info: (u32, bool),
}

/// The memory a plan works in, kept between plans so that a write allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct PlanBuffers {
    /// Slots changed by the plan so far: their planned value.
    overlay: HashMap<usize, u64>,
    /// Bit [`filter_bit`]`(pos)` is set for every `pos` in `overlay` (empty until the first
    /// set): most buckets a plan looks at have no slot in the overlay, and a bit is cheaper
    /// to test than a map.
    overlaid: Vec<u64>,
    /// Record length and expiry of slot values seen, so each record is read once.
    info: HashMap<u64, (u32, bool)>,
    /// The records planned but not written yet, in the order of their locations (a writer
    /// plans the records of one append, which follow each other in one segment).
    planned: Vec<PlannedRecord>,
    /// Their keys.
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// The search for room.
    nodes: Vec<Node>,
    queue: VecDeque<usize>,
}

/// A plan being made against one table.
pub(crate) struct Planner<'a> {
    index: &'a Index,
    table: Arc<TableFile>,
    buffers: PlanBuffers,
    /// Whether the records planned are not written yet (a writer's plan), so that their
    /// keys must be kept; a rebuild plans records already on disk.
    unwritten: bool,
    pub entries: Vec<Entry>,
}

impl<'a> Planner<'a> {
    /// A plan against `table` of records already on disk.
    pub fn new(index: &'a Index, table: Arc<TableFile>) -> Planner<'a> {
        let mut planner = Planner::with_buffers(index, table, PlanBuffers::default());
        planner.unwritten = false;
        planner
    }

    /// A plan against `table` of records not written yet, which follow each other in one
    /// segment, working in `buffers` (empty).
    pub fn with_buffers(
        index: &'a Index,
        table: Arc<TableFile>,
        buffers: PlanBuffers,
    ) -> Planner<'a> {
        let mut buffers = buffers;
        let entries = std::mem::take(&mut buffers.entries);
        Planner {
            index,
            table,
            buffers,
            unwritten: true,
            entries,
        }
    }

    /// Gives back the plan's memory, emptied, for the next plan.
    pub fn into_buffers(mut self) -> PlanBuffers {
        let b = &mut self.buffers;
        let words = b.overlaid.len();
        if words > 0 {
            for &pos in b.overlay.keys() {
                b.overlaid[filter_bit(pos, words) / 64] = 0;
            }
        }
        b.overlay.clear();
        b.info.clear();
        b.planned.clear();
        b.arena.clear();
        self.entries.clear();
        b.entries = self.entries;
        self.buffers
    }

    /// Takes the planned entries, leaving the plan empty (its overlay stays).
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// Whether the bucket of slot `pos` may have slots in the overlay.
    fn overlaid(&self, pos: usize) -> bool {
        let b = &self.buffers;
        let words = b.overlaid.len();
        if words == 0 {
            return false;
        }
        let bit = filter_bit(pos, words);
        b.overlaid[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The planned value of slot `pos`.
    fn value(&self, pos: usize) -> u64 {
        if self.overlaid(pos)
            && let Some(&value) = self.buffers.overlay.get(&pos)
        {
            return value;
        }
        self.table.slot(pos).load(Ordering::Acquire)
    }

    /// The planned values of the bucket at `base`.
    fn bucket(&self, base: usize) -> [u64; BUCKET_SLOTS] {
        if self.overlaid(base) {
            std::array::from_fn(|i| self.value(base + i))
        } else {
            std::array::from_fn(|i| self.table.slot(base + i).load(Ordering::Acquire))
        }
    }

    /// The planned, unwritten record slot value `value` points at, if it points at one.
    fn planned(&self, value: u64) -> Option<&PlannedRecord> {
        let planned = &self.buffers.planned;
        let at = value & LOCATION_MASK;
        if planned.first().is_none_or(|first| at < first.at) {
            return None;
        }
        let i = planned.binary_search_by_key(&at, |p| p.at).ok()?;
        Some(&planned[i])
    }

    /// The segment a slot value points into; `None` if the slot names none that can be
    /// opened for a reason other than the disk failing (a damaged slot). A failing disk is an
    /// error: a plan that took the record for unreadable would delete the wrong slot or keep
    /// the key's old one.
    fn segment_of(&self, value: u64) -> Result<Option<Arc<Segment>>> {
        match self.index.segment(slot::location_of(value).number) {
            Ok(seg) => Ok(Some(seg)),
            Err(e @ Error::Io { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Length and expiry of the record a slot value points at (0 and false if it is damaged:
    /// the change then goes ahead, and only the space statistics miss it).
    fn record_info(&mut self, value: u64) -> Result<(u32, bool)> {
        if let Some(planned) = self.planned(value) {
            return Ok(planned.info);
        }
        if let Some(&info) = self.buffers.info.get(&value) {
            return Ok(info);
        }
        let at = slot::location_of(value);
        let info = match self.segment_of(value)? {
            Some(seg) => match record::decode(seg.tail(at.offset)) {
                Ok(rec) => (
                    record::aligned(rec.encoded_len()) as u32,
                    rec.expires_at != 0,
                ),
                Err(_) => (0, false),
            },
            None => (0, false),
        };
        self.buffers.info.insert(value, info);
        Ok(info)
    }

    /// Plans slot `pos` to hold `new`, whose record takes `new_info`.
    fn set(&mut self, pos: usize, new: u64, new_info: (u32, bool)) -> Result<()> {
        let old = self.value(pos);
        let old_info = if old == 0 {
            (0, false)
        } else {
            self.record_info(old)?
        };
        self.set_known(pos, old, old_info, new, new_info);
        Ok(())
    }

    /// [`Planner::set`] with the old value and what its record takes already known.
    fn set_known(
        &mut self,
        pos: usize,
        old: u64,
        (old_len, old_expiring): (u32, bool),
        new: u64,
        new_info: (u32, bool),
    ) {
        debug_assert_eq!(old, self.value(pos));
        self.entries.push(Entry {
            pos,
            old,
            new,
            old_len,
            old_expiring,
            new_len: new_info.0,
            new_expiring: new_info.1,
        });
        let b = &mut self.buffers;
        if b.overlay.is_empty() {
            // The first change of this plan: a filter as large as the table needs (the
            // buffers may come from a plan on a table of another size; they are all zeros).
            let buckets = self.table.shape().slots() / BUCKET_SLOTS;
            let words = (buckets.min(FILTER_BITS) / 64).max(1);
            b.overlaid.resize(words, 0);
        }
        let bit = filter_bit(pos, b.overlaid.len());
        b.overlaid[bit / 64] |= 1 << (bit % 64);
        b.overlay.insert(pos, new);
    }

    /// Whether the record slot value `value` points at is `key`'s; `None` if it is damaged.
    fn holds_key(&self, value: u64, key: &[u8]) -> Result<Option<bool>> {
        if let Some(p) = self.planned(value) {
            return Ok(Some(
                &self.buffers.arena[p.key_at..p.key_at + p.key_len] == key,
            ));
        }
        let at = slot::location_of(value);
        let Some(seg) = self.segment_of(value)? else {
            return Ok(None);
        };
        Ok(record::decode(seg.tail(at.offset))
            .ok()
            .map(|rec| rec.key == key))
    }

    /// The slot holding `key`, if any: exactly its record, or else a slot with its tag whose
    /// record cannot be read (which a write for the key then replaces). Also the first free
    /// slot of its buckets, if any.
    fn slot_of(&mut self, key: &[u8], h: KeyHash) -> Result<(Option<usize>, Option<usize>)> {
        let mut unreadable = None;
        let mut free = None;
        for base in buckets(&self.table, h) {
            let bucket = self.bucket(base);
            let tag_bits = u64::from(h.tag) << (64 - slot::TAG_BITS);
            let (mut same_tag, mut empty) = (0u32, 0u32);
            for (i, &value) in bucket.iter().enumerate() {
                empty |= u32::from(value == 0) << i;
                same_tag |= u32::from((value ^ tag_bits) >> (64 - slot::TAG_BITS) == 0) << i;
            }
            same_tag &= !empty;
            if free.is_none() && empty != 0 {
                free = Some(base + empty.trailing_zeros() as usize);
            }
            while same_tag != 0 {
                let i = same_tag.trailing_zeros() as usize;
                same_tag &= same_tag - 1;
                match self.holds_key(bucket[i], key)? {
                    Some(true) => return Ok((Some(base + i), free)),
                    Some(false) => {}
                    None => {
                        unreadable.get_or_insert(base + i);
                    }
                }
            }
        }
        Ok((unreadable, free))
    }

    /// The hash of `key` in this table.
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        slot::hash(self.table.seed(), key)
    }

    /// Asks the CPU to fetch the buckets of a key with hash `h`, which a later plan step
    /// reads: a batch fetches a few keys ahead, so their cache misses overlap.
    pub fn prefetch(&self, h: KeyHash) {
        for base in buckets(&self.table, h) {
            self.table.prefetch_slot(base);
        }
    }

    /// Points `key` at `new`.
    pub fn put(&mut self, key: &[u8], new: NewRecord) -> Result<Planned> {
        self.put_hashed(key, self.hash(key), new)
    }

    /// Points `key`, whose hash is `h`, at `new`.
    pub fn put_hashed(&mut self, key: &[u8], h: KeyHash, new: NewRecord) -> Result<Planned> {
        debug_assert_eq!(h, self.hash(key));
        let value = slot::encode(h.tag, new.at);
        let info = (new.len, new.expiring);
        if self.unwritten {
            let b = &mut self.buffers;
            let at = value & LOCATION_MASK;
            assert!(
                b.planned.last().is_none_or(|last| last.at < at),
                "the records of a plan follow each other"
            );
            b.planned.push(PlannedRecord {
                at,
                key_at: b.arena.len(),
                key_len: key.len(),
                info,
            });
            b.arena.extend_from_slice(key);
        }
        let (held, free) = self.slot_of(key, h)?;
        match (held, free) {
            (Some(pos), _) | (None, Some(pos)) => self.set(pos, value, info)?,
            (None, None) => match self.make_room(h) {
                // The slot's value is moving to another slot of this plan.
                Some(pos) => self.set_known(pos, self.value(pos), MOVED, value, info),
                None => return Ok(Planned::NeedsRoom),
            },
        }
        Ok(Planned::Done)
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        self.delete_hashed(key, self.hash(key))
    }

    /// Removes `key`, whose hash is `h`; whether it was there.
    pub fn delete_hashed(&mut self, key: &[u8], h: KeyHash) -> Result<bool> {
        debug_assert_eq!(h, self.hash(key));
        let mut found = false;
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                let value = self.value(pos);
                if value == 0 || slot::tag_of(value) != h.tag {
                    continue;
                }
                if self.holds_key(value, key)? == Some(true) {
                    self.set(pos, 0, (0, false))?;
                    found = true;
                }
            }
        }
        Ok(found)
    }

    /// Points `key` at `to` if it points at `from` now (compaction copied the record); whether
    /// it did.
    pub fn relocate(&mut self, key: &[u8], from: Location, to: NewRecord) -> Result<bool> {
        let h = self.hash(key);
        let want = slot::encode(h.tag, from);
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                if self.value(pos) == want {
                    let value = slot::encode(h.tag, to.at);
                    // Known now, should a later change of this plan move the slot.
                    self.buffers.info.insert(value, (to.len, to.expiring));
                    self.set(pos, value, (to.len, to.expiring))?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Empties slot `pos` if it still holds `value` (a damaged slot; see
    /// `Shared::clear_slots_into`). The table may have grown since `pos` was found: then the
    /// slot is looked for where growing moved it.
    pub fn clear_if(&mut self, pos: usize, value: u64) -> Result<()> {
        let region_slots = (1usize << slot::BUCKET_BITS) * BUCKET_SLOTS;
        let region = slot::region(slot::tag_of(value), self.table.shape().region_bits) as usize;
        let pos = region * region_slots + pos % region_slots;
        if self.value(pos) == value {
            self.set(pos, 0, (0, false))?;
        }
        Ok(())
    }

    /// Removes `key` if it points at `at` now (an expired or evicted record); whether it did.
    pub fn remove_if_at(&mut self, key: &[u8], at: Location) -> Result<bool> {
        let h = self.hash(key);
        let want = slot::encode(h.tag, at);
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                if self.value(pos) == want {
                    self.set(pos, 0, (0, false))?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A free slot in one of `h`'s buckets (both full now), after planning the moves that free
    /// it; `None` if no path of at most [`MAX_MOVES`] moves leads to a free slot.
    fn make_room(&mut self, h: KeyHash) -> Option<usize> {
        let start = buckets(&self.table, h);
        let mut nodes = std::mem::take(&mut self.buffers.nodes);
        let mut queue = std::mem::take(&mut self.buffers.queue);
        let found = self.search_room(&start, &mut nodes, &mut queue);
        nodes.clear();
        queue.clear();
        self.buffers.nodes = nodes;
        self.buffers.queue = queue;
        found
    }

    /// The breadth-first search of [`Planner::make_room`], in `nodes` and `queue` (empty).
    fn search_room(
        &mut self,
        start: &[usize],
        nodes: &mut Vec<Node>,
        queue: &mut VecDeque<usize>,
    ) -> Option<usize> {
        let region_len = (1 << slot::BUCKET_BITS) * BUCKET_SLOTS;
        let region_base = start[0] - start[0] % region_len;
        nodes.extend(start.iter().map(|&base| Node {
            base,
            parent: None,
            from: usize::MAX,
            depth: 0,
        }));
        queue.extend(0..nodes.len());
        while let Some(n) = queue.pop_front() {
            let (base, depth) = (nodes[n].base, nodes[n].depth);
            if depth >= MAX_MOVES {
                continue;
            }
            let bucket = ((base - region_base) / BUCKET_SLOTS) as u32;
            for pos in base..base + BUCKET_SLOTS {
                let value = self.value(pos);
                let alt_base = region_base
                    + slot::alternative(bucket, slot::tag_of(value)) as usize * BUCKET_SLOTS;
                if on_path(nodes, n, pos, alt_base) {
                    continue;
                }
                nodes.push(Node {
                    base: alt_base,
                    parent: Some(n),
                    from: pos,
                    depth: depth + 1,
                });
                let child = nodes.len() - 1;
                if let Some(free) =
                    (alt_base..alt_base + BUCKET_SLOTS).find(|&p| self.value(p) == 0)
                {
                    return Some(self.move_along(nodes, child, free));
                }
                if nodes.len() >= MAX_VISITS {
                    return None;
                }
                queue.push_back(child);
            }
        }
        None
    }

    /// Plans the moves of the path ending at node `leaf`, whose bucket has `free`: each slot
    /// on the path is copied to where the next one was, starting at the free end; returns the
    /// slot of a start bucket left for the new key (its value moved: the caller overwrites it
    /// with [`MOVED`] as its old record's info).
    ///
    /// A moved value counts [`MOVED`] where it arrives and where it leaves, which nets out
    /// as a move must: no record is read to learn its length.
    fn move_along(&mut self, nodes: &[Node], leaf: usize, free: usize) -> usize {
        let mut dest = free;
        let mut n = leaf;
        loop {
            let src = nodes[n].from;
            let value = self.value(src);
            // `dest` is free, or its value moved on in the step before.
            self.set_known(dest, self.value(dest), MOVED, value, MOVED);
            dest = src;
            match nodes[n].parent {
                Some(p) if nodes[p].parent.is_some() => n = p,
                _ => return dest,
            }
        }
    }
}

/// A bucket reached while searching for room: by moving the slot at `from` (in the parent's
/// bucket) into it.
#[derive(Debug)]
struct Node {
    base: usize,
    parent: Option<usize>,
    from: usize,
    depth: usize,
}

/// Whether moving slot `pos` into the bucket at `base`, below node `n`, would touch a bucket or
/// slot already on the path to `n`.
fn on_path(nodes: &[Node], mut n: usize, pos: usize, base: usize) -> bool {
    loop {
        let node = &nodes[n];
        if node.base == base || node.from == pos {
            return true;
        }
        match node.parent {
            Some(p) => n = p,
            None => return false,
        }
    }
}
