//! The one walk over a segment's records, used by recovery, hint files, verify, compaction and
//! eviction.
//!
//! Records of an atomic batch are yielded only once the whole batch has been read. The walk
//! stops at the end of the bytes, at the zero header that ends a version 2 segment's records,
//! or at the first invalid record; [`Records::end`] then says where the valid records end and
//! why the walk stopped.
//!
//! A walk made with [`Records::skipping_damage`] does not stop at damage before a given
//! offset (bytes known to have been durable, where nothing can be a torn write): it notes the
//! damaged range, finds the next valid record after it, and goes on. A batch the damage cuts
//! is dropped whole. Since a batch's last record does not say that it ends a batch, the walk
//! cannot tell whether the records right after the damage finish a batch the damage began: it
//! drops them too, up to and including the next record that ends a batch or stands alone. One
//! damaged record thus costs at most two entries (or batches), never a part of a batch.

use crate::record::{self, ALIGN, DecodeError, RECORD_HEADER_LEN, Record};
use crate::segment::{SEGMENT_HEADER_LEN, data_start, first_nonzero};

/// Bytes a walk skipped because they held no valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Where the skipped bytes start: the end of the last valid record (or batch) before them.
    pub offset: u64,
    /// How many bytes were skipped, up to the next valid record (or the end of the records).
    pub len: u64,
    /// Why the first of them was not a valid record.
    pub reason: &'static str,
}

/// Where a walk over a segment's records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last complete record (or complete batch), padding included.
    pub valid_len: u64,
    /// Offset and reason of the first invalid record, if the walk did not reach the end.
    pub invalid: Option<(u64, &'static str)>,
}

/// Iterator over the valid records of a segment's bytes: `(offset, record)`.
pub(crate) struct Records<'a> {
    bytes: &'a [u8],
    /// 1 for format version 1 (records packed), [`ALIGN`] for version 2.
    align: usize,
    /// Where the next record starts.
    at: usize,
    /// End of the last complete record or batch.
    committed: usize,
    /// Records of a batch read so far (or a complete batch being handed out).
    batch: Vec<(u64, Record<'a>)>,
    /// How many of `batch` have been handed out, once it is complete.
    handed: Option<usize>,
    end: Option<ScanEnd>,
    /// Damage before this offset is skipped; at or after it, it ends the walk.
    skip_below: usize,
    /// The ranges skipped.
    damage: Vec<Damage>,
    /// After damage: the records up to the end of the next batch (or the next single record)
    /// are dropped, as they may end a batch the damage began.
    dropping: bool,
}

impl<'a> Records<'a> {
    /// Walks `bytes`, a whole segment file (header included) of format `version`.
    pub fn new(bytes: &'a [u8], version: u16) -> Records<'a> {
        let start = data_start(version).min(bytes.len());
        let mut records = Records {
            bytes,
            align: if version == 1 { 1 } else { ALIGN },
            at: start,
            committed: start,
            batch: Vec::new(),
            handed: None,
            end: None,
            skip_below: 0,
            damage: Vec::new(),
            dropping: false,
        };
        // The bytes between the header and the first record are zero too.
        let padding = SEGMENT_HEADER_LEN.min(start)..start;
        if !record::is_end(&bytes[padding.clone()]) {
            records.committed = padding.start;
            records.stop(Some((
                padding.start as u64,
                "padding after the header is not zero",
            )));
        }
        records
    }

    /// Walks `bytes` like [`Records::new`], but skips damage that starts before `skip_below`
    /// (see the module docs). `usize::MAX`: skip damage anywhere.
    pub fn skipping_damage(bytes: &'a [u8], version: u16, skip_below: u64) -> Records<'a> {
        let mut records = Records::new(bytes, version);
        records.skip_below = usize::try_from(skip_below).unwrap_or(usize::MAX);
        if let Some(ScanEnd {
            invalid: Some((offset, reason)),
            ..
        }) = records.end
            && (offset as usize) < records.skip_below
        {
            // Damaged padding after the header: it holds no record, so the walk goes on at
            // the first one.
            let start = data_start(version).min(bytes.len());
            records.end = None;
            records.committed = start;
            records.damage.push(Damage {
                offset,
                len: (start as u64).saturating_sub(offset),
                reason,
            });
        }
        records
    }

    /// The ranges skipped so far.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Where the walk stopped; `None` until the iterator has returned `None`.
    pub fn end(&self) -> Option<ScanEnd> {
        self.end
    }

    fn stop(&mut self, invalid: Option<(u64, &'static str)>) {
        let invalid = match invalid {
            None if !self.batch.is_empty() => {
                Some((self.committed as u64, "batch without its last record"))
            }
            other => other,
        };
        self.batch.clear();
        self.end = Some(ScanEnd {
            valid_len: self.committed as u64,
            invalid,
        });
    }

    /// Reads the record at `self.at`: `None` once the walk has stopped.
    fn read_one(&mut self) -> Option<(u64, Record<'a>)> {
        loop {
            let rest = &self.bytes[self.at..];
            if rest.is_empty() {
                self.stop(None);
                return None;
            }
            let problem =
                if self.align != 1 && record::is_end(&rest[..rest.len().min(RECORD_HEADER_LEN)]) {
                    // The end of the records, unless something follows the zeros.
                    if self.at >= self.skip_below || first_nonzero(rest).is_none() {
                        self.stop(None);
                        return None;
                    }
                    "zeros in the middle of the records"
                } else {
                    match self.decode_at(self.at) {
                        Ok((rec, span)) => {
                            let offset = self.at as u64;
                            self.at += span;
                            return Some((offset, rec));
                        }
                        Err(reason) => reason,
                    }
                };
            if self.at >= self.skip_below {
                self.stop(Some((self.at as u64, problem)));
                return None;
            }
            // Damage where no write can have been torn: skip to the next valid record.
            let from = self.committed;
            self.batch.clear();
            self.note_damage(from, problem);
            if self.end.is_some() {
                return None;
            }
        }
    }

    /// The record at `at` and the bytes it takes with its padding, if it is whole and valid.
    fn decode_at(&self, at: usize) -> Result<(Record<'a>, usize), &'static str> {
        let rest = &self.bytes[at..];
        let rec = record::decode(rest).map_err(|e| e.reason())?;
        let len = rec.encoded_len();
        let span = len.next_multiple_of(self.align);
        if span > rest.len() {
            // A record is whole only with its padding.
            return Err(DecodeError::Truncated.reason());
        }
        if !record::is_end(&rest[len..span]) {
            return Err("padding after a record is not zero");
        }
        Ok((rec, span))
    }

    /// Notes the damage from `from` (for `reason`) and moves to the next valid record after
    /// `self.at`, or stops at the end of the records (or at `skip_below`, where damage no
    /// longer is skipped). The unit after it is dropped too (see the module docs).
    fn note_damage(&mut self, from: usize, reason: &'static str) {
        self.dropping = true;
        let resume = self.next_valid_after(self.at);
        let to = resume.unwrap_or_else(|| self.end_of_data(self.at));
        self.damage.push(Damage {
            offset: from as u64,
            len: (to - from) as u64,
            reason,
        });
        self.at = to;
        self.committed = to;
        if resume.is_none() {
            self.stop(None);
        }
    }

    /// The first position after `at` (on the record alignment, at or before `skip_below`:
    /// every byte skipped lies before it) where a whole, valid record starts.
    fn next_valid_after(&self, at: usize) -> Option<usize> {
        let last_start = self.skip_below.min(self.bytes.len().checked_sub(1)?);
        let window_end = last_start
            .saturating_add(RECORD_HEADER_LEN)
            .min(self.bytes.len());
        let mut p = at + self.align;
        while p <= last_start {
            // Runs of zeros hold no record: jump to the first nonzero byte (a header may start
            // with a zero checksum and zero fields, so look a little before it).
            let z = p + first_nonzero(&self.bytes[p..window_end])?;
            let back = (RECORD_HEADER_LEN / self.align) * self.align;
            let candidate = z.saturating_sub(back).max(p);
            p = candidate - (candidate - p) % self.align;
            while p <= z && p <= last_start {
                if self.decode_at(p).is_ok() {
                    return Some(p);
                }
                p += self.align;
            }
        }
        None
    }

    /// Where the bytes from `at` on end for the walk: the zero tail of a version 2 segment,
    /// or `skip_below`, or the end of the bytes.
    fn end_of_data(&self, at: usize) -> usize {
        let limit = self.skip_below.min(self.bytes.len());
        if at >= limit {
            return at;
        }
        if self.align == 1 {
            return limit;
        }
        // Past the last nonzero byte before `limit`, on the record alignment.
        let last = self.bytes[at..limit].iter().rposition(|&b| b != 0);
        last.map_or(at, |i| (at + i + 1).next_multiple_of(self.align).min(limit))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u64, Record<'a>);

    fn next(&mut self) -> Option<(u64, Record<'a>)> {
        loop {
            if let Some(handed) = self.handed {
                if let Some(&next) = self.batch.get(handed) {
                    self.handed = Some(handed + 1);
                    return Some(next);
                }
                self.batch.clear();
                self.handed = None;
            }
            if self.end.is_some() {
                return None;
            }
            let (offset, rec) = self.read_one()?;
            if self.dropping {
                // Dropped with the damage before it, whose range it joins.
                if !rec.batch_continues() {
                    self.dropping = false;
                }
                self.committed = self.at;
                if let Some(last) = self.damage.last_mut() {
                    last.len = self.at as u64 - last.offset;
                }
                continue;
            }
            if rec.batch_continues() {
                self.batch.push((offset, rec));
                continue;
            }
            self.committed = self.at;
            if self.batch.is_empty() {
                return Some((offset, rec));
            }
            self.batch.push((offset, rec));
            self.handed = Some(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_BATCH_CONTINUES, encode_into, encoded_len, padded_len};
    use crate::segment::{FileKind, encode_header};

    fn segment_bytes(version: u16, records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = encode_header(1, FileKind::Data).to_vec();
        out.resize(data_start(version), 0);
        for &(flags, key, value) in records {
            if version == 1 {
                let mut one = Vec::new();
                encode_into(&mut one, flags, 0, key, value);
                out.extend_from_slice(&one[..encoded_len(key.len(), value.len())]);
            } else {
                encode_into(&mut out, flags, 0, key, value);
            }
        }
        out
    }

    fn visited(bytes: &[u8], version: u16) -> (Vec<Vec<u8>>, ScanEnd) {
        let mut records = Records::new(bytes, version);
        let keys = records.by_ref().map(|(_, rec)| rec.key.to_vec()).collect();
        (keys, records.end().unwrap())
    }

    /// The records a damage-skipping walk yields, the damage it noted, and where it ended.
    fn skipping(
        bytes: &[u8],
        version: u16,
        skip_below: u64,
    ) -> (Vec<Vec<u8>>, Vec<Damage>, ScanEnd) {
        let mut records = Records::skipping_damage(bytes, version, skip_below);
        let keys = records.by_ref().map(|(_, rec)| rec.key.to_vec()).collect();
        let damage = records.damage().to_vec();
        (keys, damage, records.end().unwrap())
    }

    #[test]
    fn damage_in_the_middle_is_skipped_up_to_the_next_record() {
        let values: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 40]).collect();
        let mut bytes = segment_bytes(
            2,
            &[
                (0, b"a", &values[0]),
                (0, b"b", &values[1]),
                (0, b"c", &values[2]),
            ],
        );
        let start = data_start(2);
        let second = start + padded_len(1, 40);
        let third = second + padded_len(1, 40);
        bytes[second + 30] ^= 1;
        let (keys, damage, end) = skipping(&bytes, 2, u64::MAX);
        // c might have ended a batch b began: it goes with b.
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].offset, second as u64);
        assert_eq!(damage[0].len, (bytes.len() - second) as u64);
        assert_eq!(third - second, padded_len(1, 40));
        assert_eq!((end.valid_len, end.invalid), (bytes.len() as u64, None));
        // Beyond `skip_below` the same damage ends the walk, as a torn write would.
        let (keys, damage, end) = skipping(&bytes, 2, second as u64);
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert!(damage.is_empty());
        assert_eq!(end.valid_len, second as u64);
        assert!(end.invalid.is_some());
    }

    #[test]
    fn zeros_in_the_middle_are_damage_and_a_cut_batch_is_dropped_whole() {
        let bytes = segment_bytes(
            2,
            &[
                (0, b"a", b"1"),
                (FLAG_BATCH_CONTINUES, b"b", b"2"),
                (0, b"c", b"3"),
                (0, b"d", b"4"),
                (0, b"e", b"5"),
            ],
        );
        let start = data_start(2);
        let one = padded_len(1, 1);
        // The second record of the batch (c) zeroed: the batch goes, and d, which the walk
        // cannot tell from the end of a batch; e stays.
        let mut zeroed = bytes.clone();
        zeroed[start + 2 * one..start + 3 * one].fill(0);
        let (keys, damage, _) = skipping(&zeroed, 2, u64::MAX);
        assert_eq!(keys, vec![b"a".to_vec(), b"e".to_vec()]);
        assert_eq!(
            damage[0].offset,
            (start + one) as u64,
            "from the batch's start"
        );
        assert_eq!(damage[0].len, (3 * one) as u64);
        // Damage in the last record: skipped to the end, nothing after it.
        let mut last = bytes.clone();
        let len = last.len();
        last[len - 3] ^= 0x40;
        last.resize(len + 4096, 0);
        let (keys, damage, end) = skipping(&last, 2, u64::MAX);
        assert_eq!(
            keys,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(damage.len(), 1);
        assert_eq!(end.valid_len, len as u64);
    }

    #[test]
    fn damaged_padding_after_the_header_of_an_empty_segment_ends_at_the_first_record() {
        let mut bytes = segment_bytes(2, &[]);
        bytes.resize(bytes.len() + 64, 0);
        bytes[SEGMENT_HEADER_LEN + 1] = 7;
        let (keys, damage, end) = skipping(&bytes, 2, u64::MAX);
        assert!(keys.is_empty());
        assert_eq!(damage.len(), 1);
        assert_eq!(
            (end.valid_len, end.invalid),
            (data_start(2) as u64, None),
            "the records (none) end where they start, not inside the padding"
        );
    }

    #[test]
    fn one_flipped_byte_anywhere_costs_at_most_its_own_record() {
        let entries: Vec<(u8, Vec<u8>, Vec<u8>)> = (0..12u8)
            .map(|i| {
                let flags = if i % 4 == 1 { FLAG_BATCH_CONTINUES } else { 0 };
                (flags, vec![b'k', i], vec![i; (i as usize * 7) % 30])
            })
            .collect();
        let as_refs: Vec<(u8, &[u8], &[u8])> = entries
            .iter()
            .map(|(f, k, v)| (*f, k.as_slice(), v.as_slice()))
            .collect();
        for version in [1, 2] {
            let bytes = segment_bytes(version, &as_refs);
            let (all, _, _) = skipping(&bytes, version, u64::MAX);
            assert_eq!(all.len(), entries.len());
            for at in SEGMENT_HEADER_LEN..bytes.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[at] ^= flip;
                    let mut walk = Records::skipping_damage(&damaged, version, u64::MAX);
                    let got: Vec<(u64, Vec<u8>, Vec<u8>)> = walk
                        .by_ref()
                        .map(|(o, r)| (o, r.key.to_vec(), r.value.to_vec()))
                        .collect();
                    // Never a record that was not written, and each at its place.
                    let mut offset = data_start(version) as u64;
                    let mut expected = Vec::new();
                    for (f, k, v) in &entries {
                        expected.push((offset, k.clone(), v.clone(), *f));
                        offset += if version == 1 {
                            encoded_len(k.len(), v.len())
                        } else {
                            padded_len(k.len(), v.len())
                        } as u64;
                    }
                    // Lost: the record holding the byte with its batch, and the records after
                    // it up to the first that ends a batch or stands alone.
                    let ends = |i: usize| expected.get(i + 1).map_or(offset, |n| n.0);
                    let lost = (0..expected.len())
                        .position(|i| (expected[i].0..ends(i)).contains(&(at as u64)))
                        .map(|d| {
                            let mut first = d;
                            while first > 0 && expected[first - 1].3 & FLAG_BATCH_CONTINUES != 0 {
                                first -= 1;
                            }
                            let mut last = d + 1;
                            while last < expected.len()
                                && expected[last].3 & FLAG_BATCH_CONTINUES != 0
                            {
                                last += 1;
                            }
                            (expected[first].0, ends(last.min(expected.len() - 1)))
                        });
                    let kept: Vec<(u64, Vec<u8>, Vec<u8>)> = expected
                        .iter()
                        .filter(|e| lost.is_none_or(|(from, to)| !(from..to).contains(&e.0)))
                        .map(|e| (e.0, e.1.clone(), e.2.clone()))
                        .collect();
                    assert_eq!(got, kept, "v{version}, byte {at} ^ {flip:#x}");
                    assert!(walk.end().unwrap().invalid.is_none());
                }
            }
        }
    }

    #[test]
    fn visits_all_records_in_order_in_both_versions() {
        for version in [1, 2] {
            let bytes = segment_bytes(version, &[(0, b"a", b"1"), (0, b"bb", b"22")]);
            let (keys, end) = visited(&bytes, version);
            assert_eq!(keys, vec![b"a".to_vec(), b"bb".to_vec()]);
            assert_eq!(end.valid_len, bytes.len() as u64);
            assert_eq!(end.invalid, None);
        }
    }

    #[test]
    fn a_zero_tail_ends_a_version_2_segment() {
        let mut bytes = segment_bytes(2, &[(0, b"a", b"1")]);
        let end_of_records = bytes.len() as u64;
        bytes.resize(bytes.len() + 4096, 0);
        let (keys, end) = visited(&bytes, 2);
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!((end.valid_len, end.invalid), (end_of_records, None));
        // In version 1 zeros are not an end but a damaged record.
        let (_, end) = visited(&bytes, 1);
        assert!(end.invalid.is_some());
    }

    #[test]
    fn an_incomplete_batch_is_not_visited() {
        for version in [1, 2] {
            let bytes = segment_bytes(
                version,
                &[
                    (0, b"a", b"1"),
                    (FLAG_BATCH_CONTINUES, b"b", b"2"),
                    (FLAG_BATCH_CONTINUES, b"c", b"3"),
                ],
            );
            let (keys, end) = visited(&bytes, version);
            assert_eq!(keys, vec![b"a".to_vec()]);
            let after_a = data_start(version)
                + if version == 1 {
                    encoded_len(1, 1)
                } else {
                    padded_len(1, 1)
                };
            assert_eq!(end.valid_len, after_a as u64);
            assert_eq!(
                end.invalid,
                Some((after_a as u64, "batch without its last record"))
            );
        }
    }

    #[test]
    fn a_complete_batch_is_visited_after_its_last_record() {
        let bytes = segment_bytes(
            2,
            &[
                (FLAG_BATCH_CONTINUES, b"b", b"2"),
                (0, b"c", b"3"),
                (0, b"d", b"4"),
            ],
        );
        let (keys, end) = visited(&bytes, 2);
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(end.invalid, None);
    }

    #[test]
    fn stops_at_a_corrupt_or_cut_record() {
        let mut bytes = segment_bytes(2, &[(0, b"a", b"1"), (0, b"b", b"2"), (0, b"c", b"3")]);
        let second = data_start(2) + padded_len(1, 1);
        bytes[second + 22] ^= 0xff;
        let (keys, end) = visited(&bytes, 2);
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!(end.invalid, Some((second as u64, "checksum mismatch")));
        let bytes = segment_bytes(2, &[(0, b"a", b"1"), (0, b"b", b"2")]);
        for cut in second + 1..second + encoded_len(1, 1) {
            let (keys, end) = visited(&bytes[..cut], 2);
            assert_eq!(keys, vec![b"a".to_vec()], "cut at {cut}");
            assert_eq!(end.invalid, Some((second as u64, "record cut short")));
        }
        // Cut inside the padding: the record is not whole.
        let (keys, end) = visited(&bytes[..bytes.len() - 1], 2);
        assert_eq!(keys.len(), 1);
        assert_eq!(end.invalid, Some((second as u64, "record cut short")));
        let mut header_padding = bytes.clone();
        header_padding[SEGMENT_HEADER_LEN + 1] = 1;
        let (keys, end) = visited(&header_padding, 2);
        assert!(keys.is_empty());
        assert_eq!(
            end.valid_len, SEGMENT_HEADER_LEN as u64,
            "the damage is cut too"
        );
        // Padding must be zero: anything else is damage.
        let mut bytes = bytes;
        bytes[second - 1] = 1;
        let (keys, end) = visited(&bytes, 2);
        assert!(keys.is_empty());
        assert_eq!(
            end.invalid,
            Some((data_start(2) as u64, "padding after a record is not zero"))
        );
    }
}
