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

use crate::error::Result;
use crate::index::file::TableFile;
use crate::index::slot::{self, BUCKET_SLOTS, KeyHash, Location};
use crate::index::{Index, buckets};
use crate::record;

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

/// The memory a plan works in, kept between plans so that a write allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct PlanBuffers {
    /// Slots changed by the plan so far: their planned value.
    overlay: HashMap<usize, u64>,
    /// Record length and expiry of slot values seen, so each record is read once.
    info: HashMap<u64, (u32, bool)>,
    /// The keys of records planned but not written yet: where in `arena` they lie, by slot
    /// value.
    planned_keys: HashMap<u64, (usize, usize)>,
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

/// A plan being made against one table.
pub(crate) struct Planner<'a> {
    index: &'a Index,
    table: Arc<TableFile>,
    overlay: HashMap<usize, u64>,
    info: HashMap<u64, (u32, bool)>,
    planned_keys: HashMap<u64, (usize, usize)>,
    arena: Vec<u8>,
    pub entries: Vec<Entry>,
}

impl<'a> Planner<'a> {
    /// A plan against `table`.
    pub fn new(index: &'a Index, table: Arc<TableFile>) -> Planner<'a> {
        Planner::with_buffers(index, table, PlanBuffers::default())
    }

    /// A plan against `table`, working in `buffers` (empty).
    pub fn with_buffers(
        index: &'a Index,
        table: Arc<TableFile>,
        buffers: PlanBuffers,
    ) -> Planner<'a> {
        Planner {
            index,
            table,
            overlay: buffers.overlay,
            info: buffers.info,
            planned_keys: buffers.planned_keys,
            arena: buffers.arena,
            entries: buffers.entries,
        }
    }

    /// Gives back the plan's memory, emptied, for the next plan.
    pub fn into_buffers(mut self) -> PlanBuffers {
        self.overlay.clear();
        self.info.clear();
        self.planned_keys.clear();
        self.arena.clear();
        self.entries.clear();
        PlanBuffers {
            overlay: self.overlay,
            info: self.info,
            planned_keys: self.planned_keys,
            arena: self.arena,
            entries: self.entries,
        }
    }

    /// Takes the planned entries, leaving the plan empty (its overlay stays).
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    fn value(&self, pos: usize) -> u64 {
        self.overlay
            .get(&pos)
            .copied()
            .unwrap_or_else(|| self.table.slot(pos).load(Ordering::Acquire))
    }

    /// Length and expiry of the record a slot value points at (0 and false if it cannot be
    /// read: the change then goes ahead, and only the space statistics miss it).
    fn record_info(&mut self, value: u64) -> (u32, bool) {
        if let Some(&info) = self.info.get(&value) {
            return info;
        }
        let at = slot::location_of(value);
        let info = match self.index.segment(at.number) {
            Ok(seg) => match record::decode(seg.tail(at.offset)) {
                Ok(rec) => (
                    record::aligned(rec.encoded_len()) as u32,
                    rec.expires_at != 0,
                ),
                Err(_) => (0, false),
            },
            Err(_) => (0, false),
        };
        self.info.insert(value, info);
        info
    }

    fn set(&mut self, pos: usize, new: u64, new_info: (u32, bool)) {
        let old = self.value(pos);
        let (old_len, old_expiring) = if old == 0 {
            (0, false)
        } else {
            self.record_info(old)
        };
        if new != 0 {
            self.info.insert(new, new_info);
        }
        self.entries.push(Entry {
            pos,
            old,
            new,
            old_len,
            old_expiring,
            new_len: new_info.0,
            new_expiring: new_info.1,
        });
        self.overlay.insert(pos, new);
    }

    /// Whether the record slot value `value` points at is `key`'s; `None` if it cannot be read.
    fn holds_key(&self, value: u64, key: &[u8]) -> Option<bool> {
        if let Some(&(at, len)) = self.planned_keys.get(&value) {
            return Some(&self.arena[at..at + len] == key);
        }
        let at = slot::location_of(value);
        let seg = self.index.segment(at.number).ok()?;
        record::decode(seg.tail(at.offset))
            .ok()
            .map(|rec| rec.key == key)
    }

    /// The slot holding `key`, if any: exactly its record, or else a slot with its tag whose
    /// record cannot be read (which a write for the key then replaces).
    fn slot_of(&mut self, key: &[u8], h: KeyHash) -> Result<Option<usize>> {
        let mut unreadable = None;
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                let value = self.value(pos);
                if value == 0 || slot::tag_of(value) != h.tag {
                    continue;
                }
                match self.holds_key(value, key) {
                    Some(true) => return Ok(Some(pos)),
                    Some(false) => {}
                    None => {
                        unreadable.get_or_insert(pos);
                    }
                }
            }
        }
        Ok(unreadable)
    }

    /// Points `key` at `new`.
    pub fn put(&mut self, key: &[u8], new: NewRecord) -> Result<Planned> {
        let h = slot::hash(self.table.seed(), key);
        let value = slot::encode(h.tag, new.at);
        let info = (new.len, new.expiring);
        self.planned_keys
            .insert(value, (self.arena.len(), key.len()));
        self.arena.extend_from_slice(key);
        if let Some(pos) = self.slot_of(key, h)? {
            self.set(pos, value, info);
            return Ok(Planned::Done);
        }
        match self.make_room(h) {
            Some(pos) => {
                self.set(pos, value, info);
                Ok(Planned::Done)
            }
            None => Ok(Planned::NeedsRoom),
        }
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let h = slot::hash(self.table.seed(), key);
        let mut found = false;
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                let value = self.value(pos);
                if value == 0 || slot::tag_of(value) != h.tag {
                    continue;
                }
                if self.holds_key(value, key) == Some(true) {
                    self.set(pos, 0, (0, false));
                    found = true;
                }
            }
        }
        Ok(found)
    }

    /// Points `key` at `to` if it points at `from` now (compaction copied the record); whether
    /// it did.
    pub fn relocate(&mut self, key: &[u8], from: Location, to: NewRecord) -> bool {
        let h = slot::hash(self.table.seed(), key);
        let want = slot::encode(h.tag, from);
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                if self.value(pos) == want {
                    self.set(pos, slot::encode(h.tag, to.at), (to.len, to.expiring));
                    return true;
                }
            }
        }
        false
    }

    /// Empties slot `pos` if it still holds `value` (a damaged slot; see
    /// `Shared::clear_slots_into`). The table may have grown since `pos` was found: then the
    /// slot is looked for where growing moved it.
    pub fn clear_if(&mut self, pos: usize, value: u64) {
        let region_slots = (1usize << slot::BUCKET_BITS) * BUCKET_SLOTS;
        let region = slot::region(slot::tag_of(value), self.table.shape().region_bits) as usize;
        let pos = region * region_slots + pos % region_slots;
        if self.value(pos) == value {
            self.set(pos, 0, (0, false));
        }
    }

    /// Removes `key` if it points at `at` now (an expired or evicted record); whether it did.
    pub fn remove_if_at(&mut self, key: &[u8], at: Location) -> bool {
        let h = slot::hash(self.table.seed(), key);
        let want = slot::encode(h.tag, at);
        for base in buckets(&self.table, h) {
            for pos in base..base + BUCKET_SLOTS {
                if self.value(pos) == want {
                    self.set(pos, 0, (0, false));
                    return true;
                }
            }
        }
        false
    }

    /// A free slot in one of `h`'s buckets, after planning the moves that free it; `None` if
    /// no path of at most [`MAX_MOVES`] moves leads to a free slot.
    fn make_room(&mut self, h: KeyHash) -> Option<usize> {
        let start = buckets(&self.table, h);
        for &base in &start {
            if let Some(pos) = (base..base + BUCKET_SLOTS).find(|&p| self.value(p) == 0) {
                return Some(pos);
            }
        }
        let region_len = (1 << slot::BUCKET_BITS) * BUCKET_SLOTS;
        let region_base = start[0] - start[0] % region_len;
        let mut nodes: Vec<Node> = start
            .iter()
            .map(|&base| Node {
                base,
                parent: None,
                from: usize::MAX,
                depth: 0,
            })
            .collect();
        let mut queue: VecDeque<usize> = (0..nodes.len()).collect();
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
                if on_path(&nodes, n, pos, alt_base) {
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
                    return Some(self.move_along(&nodes, child, free));
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
    /// slot of a start bucket left for the new key.
    fn move_along(&mut self, nodes: &[Node], leaf: usize, free: usize) -> usize {
        let mut dest = free;
        let mut n = leaf;
        loop {
            let src = nodes[n].from;
            let value = self.value(src);
            let info = self.record_info(value);
            self.set(dest, value, info);
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
