//! Upgrading segments of format version 1 (records not aligned, which the index's slots need)
//! to version 2, before the index is built.
//!
//! Version 1 segments are always a prefix of the log: every segment written since has a
//! higher id. The upgrade replays that prefix into an in-memory map (as version 1 opened
//! stores), writes every live value into new version 2 segments whose ids lie below every
//! existing segment (`1..`, below the first writer id), and only then deletes the version 1
//! files, oldest first. Nothing in the outputs needs a tombstone: no segment is older.
//!
//! A crash in between leaves outputs holding the prefix's final state, followed by a suffix of
//! the version 1 segments; replaying that suffix on top changes nothing (last write wins), and
//! the next open upgrades what is left into outputs after the first ones.

use crate::error::{Error, IoContext, Result};
use crate::hint;
use crate::output::Output;
use crate::record;
use crate::scan::Records;
use crate::segment::{self, FileKind, MAX_SEGMENT_LEN, Segment, WRITER_ID_STRIDE};
use crate::vfs::Dir;

/// Where a key's newest version 1 record lies.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u32,
    expires_at: u64,
}

/// The newest record of every key in the version 1 prefix.
type KeyDir = hashbrown::HashMap<Box<[u8]>, Location>;

/// Applies a record: a tombstone or an expired value removes its key, anything else becomes
/// its value.
fn apply(keydir: &mut KeyDir, key: &[u8], loc: Location, tombstone: bool, now_ms: u64) {
    if tombstone || (loc.expires_at != 0 && loc.expires_at <= now_ms) {
        keydir.remove(key);
    } else {
        keydir.insert(key.into(), loc);
    }
}

/// Version 2 outputs are cut at this size.
const OUTPUT_LEN: u64 = 64 << 20;

/// The version of segment `id`'s header, or `None` if it has no valid header.
fn version_of(dir: &Dir, id: u64) -> Option<u16> {
    Segment::open(dir, id, false).ok().map(|s| s.version())
}

/// Upgrades the version 1 segments among `ids` (ascending); returns how many it upgraded.
pub(crate) fn upgrade(
    dir: &Dir,
    ids: &[u64],
    hints: &std::collections::BTreeSet<u64>,
    now_ms: u64,
) -> Result<usize> {
    let old: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| version_of(dir, id) == Some(1))
        .collect();
    if old.is_empty() {
        return Ok(0);
    }
    let mut keydir = KeyDir::default();
    let mut segments = Vec::with_capacity(old.len());
    for &id in &old {
        let seg = Segment::open(dir, id, false)?;
        let newest = ids.last() == Some(&id);
        replay(dir, &seg, hints.contains(&id), newest, &mut keydir, now_ms)?;
        segments.push(seg);
    }
    // Outputs of an earlier, interrupted upgrade came first; these follow them.
    let mut next_id = ids
        .iter()
        .copied()
        .filter(|&id| id < WRITER_ID_STRIDE)
        .max()
        .map_or(1, |id| id + 1);
    let by_id: std::collections::HashMap<u64, &Segment> =
        segments.iter().map(|s| (s.id(), s)).collect();
    let mut entries: Vec<(Box<[u8]>, Location)> = keydir.into_iter().collect();
    // Copy in log order, so the outputs keep the age order that eviction relies on.
    entries.sort_unstable_by_key(|(_, loc)| (loc.segment, loc.offset));
    let mut out: Option<Output> = None;
    for (key, loc) in &entries {
        if loc.expires_at != 0 && loc.expires_at <= now_ms {
            continue;
        }
        let seg = by_id[&loc.segment];
        let bytes = seg.whole().get(loc.offset as usize..).unwrap_or_default();
        let rec = record::decode(bytes).map_err(|e| Error::Corrupt {
            segment: loc.segment,
            offset: u64::from(loc.offset),
            reason: e.reason(),
        })?;
        debug_assert_eq!(rec.key, &key[..]);
        let needed = record::padded_len(rec.key.len(), rec.value.len()) as u64;
        if out
            .as_ref()
            .is_some_and(|o| o.len() + needed > OUTPUT_LEN.min(MAX_SEGMENT_LEN))
        {
            out.take().expect("checked").finish(dir)?;
        }
        let output = match &mut out {
            Some(o) => o,
            None => {
                if next_id >= WRITER_ID_STRIDE {
                    return Err(Error::SegmentIdsExhausted);
                }
                next_id += 1;
                out.insert(Output::create(dir, next_id - 1)?)
            }
        };
        output.push(0, rec.expires_at, rec.key, rec.value)?;
    }
    if let Some(o) = out {
        o.finish(dir)?;
    }
    drop(by_id);
    drop(segments);
    for id in old.iter().copied() {
        let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
        if dir.exists(&hint_path) {
            dir.vfs()
                .remove_file(&hint_path)
                .context("removing the old hint file", &hint_path)?;
        }
        segment::remove(dir, id)?;
    }
    Ok(old.len())
}

/// Applies version 1 segment `seg`'s records to `keydir`, from its hint if valid. Damage is
/// [`Error::Corrupt`], except at the end of the newest segment (`newest`), where it is a
/// write a crash cut short and ends the records.
fn replay(
    dir: &Dir,
    seg: &Segment,
    has_hint: bool,
    newest: bool,
    keydir: &mut KeyDir,
    now_ms: u64,
) -> Result<()> {
    let id = seg.id();
    if has_hint {
        let hint_path = dir.join(segment::file_name(id, FileKind::Hint));
        let bytes = dir.read(&hint_path).context("reading", &hint_path)?;
        let mut applied = Vec::new();
        if hint::load(&bytes, id, seg.version(), seg.capacity(), |e| {
            applied.push((e.key.to_vec(), e.offset, e.expires_at, e.tombstone))
        })
        .is_ok()
        {
            for (key, offset, expires_at, tombstone) in applied {
                let loc = Location {
                    segment: id,
                    offset,
                    expires_at,
                };
                apply(keydir, &key, loc, tombstone, now_ms);
            }
            return Ok(());
        }
    }
    seg.read_ahead(u64::MAX);
    let mut walk = Records::new(seg.whole(), seg.version());
    for (offset, rec) in walk.by_ref() {
        let loc = Location {
            segment: id,
            offset: offset as u32,
            expires_at: rec.expires_at,
        };
        apply(keydir, rec.key, loc, rec.is_tombstone(), now_ms);
    }
    if let Some((offset, reason)) = walk.end().and_then(|end| end.invalid)
        && !(newest && id.is_multiple_of(WRITER_ID_STRIDE))
    {
        return Err(Error::Corrupt {
            segment: id,
            offset,
            reason,
        });
    }
    Ok(())
}
