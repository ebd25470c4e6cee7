//! The in-memory index: every live key and where its newest record lies, plus how many live
//! and dead bytes each segment holds (what compaction needs to choose its work).

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

/// Where a key's newest record lies. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment id.
    pub segment: u64,
    /// Offset of the record in the segment file.
    pub offset: u32,
    /// Length of the whole record.
    pub len: u32,
    /// Expiry in unix milliseconds, 0 for never.
    pub expires_at: u64,
}

impl Location {
    /// Whether the record has expired at `now_ms` (an expiry of 0 never expires).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }
}

/// Bytes of one segment, live and dead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegmentUsage {
    /// Bytes of records appended to the segment (header excluded).
    pub record_bytes: u64,
    /// Bytes of records that are overwritten, deleted, tombstones or expired on open.
    pub dead_bytes: u64,
}

/// The index. Not synchronized: the store wraps it in a lock.
#[derive(Debug, Default)]
pub(crate) struct KeyDir {
    map: HashMap<Box<[u8]>, Location>,
    usage: HashMap<u64, SegmentUsage>,
    /// How many entries have an expiry, so `len` can skip the scan when none do.
    expiring: usize,
}

impl KeyDir {
    /// Makes room for `additional` more keys, so that building a large index does not rehash
    /// it again and again.
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// The location of `key`, expired or not.
    pub fn get(&self, key: &[u8]) -> Option<Location> {
        self.map.get(key).copied()
    }

    /// Number of entries not expired at `now_ms`.
    pub fn live_len(&self, now_ms: u64) -> usize {
        if self.expiring == 0 {
            return self.map.len();
        }
        self.map.values().filter(|l| !l.is_expired(now_ms)).count()
    }

    /// Keys not expired at `now_ms`, in no particular order.
    pub fn live_keys(&self, now_ms: u64) -> Vec<Vec<u8>> {
        self.map
            .iter()
            .filter(|(_, l)| !l.is_expired(now_ms))
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    /// Records that `key` now lives at `loc`; the record it replaces (if any) becomes dead.
    pub fn insert(&mut self, key: &[u8], loc: Location) {
        self.usage_mut(loc.segment).record_bytes += u64::from(loc.len);
        self.expiring += usize::from(loc.expires_at != 0);
        // One hash and probe; the key is copied to the heap only when it is new.
        match self.map.entry_ref(key) {
            EntryRef::Occupied(mut slot) => {
                let old = slot.insert(loc);
                self.retire(old);
            }
            EntryRef::Vacant(slot) => {
                slot.insert(loc);
            }
        }
    }

    /// Records a record that removes `key` (a tombstone, or a record already expired when
    /// found on open): the record itself and the one it replaces are dead.
    pub fn remove(&mut self, key: &[u8], segment: u64, record_len: u32) {
        let usage = self.usage_mut(segment);
        usage.record_bytes += u64::from(record_len);
        usage.dead_bytes += u64::from(record_len);
        if let Some(old) = self.map.remove(key) {
            self.retire(old);
        }
    }

    /// Records the record at `loc` for `key`: a tombstone, or a value already expired at
    /// `now_ms`, removes the key; anything else becomes its current value.
    pub fn apply(&mut self, key: &[u8], loc: Location, tombstone: bool, now_ms: u64) {
        if tombstone || loc.is_expired(now_ms) {
            self.remove(key, loc.segment, loc.len);
        } else {
            self.insert(key, loc);
        }
    }

    /// Points `key` at `to` if it still points at `from` (compaction copied the record);
    /// otherwise a newer write won, and the copy at `to` is dead from the start.
    pub fn relocate(&mut self, key: &[u8], from: &Location, to: Location) {
        let moved = match self.map.get_mut(key) {
            Some(loc) if loc.segment == from.segment && loc.offset == from.offset => {
                *loc = to;
                true
            }
            _ => false,
        };
        let usage = self.usage_mut(to.segment);
        usage.record_bytes += u64::from(to.len);
        if !moved {
            usage.dead_bytes += u64::from(to.len);
        }
    }

    /// Removes `key` if it still points at `at` (an expired record compaction dropped).
    pub fn remove_if_at(&mut self, key: &[u8], at: &Location) {
        if self
            .map
            .get(key)
            .is_some_and(|l| l.segment == at.segment && l.offset == at.offset)
        {
            let old = self.map.remove(key).expect("present");
            self.retire(old);
        }
    }

    /// Accounts `bytes` of records in `segment` that are dead from the start (tombstones
    /// compaction had to keep).
    pub fn add_dead_records(&mut self, segment: u64, bytes: u64) {
        let usage = self.usage_mut(segment);
        usage.record_bytes += bytes;
        usage.dead_bytes += bytes;
    }

    /// Forgets the byte counts of segments that no longer exist.
    pub fn forget_segments<'a>(&mut self, ids: impl IntoIterator<Item = &'a u64>) {
        for id in ids {
            self.usage.remove(id);
        }
    }

    /// Checks that no key points into the given segments (before they are deleted).
    #[cfg(debug_assertions)]
    pub fn assert_nothing_in(&self, ids: &std::collections::BTreeSet<u64>) {
        if let Some((key, loc)) = self.map.iter().find(|(_, l)| ids.contains(&l.segment)) {
            panic!(
                "key {key:?} still points into segment {} being removed",
                loc.segment
            );
        }
    }

    /// Bytes of entries expired at `now_ms`, per segment (empty when nothing can expire).
    pub fn expired_bytes(&self, now_ms: u64) -> HashMap<u64, u64> {
        let mut out = HashMap::new();
        if self.expiring > 0 {
            for loc in self.map.values().filter(|l| l.is_expired(now_ms)) {
                *out.entry(loc.segment).or_default() += u64::from(loc.len);
            }
        }
        out
    }

    /// Live and dead bytes per segment.
    pub fn usage(&self) -> &HashMap<u64, SegmentUsage> {
        &self.usage
    }

    fn retire(&mut self, old: Location) {
        self.expiring -= usize::from(old.expires_at != 0);
        self.usage_mut(old.segment).dead_bytes += u64::from(old.len);
    }

    fn usage_mut(&mut self, segment: u64) -> &mut SegmentUsage {
        self.usage.entry(segment).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: u64, offset: u32, len: u32, expires_at: u64) -> Location {
        Location {
            segment,
            offset,
            len,
            expires_at,
        }
    }

    #[test]
    fn location_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Location>(), 24);
    }

    #[test]
    fn overwrites_and_removals_account_dead_bytes() {
        let mut kd = KeyDir::default();
        kd.insert(b"a", loc(1, 20, 30, 0));
        kd.insert(b"b", loc(1, 50, 30, 0));
        kd.insert(b"a", loc(2, 20, 40, 0));
        kd.remove(b"b", 2, 22);
        assert_eq!(kd.get(b"a"), Some(loc(2, 20, 40, 0)));
        assert_eq!(kd.get(b"b"), None);
        assert_eq!(kd.live_len(0), 1);
        assert_eq!(
            kd.usage()[&1],
            SegmentUsage {
                record_bytes: 60,
                dead_bytes: 60
            }
        );
        assert_eq!(
            kd.usage()[&2],
            SegmentUsage {
                record_bytes: 62,
                dead_bytes: 22
            }
        );
    }

    #[test]
    fn expired_entries_are_not_counted_or_listed() {
        let mut kd = KeyDir::default();
        kd.insert(b"forever", loc(1, 20, 30, 0));
        kd.insert(b"short", loc(1, 50, 30, 100));
        kd.insert(b"long", loc(1, 80, 30, 1_000));
        assert_eq!(kd.live_len(99), 3);
        assert_eq!(kd.live_len(100), 2);
        let mut keys = kd.live_keys(500);
        keys.sort();
        assert_eq!(keys, vec![b"forever".to_vec(), b"long".to_vec()]);
        kd.insert(b"short", loc(1, 110, 30, 0));
        kd.insert(b"long", loc(1, 140, 30, 0));
        assert_eq!(kd.expiring, 0);
        assert_eq!(kd.live_len(u64::MAX), 3);
    }
}
