//! Opening a store directory: find the segments, validate them, rebuild the index, and cut a
//! torn tail off the newest segment.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hint;
use crate::keydir::{KeyDir, Location};
use crate::record::{self, Record};
use crate::segment::{
    self, FileKind, MAX_SEGMENT_LEN, SEGMENT_HEADER_LEN, Segment, WRITER_ID_STRIDE, next_writer_id,
};

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files loaded.
    pub segments: usize,
    /// Valid records scanned.
    pub records: u64,
    /// The torn tail cut off the newest segment, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Newest segment files removed because they held no record (a crash while creating one,
    /// or a store opened for writing that wrote nothing).
    pub empty_segments_removed: usize,
    /// Segments whose index entries came from their hint file instead of a scan.
    pub hints_used: usize,
    /// Hint files found invalid (then removed, and their segments scanned).
    pub hints_rejected: usize,
    /// Temporary files of an interrupted compaction or hint write, removed.
    pub temp_files_removed: usize,
}

/// Bytes at the end of the newest segment that did not form whole, valid records (a write cut
/// by a crash) and were truncated on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: u64,
    /// Where the valid records ended and the cut began.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the first discarded record was invalid.
    pub reason: &'static str,
}

/// The state rebuilt from disk.
pub(crate) struct Recovered {
    /// Sealed segments, ascending by id.
    pub segments: Vec<Segment>,
    pub keydir: KeyDir,
    /// The id for the next segment created.
    pub next_segment_id: u64,
    pub report: RecoveryReport,
}

/// Where a scan of a segment's records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last complete record (or complete batch).
    pub valid_len: u64,
    /// Offset and reason of the first invalid record, if the scan did not reach the end.
    pub invalid: Option<(u64, &'static str)>,
}

/// Visits every valid record of a segment's bytes in order. The records of a batch are visited
/// only once the batch is complete. Stops at the first invalid record.
pub(crate) fn scan_records<'a>(bytes: &'a [u8], mut visit: impl FnMut(u64, Record<'a>)) -> ScanEnd {
    let mut offset = SEGMENT_HEADER_LEN;
    let mut committed = offset;
    let mut batch: Vec<(u64, Record<'a>)> = Vec::new();
    while offset < bytes.len() {
        match record::decode(&bytes[offset..]) {
            Ok(rec) => {
                batch.push((offset as u64, rec));
                offset += rec.encoded_len();
                if !rec.batch_continues() {
                    for (at, rec) in batch.drain(..) {
                        visit(at, rec);
                    }
                    committed = offset;
                }
            }
            Err(e) => {
                return ScanEnd {
                    valid_len: committed as u64,
                    invalid: Some((offset as u64, e.reason())),
                };
            }
        }
    }
    ScanEnd {
        valid_len: committed as u64,
        invalid: (!batch.is_empty()).then_some((committed as u64, "batch without its last record")),
    }
}

/// The files of ours found in a store directory.
#[derive(Debug, Default)]
struct Listing {
    /// Data segment ids, ascending.
    data: Vec<u64>,
    /// Segment ids that have a hint file.
    hints: BTreeSet<u64>,
    /// Files still under a temporary name: an interrupted compaction or hint write.
    temps: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).context("listing", dir)? {
        let entry = entry.context("listing", dir)?;
        let Some(parsed) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        else {
            continue;
        };
        match parsed {
            (_, _, true) => listing.temps.push(entry.path()),
            (id, FileKind::Data, false) => listing.data.push(id),
            (id, FileKind::Hint, false) => {
                listing.hints.insert(id);
            }
        }
    }
    listing.data.sort_unstable();
    Ok(listing)
}

fn remove_files(dir: &Path, paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    for p in paths {
        fs::remove_file(p).context("removing the leftover file", p)?;
    }
    segment::sync_dir(dir)
}

/// Whether the newest segment file is what a crash during its creation leaves: no complete,
/// valid header (the header is synced before any record is appended).
fn is_torn_creation(path: &Path, id: u64) -> Result<bool> {
    let bytes = fs::read(path).context("reading the header of", path)?;
    Ok(bytes.len() <= SEGMENT_HEADER_LEN
        && segment::check_header(&bytes, id, FileKind::Data).is_err())
}

/// How a segment's records were found.
enum Loaded {
    /// From its hint file, which lists `records` records.
    Hint { records: u64 },
    /// By scanning the segment.
    Scan { records: u64, end: ScanEnd },
}

/// Loads segment `id` and applies its records to `keydir`, from its hint file if it has a
/// valid one, else by scanning it. A rejected hint file is removed.
fn load_segment(
    dir: &Path,
    id: u64,
    has_hint: bool,
    keydir: &mut KeyDir,
    now_ms: u64,
) -> Result<(Segment, Loaded)> {
    let path = segment::path(dir, id);
    let file = File::open(&path).context("opening", &path)?;
    let len = file
        .metadata()
        .context("reading the metadata of", &path)?
        .len();
    if len > MAX_SEGMENT_LEN {
        return Err(Error::Corrupt {
            segment: id,
            offset: MAX_SEGMENT_LEN,
            reason: "segment longer than the format allows",
        });
    }
    if len < SEGMENT_HEADER_LEN as u64 {
        return Err(Error::Corrupt {
            segment: id,
            offset: 0,
            reason: "segment header cut short",
        });
    }
    let seg = Segment::sealed(id, path, file, len)?;
    let bytes = seg.read(0, len as usize)?;
    segment::check_header(&bytes, id, FileKind::Data)?;
    if has_hint {
        let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
        let hint = fs::read(&hint_path).context("reading", &hint_path)?;
        let loaded = hint::load(&hint, id, len, |e| {
            let loc = Location {
                segment: id,
                offset: e.offset,
                len: e.len,
                expires_at: e.expires_at,
            };
            keydir.apply(e.key, loc, e.tombstone, now_ms);
        });
        match loaded {
            Ok(records) => {
                drop(bytes);
                return Ok((seg, Loaded::Hint { records }));
            }
            Err(_) => remove_files(dir, &[hint_path])?,
        }
    }
    let mut records = 0u64;
    let end = scan_records(&bytes, |offset, rec| {
        records += 1;
        let loc = Location {
            segment: id,
            offset: offset as u32,
            len: rec.encoded_len() as u32,
            expires_at: rec.expires_at,
        };
        keydir.apply(rec.key, loc, rec.is_tombstone(), now_ms);
    });
    drop(bytes);
    Ok((seg, Loaded::Scan { records, end }))
}

/// Cuts segment `id` to `len` bytes and makes the cut durable.
fn truncate_segment(dir: &Path, id: u64, len: u64) -> Result<Segment> {
    let path = segment::path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .context("opening, to cut its torn tail,", &path)?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .context("cutting the torn tail of", &path)?;
    Segment::sealed(id, path, file, len)
}

/// Rebuilds the store state from the segment files in `dir` (which the caller has locked).
pub(crate) fn recover(dir: &Path, now_ms: u64) -> Result<Recovered> {
    let listing = list(dir)?;
    let mut report = RecoveryReport::default();
    // Temporary files were never complete, and nothing refers to them.
    remove_files(dir, &listing.temps)?;
    report.temp_files_removed = listing.temps.len();
    let mut ids = listing.data;
    let next_segment_id = ids
        .last()
        .map_or(WRITER_ID_STRIDE, |&id| next_writer_id(id));
    if let Some(&last) = ids.last()
        && is_torn_creation(&segment::path(dir, last), last)?
    {
        let path = segment::path(dir, last);
        fs::remove_file(&path).context("removing the empty segment", &path)?;
        segment::sync_dir(dir)?;
        report.empty_segments_removed += 1;
        ids.pop();
    }
    // A hint without its segment is left from a deletion cut short.
    let orphans: Vec<PathBuf> = listing
        .hints
        .iter()
        .filter(|id| ids.binary_search(id).is_err())
        .map(|&id| dir.join(segment::file_name(id, FileKind::Hint)))
        .collect();
    remove_files(dir, &orphans)?;

    let mut keydir = KeyDir::default();
    // Hint footers say how many entries are coming; a claim larger than the segment could hold
    // is ignored, so a damaged footer cannot make the index reserve absurd memory.
    let expected: u64 = ids
        .iter()
        .filter(|id| listing.hints.contains(id))
        .filter_map(|&id| {
            let claimed = hint::claimed_entries(&dir.join(segment::file_name(id, FileKind::Hint)))?;
            let len = fs::metadata(segment::path(dir, id)).ok()?.len();
            (claimed <= len / record::encoded_len(0, 0) as u64).then_some(claimed)
        })
        .sum();
    keydir.reserve(usize::try_from(expected).unwrap_or(0));
    let mut segments = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let is_newest = i + 1 == ids.len();
        let has_hint = listing.hints.contains(&id);
        let (mut seg, loaded) = load_segment(dir, id, has_hint, &mut keydir, now_ms)?;
        let hinted = matches!(loaded, Loaded::Hint { .. });
        let (records, end) = match loaded {
            Loaded::Hint { records } => {
                report.hints_used += 1;
                (records, None)
            }
            Loaded::Scan { records, end } => {
                report.hints_rejected += usize::from(has_hint);
                (records, Some(end))
            }
        };
        report.records += records;
        if let Some(ScanEnd {
            valid_len,
            invalid: Some((offset, reason)),
        }) = end
        {
            if !is_newest {
                return Err(Error::Corrupt {
                    segment: id,
                    offset,
                    reason,
                });
            }
            // Only the newest segment can end in a write that a crash cut short.
            let file_len = seg.file_len();
            drop(seg);
            seg = truncate_segment(dir, id, valid_len)?;
            report.torn_tail = Some(TornTail {
                segment: id,
                offset: valid_len,
                bytes: file_len - valid_len,
                reason,
            });
        }
        if is_newest && records == 0 {
            drop(seg);
            let path = segment::path(dir, id);
            fs::remove_file(&path).context("removing the empty segment", &path)?;
            segment::sync_dir(dir)?;
            report.empty_segments_removed += 1;
            continue;
        }
        seg.set_has_hint(hinted);
        segments.push(seg);
    }
    report.segments = segments.len();
    Ok(Recovered {
        segments,
        keydir,
        next_segment_id,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_BATCH_CONTINUES, encode_into};

    fn segment_bytes(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = segment::encode_header(1, FileKind::Data).to_vec();
        for &(flags, key, value) in records {
            encode_into(&mut out, flags, 0, key, value);
        }
        out
    }

    fn visited(bytes: &[u8]) -> (Vec<Vec<u8>>, ScanEnd) {
        let mut keys = Vec::new();
        let end = scan_records(bytes, |_, rec| keys.push(rec.key.to_vec()));
        (keys, end)
    }

    #[test]
    fn scan_visits_all_records_in_order() {
        let bytes = segment_bytes(&[(0, b"a", b"1"), (0, b"b", b"2")]);
        let (keys, end) = visited(&bytes);
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(end.valid_len, bytes.len() as u64);
        assert_eq!(end.invalid, None);
    }

    #[test]
    fn an_incomplete_batch_is_not_visited() {
        let bytes = segment_bytes(&[
            (0, b"a", b"1"),
            (FLAG_BATCH_CONTINUES, b"b", b"2"),
            (FLAG_BATCH_CONTINUES, b"c", b"3"),
        ]);
        let (keys, end) = visited(&bytes);
        assert_eq!(keys, vec![b"a".to_vec()]);
        let after_a = (SEGMENT_HEADER_LEN + record::encoded_len(1, 1)) as u64;
        assert_eq!(end.valid_len, after_a);
        assert_eq!(
            end.invalid,
            Some((after_a, "batch without its last record"))
        );
    }

    #[test]
    fn a_complete_batch_is_visited() {
        let bytes = segment_bytes(&[(FLAG_BATCH_CONTINUES, b"b", b"2"), (0, b"c", b"3")]);
        let (keys, end) = visited(&bytes);
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(end.invalid, None);
    }

    #[test]
    fn scan_stops_at_a_corrupt_record() {
        let mut bytes = segment_bytes(&[(0, b"a", b"1"), (0, b"b", b"2"), (0, b"c", b"3")]);
        let second = SEGMENT_HEADER_LEN + record::encoded_len(1, 1);
        bytes[second + 22] ^= 0xff;
        let (keys, end) = visited(&bytes);
        assert_eq!(keys, vec![b"a".to_vec()]);
        assert_eq!(end.invalid, Some((second as u64, "checksum mismatch")));
    }
}
