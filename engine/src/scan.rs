//! The one walk over a segment's records, used by recovery, hint files, verify, compaction and
//! eviction.
//!
//! Records of an atomic batch are yielded only once the whole batch has been read. The walk
//! stops at the end of the bytes, at the zero header that ends a version 2 segment's records,
//! or at the first invalid record; [`Records::end`] then says where the valid records end and
//! why the walk stopped.

use crate::record::{self, ALIGN, DecodeError, RECORD_HEADER_LEN, Record};
use crate::segment::{SEGMENT_HEADER_LEN, data_start};

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
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            self.stop(None);
            return None;
        }
        if self.align != 1 && record::is_end(&rest[..rest.len().min(RECORD_HEADER_LEN)]) {
            self.stop(None);
            return None;
        }
        match record::decode(rest) {
            Ok(rec) => {
                let offset = self.at as u64;
                let len = rec.encoded_len();
                let span = len.next_multiple_of(self.align);
                if span > rest.len() {
                    // A record is whole only with its padding.
                    self.stop(Some((offset, DecodeError::Truncated.reason())));
                    return None;
                }
                if !record::is_end(&rest[len..span]) {
                    self.stop(Some((offset, "padding after a record is not zero")));
                    return None;
                }
                self.at += span;
                Some((offset, rec))
            }
            Err(e @ (DecodeError::Truncated | DecodeError::Invalid(_))) => {
                self.stop(Some((self.at as u64, e.reason())));
                None
            }
        }
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
