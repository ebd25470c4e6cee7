//! Opening a store directory: find the segments, validate them, rebuild the index, and cut a
//! torn tail off the newest segment.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hint;
use crate::keydir::{KeyDir, Location};
use crate::record;
use crate::scan::{Records, ScanEnd};
use crate::segment::{
    self, FORMAT_VERSION, FileKind, SEGMENT_HEADER_LEN, Segment, WRITER_ID_STRIDE, next_writer_id,
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
    /// The newest segment, if the writer can go on appending to it.
    pub active: Option<Segment>,
    pub keydir: KeyDir,
    /// The id for the next segment created.
    pub next_segment_id: u64,
    pub report: RecoveryReport,
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
/// valid header (the header is synced before any record is appended), either because the file
/// is shorter than a header or because the header is still the zeros it was reserved with.
fn is_torn_creation(path: &Path, id: u64) -> Result<bool> {
    use std::io::Read;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
    File::open(path)
        .and_then(|f| f.take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut header))
        .context("reading the header of", path)?;
    let unwritten = header.len() < SEGMENT_HEADER_LEN || record::is_end(&header);
    Ok(unwritten && segment::check_header(&header, id, FileKind::Data).is_err())
}

/// Cuts version 1 segment `id` to `len` bytes, makes the cut durable, and opens it again.
fn truncate_segment(dir: &Path, id: u64, len: u64) -> Result<Segment> {
    let path = segment::path(dir, id);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .context("opening, to cut its torn tail,", &path)?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .context("cutting the torn tail of", &path)?;
    drop(file);
    Segment::open(dir, id, false)
}

/// How a segment's records were found.
enum Loaded {
    /// From its hint file, which lists `records` records.
    Hint { records: u64 },
    /// By walking the segment.
    Scan { records: u64, end: ScanEnd },
}

/// Opens segment `id` and applies its records to `keydir`, from its hint file if it has a
/// valid one, else by walking it. A rejected hint file is removed. The segment is mapped for
/// appending if `writable`.
fn load_segment(
    dir: &Path,
    id: u64,
    has_hint: bool,
    writable: bool,
    keydir: &mut KeyDir,
    now_ms: u64,
) -> Result<(Segment, Loaded)> {
    let seg = Segment::open(dir, id, writable)?;
    let version = seg.version();
    let bytes = seg.whole();
    if has_hint {
        let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
        let hint = fs::read(&hint_path).context("reading", &hint_path)?;
        let loaded = hint::load(&hint, id, version, bytes.len() as u64, |e| {
            let loc = Location {
                segment: id,
                offset: e.offset,
                len: e.len,
                expires_at: e.expires_at,
            };
            keydir.apply(e.key, loc, e.tombstone, now_ms);
        });
        match loaded {
            Ok(loaded) => {
                seg.set_end(loaded.end);
                return Ok((
                    seg,
                    Loaded::Hint {
                        records: loaded.records,
                    },
                ));
            }
            Err(_) => remove_files(dir, &[hint_path])?,
        }
    }
    let mut records = 0u64;
    let mut walk = Records::new(bytes, version);
    for (offset, rec) in walk.by_ref() {
        records += 1;
        let loc = Location {
            segment: id,
            offset: offset as u32,
            len: record::span(rec.encoded_len(), version) as u32,
            expires_at: rec.expires_at,
        };
        keydir.apply(rec.key, loc, rec.is_tombstone(), now_ms);
    }
    let end = walk.end().expect("walked to the end");
    let start = segment::data_start(version) as u64;
    seg.set_end(end.valid_len.max(start).min(seg.capacity()));
    Ok((seg, Loaded::Scan { records, end }))
}

/// What follows the valid records of the newest segment, if it is not the clean end: a
/// record a crash cut short, damage, or data after zeros (a write whose first page was lost).
fn torn_tail(seg: &Segment, end: &ScanEnd) -> Option<(u64, &'static str)> {
    if let Some(invalid) = end.invalid {
        return Some(invalid);
    }
    let after = &seg.whole()[end.valid_len as usize..];
    if seg.version() == 1 {
        return None;
    }
    after
        .iter()
        .position(|&b| b != 0)
        .map(|_| (end.valid_len, "data after the end of the records"))
}

/// Rebuilds the store state from the segment files in `dir` (which the caller has locked).
pub(crate) fn recover(dir: &Path, now_ms: u64) -> Result<Recovered> {
    let listing = list(dir)?;
    let mut report = RecoveryReport::default();
    // Temporary files were never complete, and nothing refers to them.
    remove_files(dir, &listing.temps)?;
    report.temp_files_removed = listing.temps.len();
    let mut ids = listing.data;
    let mut next_segment_id = ids
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
    let mut active = None;
    for (i, &id) in ids.iter().enumerate() {
        let is_newest = i + 1 == ids.len();
        // The writer goes on appending to the newest segment it created, if it has room.
        let has_hint = listing.hints.contains(&id);
        let resumable = is_newest && id % WRITER_ID_STRIDE == 0 && !has_hint;
        let (seg, loaded) = load_segment(dir, id, has_hint, resumable, &mut keydir, now_ms)?;
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
        if let Some(end) = end
            && let Some((offset, reason)) = torn_tail(&seg, &end)
        {
            // Only the newest segment the writer made can end in a write a crash cut short:
            // older ones were synced when sealed, compaction output before its rename.
            if !(is_newest && id % WRITER_ID_STRIDE == 0) {
                return Err(Error::Corrupt {
                    segment: id,
                    offset,
                    reason,
                });
            }
            report.torn_tail = Some(TornTail {
                segment: id,
                offset: end.valid_len,
                bytes: seg.whole().len() as u64 - end.valid_len,
                reason,
            });
            if seg.version() == 1 {
                drop(seg);
                let seg = truncate_segment(dir, id, end.valid_len)?;
                seg.set_end(end.valid_len);
                segments.push(seg);
                continue;
            }
            seg.zero_from(end.valid_len)?;
        }
        if is_newest && seg.version() == FORMAT_VERSION && resumable {
            // Its last writer may have died before syncing it: make what it holds durable
            // before anything is appended after it or relied on.
            seg.sync_data().context("syncing", seg.path())?;
            if seg.room() > 0 {
                next_segment_id = next_writer_id(id);
                active = Some(seg);
                continue;
            }
        }
        if is_newest && records == 0 {
            drop(seg);
            let path = segment::path(dir, id);
            fs::remove_file(&path).context("removing the empty segment", &path)?;
            segment::sync_dir(dir)?;
            report.empty_segments_removed += 1;
            continue;
        }
        seg.seal();
        seg.set_has_hint(hinted);
        segments.push(seg);
    }
    report.segments = segments.len() + usize::from(active.is_some());
    Ok(Recovered {
        segments,
        active,
        keydir,
        next_segment_id,
        report,
    })
}
