//! What one 8-byte slot of the shared index holds, and where a key's slots are.
//!
//! A key's 64-bit hash (xxh3 with the store's seed) gives a 21-bit tag (its top bits) and a
//! home bucket (its low [`BUCKET_BITS`] bits). A slot packs the tag with the record's
//! location, and no key bytes: a read verifies the key against the record.
//!
//! ```text
//! bit 63..43  tag (21 bits)
//! bit 42..27  segment number (16 bits; 0 never names a segment, so an empty slot is 0)
//! bit 26..0   record offset / 8 (27 bits: records are 8-byte aligned, segments at most 1 GiB)
//! ```
//!
//! The table is `2^d` regions of `2^BUCKET_BITS` buckets of [`BUCKET_SLOTS`] slots. A key lives
//! in its region (the top `d` bits of its tag) in one of two buckets: its home bucket, or the
//! alternative derived from the home bucket and the tag (partial-key cuckoo hashing), so a slot
//! can move between its two buckets knowing only what it stores. Doubling the table splits
//! every region in two by the next bit of the tag, each slot keeping its bucket and position:
//! growing never needs the keys.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bits of the hash kept in a slot.
pub(crate) const TAG_BITS: u32 = 21;
/// Bits of the segment number.
pub(crate) const NUMBER_BITS: u32 = 16;
/// Bits of the record offset (in units of 8 bytes).
pub(crate) const OFFSET_BITS: u32 = 27;
/// Slots of a bucket: one 64-byte cache line.
pub(crate) const BUCKET_SLOTS: usize = 8;
/// A region holds `2^BUCKET_BITS` buckets (64 KiB).
pub(crate) const BUCKET_BITS: u32 = 10;
/// The table grows to at most `2^MAX_REGION_BITS` regions, so that at least 7 bits of a tag
/// still tell keys of one bucket apart.
pub(crate) const MAX_REGION_BITS: u32 = 14;
/// Segment numbers run from 1 to this.
pub(crate) const MAX_NUMBER: u32 = (1 << NUMBER_BITS) - 1;

const _: () = assert!(TAG_BITS + NUMBER_BITS + OFFSET_BITS == 64);

/// What the index needs of a key's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHash {
    /// The top [`TAG_BITS`] bits.
    pub tag: u32,
    /// The home bucket within the key's region.
    pub bucket: u32,
}

/// The hash of `key` under the store's `seed`.
pub(crate) fn hash(seed: u64, key: &[u8]) -> KeyHash {
    let h = xxh3_64_with_seed(key, seed);
    KeyHash {
        tag: (h >> (64 - TAG_BITS)) as u32,
        bucket: (h as u32) & ((1 << BUCKET_BITS) - 1),
    }
}

/// The other bucket a slot with `tag` may live in, seen from `bucket`: never `bucket` itself,
/// and `alternative(alternative(b, t), t) == b`.
pub(crate) fn alternative(bucket: u32, tag: u32) -> u32 {
    let mixed = (u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32;
    bucket ^ ((mixed & ((1 << BUCKET_BITS) - 1)) | 1)
}

/// The region of a key with `tag` in a table of `2^region_bits` regions.
pub(crate) fn region(tag: u32, region_bits: u32) -> u32 {
    if region_bits == 0 {
        0
    } else {
        tag >> (TAG_BITS - region_bits)
    }
}

/// A record's location as a slot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// The segment's number (its row in the segment table).
    pub number: u32,
    /// Offset of the record in the segment (a multiple of 8).
    pub offset: u64,
}

impl Location {
    /// Whether a slot can hold this location.
    pub fn fits(&self) -> bool {
        (1..=MAX_NUMBER).contains(&self.number)
            && self.offset.is_multiple_of(8)
            && self.offset >> 3 < 1 << OFFSET_BITS
    }
}

/// A slot's value: `tag` and `at` packed.
pub(crate) fn encode(tag: u32, at: Location) -> u64 {
    debug_assert!(at.fits() && tag < 1 << TAG_BITS);
    (u64::from(tag) << (64 - TAG_BITS)) | (u64::from(at.number) << OFFSET_BITS) | (at.offset >> 3)
}

/// The tag of a (non-empty) slot value.
pub(crate) fn tag_of(slot: u64) -> u32 {
    (slot >> (64 - TAG_BITS)) as u32
}

/// The location of a (non-empty) slot value.
pub(crate) fn location_of(slot: u64) -> Location {
    Location {
        number: ((slot >> OFFSET_BITS) as u32) & MAX_NUMBER,
        offset: (slot & ((1 << OFFSET_BITS) - 1)) << 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_are_never_zero() {
        for (tag, number, offset) in [
            (0, 1, 0),
            (1, MAX_NUMBER, 8),
            ((1 << TAG_BITS) - 1, 77, ((1 << OFFSET_BITS) - 1) << 3),
        ] {
            let at = Location { number, offset };
            assert!(at.fits());
            let slot = encode(tag, at);
            assert_ne!(slot, 0);
            assert_eq!((tag_of(slot), location_of(slot)), (tag, at));
        }
        assert!(
            !Location {
                number: 0,
                offset: 8
            }
            .fits()
        );
        assert!(
            !Location {
                number: 1,
                offset: 9
            }
            .fits()
        );
        assert!(
            !Location {
                number: 1,
                offset: 1 << 30
            }
            .fits()
        );
    }

    #[test]
    fn the_alternative_bucket_is_another_and_leads_back() {
        for tag in [0, 1, 12345, (1 << TAG_BITS) - 1] {
            for bucket in [0, 1, 511, (1 << BUCKET_BITS) - 1] {
                let alt = alternative(bucket, tag);
                assert_ne!(alt, bucket);
                assert!(alt < 1 << BUCKET_BITS);
                assert_eq!(alternative(alt, tag), bucket);
            }
        }
    }

    #[test]
    fn regions_split_by_the_next_bit_of_the_tag() {
        let tag = 0b1_0110_0000_0000_0000_0000;
        assert_eq!(region(tag, 0), 0);
        assert_eq!(region(tag, 1), 1);
        assert_eq!(region(tag, 3), 0b101);
        assert_eq!(region(tag, 4), 0b1011);
        for d in 0..MAX_REGION_BITS {
            let parent = region(tag, d);
            let child = region(tag, d + 1);
            assert_eq!(child >> 1, parent, "a region's keys go to its two halves");
        }
    }

    #[test]
    fn the_hash_depends_on_the_seed() {
        assert_eq!(hash(1, b"k"), hash(1, b"k"));
        assert_ne!(hash(1, b"k"), hash(2, b"k"));
    }
}
