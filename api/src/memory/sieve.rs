//! A bounded concurrent map with SIEVE eviction (Zhang et al., "SIEVE is Simpler than LRU",
//! NSDI '24): shards, each a hash table over a queue of entries, newest first. A hit marks its
//! entry visited (one relaxed store under the shard's read lock). To make room, a hand moves
//! from the oldest entry towards the newest, unmarking visited entries and evicting the first
//! unvisited one. Values are read under the read lock, so a hit can clone what it needs
//! without counting references.

use std::borrow::Borrow;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::RwLock;

/// Bytes of a key kept inside its entry; longer keys live on the heap.
const INLINE_KEY: usize = 62;

/// A key, inline up to 62 bytes (a short key with its namespace, or most memoized calls').
#[derive(Clone)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == INLINE_KEY + 2);

impl Key {
    /// The key of a free slot.
    const EMPTY: Key = Key::Inline {
        len: 0,
        bytes: [0; INLINE_KEY],
    };

    pub fn new(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// No entry.
const NIL: u32 = u32::MAX;

struct Slot<V> {
    key: Key,
    hash: u64,
    /// `None` in a free slot.
    value: Option<V>,
    weight: u64,
    visited: AtomicBool,
    /// The next newer and next older entry in the queue.
    newer: u32,
    older: u32,
}

struct Shard<V> {
    table: HashTable<u32>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    /// Where the eviction hand stands (`NIL`: at the oldest entry).
    hand: u32,
    weight: u64,
    capacity: u64,
}

/// What an insertion did besides inserting.
pub(crate) struct Inserted<V> {
    /// The value the key held before (not an eviction). Read by tests; otherwise only
    /// dropped by the caller, outside the shard's lock.
    #[cfg_attr(not(test), allow(dead_code))]
    pub replaced: Option<V>,
    /// Values evicted to make room (dropped by the caller, outside the shard's lock).
    pub evicted: Vec<V>,
}

/// The map: `shards` shards of `capacity / shards` weight each.
pub(crate) struct Sieve<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    hasher: DefaultHashBuilder,
}

impl<V> Shard<V> {
    fn new(capacity: u64) -> Shard<V> {
        Shard {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            weight: 0,
            capacity,
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| slots[i as usize].key.as_slice() == key)
            .copied()
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let s = &self.slots[i as usize];
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        if self.hand == i {
            self.hand = newer;
        }
    }

    /// Takes entry `i` out entirely; returns its value.
    fn remove_slot(&mut self, i: u32) -> V {
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        let (hash, weight) = (slot.hash, slot.weight);
        let value = slot.value.take().expect("a live slot holds a value");
        slot.key = Key::EMPTY;
        self.weight -= weight;
        self.table
            .find_entry(hash, |&j| j == i)
            .expect("every live slot is in the table")
            .remove();
        self.free.push(i);
        value
    }

    /// Evicts one entry by SIEVE; `None` if the shard is empty.
    fn evict_one(&mut self) -> Option<V> {
        if self.oldest == NIL {
            return None;
        }
        let mut i = if self.hand == NIL {
            self.oldest
        } else {
            self.hand
        };
        loop {
            let slot = &self.slots[i as usize];
            if slot.visited.swap(false, Ordering::Relaxed) {
                i = if slot.newer == NIL {
                    self.oldest
                } else {
                    slot.newer
                };
                continue;
            }
            self.hand = slot.newer;
            return Some(self.remove_slot(i));
        }
    }

    /// Links a new entry as the newest.
    fn push(&mut self, key: Key, hash: u64, value: V, weight: u64) {
        let slot = Slot {
            key,
            hash,
            value: Some(value),
            weight,
            visited: AtomicBool::new(false),
            newer: NIL,
            older: self.newest,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 entries a shard")
            }
        };
        match self.newest {
            NIL => self.oldest = i,
            n => self.slots[n as usize].newer = i,
        }
        self.newest = i;
        self.weight += weight;
        let slots = &self.slots;
        self.table
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
    }

    /// Moves the live entries to the front of `slots` in queue order (oldest first) and
    /// rebuilds the table without tombstones: after a bulk removal, reads probe as short as
    /// in a fresh shard and walk memory in the order entries were inserted.
    fn compact(&mut self) {
        let mut old = std::mem::take(&mut self.slots);
        let live = self.table.len();
        let mut slots = Vec::with_capacity(live);
        let mut hand = NIL;
        let mut i = self.oldest;
        while i != NIL {
            let n = u32::try_from(slots.len()).expect("fewer than 2^32 entries a shard");
            if i == self.hand {
                hand = n;
            }
            let slot = &mut old[i as usize];
            i = slot.newer;
            slots.push(Slot {
                key: std::mem::replace(&mut slot.key, Key::EMPTY),
                hash: slot.hash,
                value: slot.value.take(),
                weight: slot.weight,
                visited: AtomicBool::new(slot.visited.load(Ordering::Relaxed)),
                newer: if i == NIL { NIL } else { n + 1 },
                older: n.checked_sub(1).unwrap_or(NIL),
            });
        }
        debug_assert_eq!(slots.len(), live);
        let last = u32::try_from(live).expect("fewer than 2^32 entries a shard");
        (self.oldest, self.newest) = if live == 0 { (NIL, NIL) } else { (0, last - 1) };
        self.hand = hand;
        self.free = Vec::new();
        self.table = HashTable::with_capacity(live);
        for (n, slot) in (0..last).zip(&slots) {
            self.table
                .insert_unique(slot.hash, n, |_| unreachable!("sized for every entry"));
        }
        self.slots = slots;
    }

    #[cfg(test)]
    fn check(&self) {
        let mut seen = 0u64;
        let mut count = 0;
        let mut i = self.oldest;
        let mut older = NIL;
        while i != NIL {
            let s = &self.slots[i as usize];
            assert_eq!(s.older, older, "links agree both ways");
            assert!(s.value.is_some());
            assert_eq!(self.find(s.hash, s.key.as_slice()), Some(i));
            seen += s.weight;
            count += 1;
            older = i;
            i = s.newer;
        }
        assert_eq!(older, self.newest);
        assert_eq!(seen, self.weight, "the weight is the sum of the entries'");
        assert_eq!(count, self.table.len());
        assert!(self.weight <= self.capacity, "within capacity");
    }
}

impl<V> Sieve<V> {
    /// A map of at most `capacity` weight in `shards` shards (at least one).
    pub fn new(capacity: u64, shards: usize) -> Sieve<V> {
        let shards = shards.max(1);
        let per_shard = capacity / shards as u64;
        Sieve {
            shards: (0..shards)
                .map(|_| RwLock::new(Shard::new(per_shard)))
                .collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The largest weight one entry may have: a shard's capacity.
    pub fn admits(&self) -> u64 {
        self.shards[0].read().capacity
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        &self.shards[(hash >> 32) as usize % self.shards.len()]
    }

    /// `f` of the value under `key`, under the shard's read lock; marks the entry visited.
    #[inline]
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&V) -> R) -> Option<R> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read();
        let i = shard.find(hash, key)?;
        let slot = &shard.slots[i as usize];
        if !slot.visited.load(Ordering::Relaxed) {
            slot.visited.store(true, Ordering::Relaxed);
        }
        slot.value.as_ref().map(f)
    }

    /// Inserts `value` of `weight` (at most [`admits`](Sieve::admits)) under `key`, evicting
    /// other entries of its shard to make room.
    pub fn insert(&self, key: &[u8], value: V, weight: u64) -> Inserted<V> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        debug_assert!(weight <= shard.capacity);
        let replaced = shard.find(hash, key).map(|i| shard.remove_slot(i));
        let mut evicted = Vec::new();
        while shard.weight + weight > shard.capacity {
            match shard.evict_one() {
                Some(v) => evicted.push(v),
                None => break,
            }
        }
        shard.push(Key::new(key), hash, value, weight);
        Inserted { replaced, evicted }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &[u8]) -> Option<V> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        let i = shard.find(hash, key)?;
        Some(shard.remove_slot(i))
    }

    /// Removes `key` if `keep` says no to its value; returns whether it did.
    pub fn remove_if(&self, key: &[u8], remove: impl FnOnce(&V) -> bool) -> bool {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write();
        let Some(i) = shard.find(hash, key) else {
            return false;
        };
        if !shard.slots[i as usize].value.as_ref().is_some_and(remove) {
            return false;
        }
        drop(shard.remove_slot(i));
        true
    }

    /// Removes every entry whose key starts with `prefix`, one shard at a time, and
    /// compacts each shard it left at least half empty; returns the values (for the caller to drop
    /// outside the locks).
    pub fn remove_prefix(&self, prefix: &[u8]) -> Vec<V> {
        let mut removed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let mut i = shard.oldest;
            while i != NIL {
                let slot = &shard.slots[i as usize];
                let next = slot.newer;
                if slot.key.as_slice().starts_with(prefix) {
                    removed.push(shard.remove_slot(i));
                }
                i = next;
            }
            if shard.free.len() >= shard.table.len() {
                shard.compact();
            }
        }
        removed
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().table.len()).sum()
    }

    #[cfg(test)]
    fn check(&self) {
        for s in self.shards.iter() {
            s.read().check();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn visited_entries_outlive_unvisited_ones() {
        let map: Sieve<u32> = Sieve::new(4, 1);
        for i in 0..4u32 {
            map.insert(&[i as u8], i, 1);
        }
        // Entry 0 is the oldest, but visited: the hand spares it and takes 1.
        assert_eq!(map.get_with(&[0], |v| *v), Some(0));
        let inserted = map.insert(&[4], 4, 1);
        assert_eq!(inserted.evicted, vec![1]);
        assert!(inserted.replaced.is_none());
        assert_eq!(map.get_with(&[0], |v| *v), Some(0));
        assert_eq!(map.get_with(&[1], |v| *v), None);
        // Overwriting is not an eviction.
        let again = map.insert(&[4], 40, 1);
        assert_eq!((again.replaced, again.evicted.len()), (Some(4), 0));
        assert_eq!(map.len(), 4);
        map.check();
    }

    #[test]
    fn a_zero_capacity_holds_nothing_and_heavy_entries_take_room() {
        let empty: Sieve<u8> = Sieve::new(0, 4);
        assert_eq!(empty.admits(), 0);
        let map: Sieve<u8> = Sieve::new(100, 1);
        for i in 0..10u8 {
            map.insert(&[i], i, 10);
        }
        let inserted = map.insert(b"big", 0, 95);
        assert_eq!(inserted.evicted.len(), 10, "everything else goes");
        assert_eq!(map.len(), 1);
        map.check();
        assert!(map.remove_if(b"big", |v| *v == 0));
        assert!(!map.remove_if(b"big", |_| true));
        assert_eq!(map.len(), 0);
        map.check();
    }

    #[test]
    fn removing_by_prefix_compacts_and_keeps_the_eviction_order() {
        let map: Sieve<u32> = Sieve::new(10, 1);
        let key = |i: u32| [u8::from((2..8).contains(&i)), i as u8];
        for i in 0..10 {
            map.insert(&key(i), i, 1);
        }
        // The hand passes the visited 0 and 1 (unmarking them), takes 2 and stands at 3.
        assert_eq!(map.get_with(&key(0), |v| *v), Some(0));
        assert_eq!(map.get_with(&key(1), |v| *v), Some(1));
        assert_eq!(map.insert(&key(10), 10, 1).evicted, vec![2]);
        let mut gone = map.remove_prefix(&[1]);
        gone.sort_unstable();
        assert_eq!(gone, vec![3, 4, 5, 6, 7]);
        {
            let shard = map.shards[0].read();
            assert_eq!(shard.slots.len(), 5, "compacted to the live entries");
            assert!(shard.free.is_empty());
        }
        map.check();
        // The hand moved on to 8 and stays there: room for five more, then 8 goes, not the
        // older (now unmarked) 0.
        for i in 11..16 {
            assert!(map.insert(&key(i), i, 1).evicted.is_empty());
        }
        assert_eq!(map.insert(&key(16), 16, 1).evicted, vec![8]);
        assert_eq!(map.insert(&key(17), 17, 1).evicted, vec![9]);
        map.check();
        assert_eq!(map.remove_prefix(&[]).len(), 10);
        assert_eq!(map.len(), 0);
        map.check();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Get(u8),
        Remove(u8),
        /// Removes the keys of one group of eight.
        RemoveGroup(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..40u8, 1..6u8).prop_map(|(k, w)| Op::Insert(k, w)),
            4 => (0..40u8).prop_map(Op::Get),
            2 => (0..40u8).prop_map(Op::Remove),
            1 => (0..5u8).prop_map(Op::RemoveGroup),
        ]
    }

    /// Keys in groups of eight, for removal by prefix.
    fn key(k: u8) -> [u8; 2] {
        [k / 8, k]
    }

    proptest! {
        /// Against a model: every value read is the last one inserted for its key, every
        /// entry that disappears without a remove was reported evicted, once; the shards stay
        /// within capacity and consistent.
        #[test]
        fn agrees_with_a_model(ops in prop::collection::vec(op(), 1..300), shards in 1..4usize) {
            let map: Sieve<u32> = Sieve::new(30, shards);
            let mut model: HashMap<u8, u32> = HashMap::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(k, w) => {
                        let value = n as u32;
                        let inserted = map.insert(&key(k), value, u64::from(w));
                        prop_assert_eq!(inserted.replaced, model.remove(&k));
                        for gone in inserted.evicted {
                            let key = model.iter().find(|(_, v)| **v == gone).map(|(k, _)| *k);
                            prop_assert!(key.is_some(), "evicted a value the model lacks");
                            model.remove(&key.unwrap());
                        }
                        model.insert(k, value);
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(map.get_with(&key(k), |v| *v), model.get(&k).copied());
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(map.remove(&key(k)), model.remove(&k));
                    }
                    Op::RemoveGroup(g) => {
                        let mut gone = map.remove_prefix(&[g]);
                        gone.sort_unstable();
                        let mut expected: Vec<u32> =
                            model.iter().filter(|(k, _)| *k / 8 == g).map(|(_, v)| *v).collect();
                        expected.sort_unstable();
                        model.retain(|k, _| k / 8 != g);
                        prop_assert_eq!(gone, expected);
                    }
                }
                map.check();
                prop_assert_eq!(map.len(), model.len());
            }
        }
    }

    #[test]
    fn threads_read_and_write_at_once() {
        let map: std::sync::Arc<Sieve<u64>> = std::sync::Arc::new(Sieve::new(500, 4));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let map = std::sync::Arc::clone(&map);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let key = ((i * 7 + t) % 1000).to_le_bytes();
                        if i % 3 == 0 {
                            map.insert(&key, i, 1);
                        } else if let Some(v) = map.get_with(&key, |v| *v) {
                            assert!(v < 20_000);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        map.check();
        assert!(map.len() <= 500);
    }
}
