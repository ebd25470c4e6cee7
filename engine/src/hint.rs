//! Hint files: the index entries of one sealed segment, so that opening a store rebuilds the
//! index without reading every value.
//!
//! ```text
//! header (20 bytes, magic LCHNT, kind 2, the segment's id)
//! entry*  : flags u8 | expires_at u64 | offset u32 | len u32 | key_len u32 | key
//! footer  : entry count u64 | end of the segment's records u64 | crc32 of every byte before it
//! ```
//! A hint is used only if it is whole, its CRC matches, it has its segment's format version,
//! every entry lies inside the segment's records (at a multiple of 8 from format version 2
//! on, as records are laid out), and the records end inside the file (for format version 1:
//! exactly where the file ends). Otherwise open walks the segment instead.

use crate::error::{Error, IoContext, Result};
use crate::record::{self, FLAG_TOMBSTONE, MAX_KEY_LEN, RECORD_HEADER_LEN};
use crate::scan::Records;
use crate::segment::{self, FileKind, SEGMENT_HEADER_LEN, Segment};
use crate::vfs::Dir;

const ENTRY_HEADER_LEN: usize = 21;
const FOOTER_LEN: usize = 20;

/// One record of a segment, as a hint lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintEntry<'a> {
    pub tombstone: bool,
    pub expires_at: u64,
    pub offset: u32,
    pub len: u32,
    pub key: &'a [u8],
}

/// Builds a hint file in memory.
#[derive(Debug)]
pub(crate) struct HintBuilder {
    buf: Vec<u8>,
    count: u64,
}

impl HintBuilder {
    /// An empty hint for segment `id`, of the segment's format `version`.
    pub fn new(id: u64, version: u16) -> HintBuilder {
        HintBuilder {
            buf: segment::encode_header_of_version(id, FileKind::Hint, version).to_vec(),
            count: 0,
        }
    }

    /// Adds the next record of the segment.
    pub fn push(&mut self, e: &HintEntry<'_>) {
        self.buf.push(if e.tombstone { FLAG_TOMBSTONE } else { 0 });
        self.buf.extend_from_slice(&e.expires_at.to_le_bytes());
        self.buf.extend_from_slice(&e.offset.to_le_bytes());
        self.buf.extend_from_slice(&e.len.to_le_bytes());
        self.buf
            .extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(e.key);
        self.count += 1;
    }

    /// The finished file contents for a segment whose records end at `end`.
    pub fn finish(mut self, end: u64) -> Vec<u8> {
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf.extend_from_slice(&end.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Writes `contents` as segment `id`'s hint file, atomically and durably: under a temporary
/// name, fsynced, renamed, directory fsynced.
pub(crate) fn write(dir: &Dir, id: u64, contents: &[u8]) -> Result<()> {
    let temp = segment::temp_path(dir, id, FileKind::Hint);
    let written = dir
        .write_synced(&temp, contents)
        .and_then(|()| {
            let path = dir.join(segment::file_name(id, FileKind::Hint));
            dir.vfs().rename(&temp, &path)
        })
        .context("writing a hint file", &temp);
    if written.is_err() {
        let _ = dir.vfs().remove_file(&temp);
    }
    written?;
    segment::sync_dir(dir)
}

/// Writes the hint file of a sealed segment by walking its records.
pub(crate) fn write_for_segment(dir: &Dir, seg: &Segment) -> Result<()> {
    seg.read_ahead(seg.end());
    let bytes = seg.read(0, seg.end() as usize)?;
    let mut hint = HintBuilder::new(seg.id(), seg.version());
    // The segment is sealed, so synced whole: damage is skipped (the rebuild that uses the
    // hint would skip it too) and its records left out.
    let mut walk = Records::skipping_damage(bytes, seg.version(), u64::MAX);
    for (offset, rec) in walk.by_ref() {
        hint.push(&HintEntry {
            tombstone: rec.is_tombstone(),
            expires_at: rec.expires_at,
            offset: offset as u32,
            len: record::span(rec.encoded_len(), seg.version()) as u32,
            key: rec.key,
        });
    }
    if let Some((offset, reason)) = walk.end().and_then(|end| end.invalid) {
        return Err(Error::Corrupt {
            segment: seg.id(),
            offset,
            reason,
        });
    }
    write(dir, seg.id(), &hint.finish(bytes.len() as u64))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the entry at `at`; `None` if it is malformed or outside records ending at `end`.
fn entry_at(bytes: &[u8], at: usize, end: u64) -> Option<(HintEntry<'_>, usize)> {
    let head = bytes.get(at..at.checked_add(ENTRY_HEADER_LEN)?)?;
    let flags = head[0];
    let key_len = u32_at(head, 17) as usize;
    if flags & !FLAG_TOMBSTONE != 0 || key_len > MAX_KEY_LEN {
        return None;
    }
    let key_start = at + ENTRY_HEADER_LEN;
    let key = bytes.get(key_start..key_start + key_len)?;
    let e = HintEntry {
        tombstone: flags & FLAG_TOMBSTONE != 0,
        expires_at: u64_at(head, 1),
        offset: u32_at(head, 9),
        len: u32_at(head, 13),
        key,
    };
    let min_len = RECORD_HEADER_LEN + key_len;
    let fits = u64::from(e.offset) >= SEGMENT_HEADER_LEN as u64
        && u64::from(e.offset) + u64::from(e.len) <= end
        && (e.len as usize) >= min_len
        && (!e.tombstone || e.len as usize <= record::padded_len(key_len, 0));
    fits.then_some((e, key_start + key_len))
}

/// What a valid hint says of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// Entries visited.
    pub records: u64,
    /// Where the segment's records end.
    pub end: u64,
}

/// Validates the hint file `bytes` of segment `id` (of format `version`, its file `file_len`
/// bytes long), then visits its entries in order. Nothing is visited unless the whole hint is
/// valid; the error says why it was not.
pub(crate) fn load<'a>(
    bytes: &'a [u8],
    id: u64,
    version: u16,
    file_len: u64,
    mut visit: impl FnMut(HintEntry<'a>),
) -> Result<Loaded, &'static str> {
    if bytes.len() < SEGMENT_HEADER_LEN + FOOTER_LEN {
        return Err("hint cut short");
    }
    let hint_version =
        segment::check_header(bytes, id, FileKind::Hint).map_err(|_| "bad hint header")?;
    if hint_version != version {
        return Err("hint of another format version than its segment");
    }
    let footer = bytes.len() - FOOTER_LEN;
    if crc32fast::hash(&bytes[..footer + 16]) != u32_at(bytes, footer + 16) {
        return Err("hint checksum mismatch");
    }
    let end = u64_at(bytes, footer + 8);
    let fits = if version == 1 {
        end == file_len
    } else {
        end <= file_len && end >= segment::data_start(version) as u64
    };
    if !fits {
        return Err("segment length differs from the hint's");
    }
    let count = u64_at(bytes, footer);
    let entries = &bytes[..footer];
    let mut at = SEGMENT_HEADER_LEN;
    let mut seen = 0u64;
    let mut prev_end = SEGMENT_HEADER_LEN as u64;
    while at < footer {
        let (e, next) = entry_at(entries, at, end).ok_or("malformed hint entry")?;
        if u64::from(e.offset) < prev_end {
            return Err("hint entries overlap");
        }
        // Records of version 2 start at multiples of 8, which the index's slots rely on.
        if version >= 2 && !(e.offset as usize).is_multiple_of(record::ALIGN) {
            return Err("hint entry not aligned");
        }
        prev_end = u64::from(e.offset) + u64::from(e.len);
        at = next;
        seen += 1;
    }
    if seen != count {
        return Err("hint entry count mismatch");
    }
    let mut at = SEGMENT_HEADER_LEN;
    while at < footer {
        let (e, next) = entry_at(entries, at, end).expect("validated above");
        visit(e);
        at = next;
    }
    Ok(Loaded {
        records: count,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<HintEntry<'static>>) {
        let entries = vec![
            HintEntry {
                tombstone: false,
                expires_at: 0,
                offset: 24,
                len: 32,
                key: b"alpha",
            },
            HintEntry {
                tombstone: true,
                expires_at: 0,
                offset: 56,
                len: 25,
                key: b"beta",
            },
            HintEntry {
                tombstone: false,
                expires_at: 99,
                offset: 88,
                len: 40,
                key: b"",
            },
        ];
        let mut b = HintBuilder::new(3, 2);
        for e in &entries {
            b.push(e);
        }
        (b.finish(128), entries)
    }

    fn loaded(bytes: &[u8], segment_len: u64) -> Result<Vec<HintEntry<'_>>, &'static str> {
        let mut out = Vec::new();
        load(bytes, 3, 2, segment_len, |e| out.push(e)).map(|_| out)
    }

    #[test]
    fn round_trip() {
        let (bytes, entries) = sample();
        assert_eq!(loaded(&bytes, 128).unwrap(), entries);
    }

    #[test]
    fn a_hint_for_another_segment_length_is_refused() {
        let (bytes, _) = sample();
        assert_eq!(
            loaded(&bytes, 127),
            Err("segment length differs from the hint's"),
            "records that would end past the file"
        );
        assert!(
            loaded(&bytes, 4096).is_ok(),
            "a version 2 file is longer than its records"
        );
        assert_eq!(
            load(&bytes, 3, 1, 128, |_| {}),
            Err("hint of another format version than its segment")
        );
    }

    #[test]
    fn an_entry_off_the_record_grid_is_refused() {
        let mut b = HintBuilder::new(3, 2);
        b.push(&HintEntry {
            tombstone: false,
            expires_at: 0,
            offset: 28,
            len: 32,
            key: b"alpha",
        });
        assert_eq!(loaded(&b.finish(64), 64), Err("hint entry not aligned"));
    }

    #[test]
    fn every_cut_and_every_flip_is_refused_without_visiting() {
        let (bytes, _) = sample();
        for cut in 0..bytes.len() {
            let mut visited = 0;
            assert!(
                load(&bytes[..cut], 3, 2, 128, |_| visited += 1).is_err(),
                "cut {cut}"
            );
            assert_eq!(visited, 0);
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            let mut visited = 0;
            assert!(
                load(&bad, 3, 2, 128, |_| visited += 1).is_err(),
                "flip at {at}"
            );
            assert_eq!(visited, 0);
        }
    }

    #[test]
    fn entries_outside_the_segment_are_refused_even_with_a_valid_checksum() {
        let mut b = HintBuilder::new(3, 2);
        b.push(&HintEntry {
            tombstone: false,
            expires_at: 0,
            offset: 100,
            len: 30,
            key: b"k",
        });
        assert_eq!(loaded(&b.finish(128), 128), Err("malformed hint entry"));
        let mut b = HintBuilder::new(3, 2);
        b.push(&HintEntry {
            tombstone: false,
            expires_at: 0,
            offset: 20,
            len: 5,
            key: b"k",
        });
        assert_eq!(loaded(&b.finish(128), 128), Err("malformed hint entry"));
    }
}
