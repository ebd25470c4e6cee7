//! Checking a store's files without changing them: every record's CRC, every header, every
//! hint file against its segment.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::hint;
use crate::lock::DirLock;
use crate::record;
use crate::scan::Records;
use crate::segment::{self, FileKind, SEGMENT_HEADER_LEN};
use crate::vfs::Dir;

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment id.
    pub segment: u64,
    /// Byte offset in the segment (or 0 for a header or hint problem).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// Whether it may be a torn write: damage in the newest segment a writer made that runs to
    /// the end of its records, which a rebuild after a crash cuts off. Damage anywhere else is
    /// skipped (its entries lost), or refused with `Options::strict`.
    pub torn_tail: bool,
    /// Bytes that held no valid record, up to the next valid one or the end of the records
    /// (0 for a header or hint problem).
    pub len: u64,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Valid records read.
    pub records: u64,
    /// Hint files checked.
    pub hints: usize,
    /// Everything wrong, in segment order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `dir` without modifying anything: each segment's header and every
/// record's CRC, and each hint file against a scan of its segment. Takes the directory lock
/// (so no store may have it open), and fails with [`Error::Locked`] otherwise.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let dir = &Dir::real(dir);
    let _lock = DirLock::acquire(dir)?;
    verify_files(dir)
}

/// The checks of [`verify`], on files nobody changes meanwhile (the caller holds the lock, or
/// is the open store holding its writer and compaction still).
pub(crate) fn verify_files(dir: &Dir) -> Result<VerifyReport> {
    let mut ids = Vec::new();
    let mut hints = Vec::new();
    for name in dir.vfs().list(dir.path()).context("listing", dir.path())? {
        match name.to_str().and_then(segment::parse_file_name) {
            Some((id, FileKind::Data, false)) => ids.push(id),
            Some((id, FileKind::Hint, false)) => hints.push(id),
            _ => {}
        }
    }
    ids.sort_unstable();
    let mut report = VerifyReport {
        segments: ids.len(),
        ..VerifyReport::default()
    };
    let problem = |segment, offset, reason: &str, torn_tail| Problem {
        segment,
        offset,
        reason: reason.to_string(),
        torn_tail,
        len: 0,
    };
    for (i, &id) in ids.iter().enumerate() {
        let is_newest = i + 1 == ids.len();
        let path = segment::path(dir, id);
        let bytes = dir.read(&path).context("reading", &path)?;
        let version = match segment::check_header(&bytes, id, FileKind::Data) {
            Ok(version) => version,
            Err(e) => {
                let reason = e.to_string();
                let unwritten = bytes.len() <= SEGMENT_HEADER_LEN
                    || record::is_end(&bytes[..SEGMENT_HEADER_LEN]);
                report
                    .problems
                    .push(problem(id, 0, &reason, is_newest && unwritten));
                continue;
            }
        };
        let mut from_scan = Vec::new();
        // Every damaged range is reported, not just the first.
        let mut walk = Records::skipping_damage(&bytes, version, u64::MAX);
        for (offset, rec) in walk.by_ref() {
            from_scan.push((
                offset as u32,
                record::span(rec.encoded_len(), version) as u32,
                rec.key.to_vec(),
                rec.is_tombstone(),
            ));
        }
        let end = walk.end().expect("walked to the end");
        report.records += from_scan.len() as u64;
        let writer_segment = id % segment::WRITER_ID_STRIDE == 0;
        for d in walk.damage() {
            let reaches_end = d.offset + d.len >= end.valid_len;
            report.problems.push(Problem {
                segment: id,
                offset: d.offset,
                reason: d.reason.to_string(),
                torn_tail: is_newest && writer_segment && reaches_end,
                len: d.len,
            });
        }
        if let Some((offset, reason)) = end.invalid {
            report.problems.push(problem(id, offset, reason, is_newest));
        } else if let Some(at) = bytes[end.valid_len as usize..].iter().position(|&b| b != 0) {
            let offset = end.valid_len + at as u64;
            let reason = "data after the end of the records";
            report.problems.push(problem(id, offset, reason, is_newest));
        }
        if hints.contains(&id) {
            report.hints += 1;
            let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
            let hint_bytes = dir.read(&hint_path).context("reading", &hint_path)?;
            let mut from_hint = Vec::new();
            let loaded = hint::load(&hint_bytes, id, version, bytes.len() as u64, |e| {
                from_hint.push((e.offset, e.len, e.key.to_vec(), e.tombstone))
            });
            match loaded {
                Err(reason) => {
                    report
                        .problems
                        .push(problem(id, 0, &format!("hint file: {reason}"), false))
                }
                Ok(loaded) if from_hint != from_scan || loaded.end != end.valid_len => {
                    report.problems.push(problem(
                        id,
                        0,
                        "hint file disagrees with its segment",
                        false,
                    ));
                }
                Ok(_) => {}
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Store};

    #[test]
    fn a_clean_store_verifies_and_damage_is_found_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Options::default().max_segment_size(1024)).unwrap();
            for i in 0..100u32 {
                store.put(&i.to_le_bytes(), &[1; 30]).unwrap();
            }
            store.compact().unwrap();
        }
        let report = verify(dir.path()).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.records, 100);
        assert!(report.segments > 1);

        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "data"))
            .collect();
        files.sort();
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let start = segment::data_start(segment::FORMAT_VERSION);
        bytes[start + 25] ^= 1;
        std::fs::write(&files[0], &bytes).unwrap();
        let report = verify(dir.path()).unwrap();
        let p = &report.problems[0];
        assert_eq!(p.offset, start as u64);
        assert_eq!(p.reason, "checksum mismatch");
        assert!(!p.torn_tail);

        assert_eq!(
            p.len,
            padded(30) as u64 * 2,
            "the record, and the one after it"
        );
        assert_eq!(report.problems.len(), 1);

        // The index was closed cleanly, so open trusts it and reads find the damage: the
        // damaged entry reads as absent, and is counted.
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let absent = (0..100u32)
            .filter(|i| store.get(&i.to_le_bytes()).unwrap().is_none())
            .count();
        assert_eq!(absent, 1, "the damaged record is lost, the others read");
        assert_eq!(store.stats().damaged_reads, 1);
        drop(store);
        let strict = Store::open(dir.path(), Options::default().strict(true)).unwrap();
        let failed = (0..100u32)
            .filter(|i| strict.get(&i.to_le_bytes()).is_err())
            .count();
        assert_eq!(failed, 1, "strict: a read of the damaged record fails");
        drop(strict);

        // Rebuilding the index scans the segments: the damage is skipped and reported.
        let pointer = dir.path().join(crate::index::file::POINTER_FILE);
        std::fs::remove_file(&pointer).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let damaged = &store.recovery_report().damaged;
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        assert_eq!(damaged[0].offset, start as u64);
        let present = (0..100u32)
            .filter(|i| store.get(&i.to_le_bytes()).unwrap().is_some())
            .count();
        assert_eq!(
            present, 98,
            "the damaged entry and the one after it are lost"
        );
        drop(store);
        std::fs::remove_file(&pointer).unwrap();
        let strict = Store::open(dir.path(), Options::default().strict(true));
        assert!(
            matches!(strict, Err(Error::Corrupt { .. })),
            "strict: the rebuild refuses the damage"
        );
    }

    fn padded(value_len: usize) -> usize {
        record::padded_len(4, value_len)
    }

    #[test]
    fn verify_needs_the_lock_or_the_open_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert!(matches!(verify(dir.path()), Err(Error::Locked(_))));
        for i in 0..100u32 {
            store.put(&i.to_le_bytes(), &[1; 30]).unwrap();
        }
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.records, 100);
    }
}
