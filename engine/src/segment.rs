//! One segment file: its name, its header, creating it durably, and reading records from it.
//!
//! Sealed segments are read through a read-only memory map; the active segment (still being
//! appended to) is read with positioned reads, so a read never sees a stale mapping.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Length of a file header: magic (5), version u16, kind u8, segment id u64, crc32.
pub(crate) const SEGMENT_HEADER_LEN: usize = 20;
/// Record locations are 32-bit offsets, so no segment may be longer.
pub(crate) const MAX_SEGMENT_LEN: u64 = u32::MAX as u64;
/// Segments the writer creates have ids that are multiples of this; compaction output takes
/// ids in the gaps, so that it sorts after its inputs and before any newer write.
pub(crate) const WRITER_ID_STRIDE: u64 = 1 << 20;

/// The two kinds of files that belong to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `ID.data`: the records.
    Data,
    /// `ID.hint`: the index entries of a sealed segment, for fast open.
    Hint,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 5] {
        match self {
            FileKind::Data => b"LCSEG",
            FileKind::Hint => b"LCHNT",
        }
    }

    fn kind_byte(self) -> u8 {
        match self {
            FileKind::Data => 1,
            FileKind::Hint => 2,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            FileKind::Data => ".data",
            FileKind::Hint => ".hint",
        }
    }
}

/// The id the writer gives the first segment it creates after segment `id`.
pub(crate) fn next_writer_id(id: u64) -> u64 {
    (id / WRITER_ID_STRIDE)
        .saturating_add(1)
        .saturating_mul(WRITER_ID_STRIDE)
}

/// File name of segment `id`'s file of `kind`: the id in sixteen lowercase hex digits.
pub(crate) fn file_name(id: u64, kind: FileKind) -> String {
    format!("{id:016x}{}", kind.suffix())
}

/// Path of segment `id`'s data file inside `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id, FileKind::Data))
}

/// Path of segment `id`'s file of `kind` inside `dir`, under its temporary name (`.tmp`
/// appended) while it is being written.
pub(crate) fn temp_path(dir: &Path, id: u64, kind: FileKind) -> PathBuf {
    dir.join(format!("{}.tmp", file_name(id, kind)))
}

/// The segment id and kind of a file name, if it is one of ours; `temp` tells whether it
/// carries the temporary `.tmp` suffix.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, FileKind, bool)> {
    let (name, temp) = match name.strip_suffix(".tmp") {
        Some(n) => (n, true),
        None => (name, false),
    };
    [FileKind::Data, FileKind::Hint]
        .into_iter()
        .find_map(|kind| {
            let digits = name.strip_suffix(kind.suffix())?;
            let hex = digits.len() == 16
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            hex.then(|| u64::from_str_radix(digits, 16).ok())
                .flatten()
                .map(|id| (id, kind, temp))
        })
}

/// The header that starts segment `id`'s file of `kind`.
pub(crate) fn encode_header(id: u64, kind: FileKind) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..5].copy_from_slice(kind.magic());
    h[5..7].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[7] = kind.kind_byte();
    h[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Validates the header of segment `id`'s file of `kind` at the start of `buf`.
pub(crate) fn check_header(buf: &[u8], id: u64, kind: FileKind) -> Result<()> {
    let corrupt = |reason| Error::Corrupt {
        segment: id,
        offset: 0,
        reason,
    };
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(corrupt("file header cut short"));
    }
    if &buf[..5] != kind.magic() {
        return Err(corrupt("not a logcache file of this kind (bad magic)"));
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..16]) != crc {
        return Err(corrupt("file header checksum mismatch"));
    }
    let version = u16::from_le_bytes([buf[5], buf[6]]);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            segment: id,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if buf[7] != kind.kind_byte() {
        return Err(corrupt("file header has an unknown kind"));
    }
    if u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")) != id {
        return Err(corrupt("file header names another segment id"));
    }
    Ok(())
}

/// Deletes segment `id` for good: its data file (the deletion made durable before anything
/// else happens), then its hint file if it has one.
pub(crate) fn remove(dir: &Path, id: u64) -> Result<()> {
    let data = path(dir, id);
    std::fs::remove_file(&data).context("removing", &data)?;
    sync_dir(dir)?;
    let hint = dir.join(file_name(id, FileKind::Hint));
    match std::fs::remove_file(&hint) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &hint, e)),
    }
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("syncing the directory", dir)
}

/// An open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    id: u64,
    /// The file's path, for messages.
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    /// How many bytes of this segment the file holds (handed to the OS). Bytes past this may
    /// still sit in the writer's buffer.
    file_len: AtomicU64,
    /// Whether a valid hint file exists for this (sealed) segment.
    has_hint: AtomicBool,
}

impl Segment {
    /// Creates segment `id` in `dir`: writes its header and makes the file and its directory
    /// entry durable before anything is appended, so a synced record never sits in a file a
    /// crash can lose.
    pub fn create(dir: &Path, id: u64) -> Result<Segment> {
        let path = path(dir, id);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .context("creating", &path)?;
        let written = file
            .write_all(&encode_header(id, FileKind::Data))
            .and_then(|()| file.sync_all())
            .context("writing the header of", &path)
            .and_then(|()| sync_dir(dir));
        if let Err(e) = written {
            // Best effort: a header-only or torn file is ignored and removed by recovery anyway.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            id,
            path,
            file,
            map: None,
            file_len: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            has_hint: AtomicBool::new(false),
        })
    }

    /// Wraps a complete, immutable segment file of `len` bytes, mapping it into memory.
    pub fn sealed(id: u64, path: PathBuf, file: File, len: u64) -> Result<Segment> {
        // SAFETY: the engine never writes to a sealed segment and holds the directory lock, so
        // nothing in this process changes the mapped bytes; other processes are kept out by the
        // lock. A file truncated behind the engine's back by an outside program would fault on
        // access (SIGBUS): that is documented in docs/guarantees.md as outside what a store
        // survives.
        let map = unsafe { Mmap::map(&file) }.context("mapping", &path)?;
        if (map.len() as u64) < len {
            return Err(Error::Corrupt {
                segment: id,
                offset: map.len() as u64,
                reason: "segment shorter than its records",
            });
        }
        Ok(Segment {
            id,
            path,
            file,
            map: Some(map),
            file_len: AtomicU64::new(len),
            has_hint: AtomicBool::new(false),
        })
    }

    /// A sealed, mapped copy of this (active) segment, once all its bytes are in the file.
    pub fn seal(&self) -> Result<Segment> {
        let file = self.file.try_clone().context("reopening", &self.path)?;
        Segment::sealed(self.id, self.path.clone(), file, self.file_len())
    }

    /// Whether a valid hint file exists for this segment.
    pub fn has_hint(&self) -> bool {
        self.has_hint.load(Ordering::Acquire)
    }

    /// Records whether a valid hint file exists for this segment.
    pub fn set_has_hint(&self, has_hint: bool) {
        self.has_hint.store(has_hint, Ordering::Release);
    }

    /// Whether the segment is sealed (immutable and memory-mapped).
    pub fn is_sealed(&self) -> bool {
        self.map.is_some()
    }

    /// The segment id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the segment held by the file.
    pub fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    /// Writes `bytes` at the end of the file (only the writer calls this).
    pub fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let at = self.file_len();
        #[cfg(feature = "fault-injection")]
        if let Some((written, e)) = crate::faults::on_write(bytes.len()) {
            self.file.write_all_at(&bytes[..written], at)?;
            return Err(e);
        }
        self.file.write_all_at(bytes, at)?;
        self.file_len
            .store(at + bytes.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Cuts the file back to `len` bytes after a failed append.
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file_len.store(len, Ordering::Release);
        Ok(())
    }

    /// fdatasync of the file.
    pub fn sync_data(&self) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        crate::faults::on_sync()?;
        self.file.sync_data()
    }

    /// The `len` bytes at `offset`, which must lie within the file.
    pub fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        let out_of_range = || Error::Corrupt {
            segment: self.id,
            offset,
            reason: "record location beyond the end of the segment",
        };
        let end = offset.checked_add(len as u64).ok_or_else(out_of_range)?;
        if end > self.file_len() {
            return Err(out_of_range());
        }
        #[cfg(feature = "fault-injection")]
        crate::faults::on_read().context("reading a record of", &self.path)?;
        match &self.map {
            Some(map) => Ok(Cow::Borrowed(&map[offset as usize..end as usize])),
            None => {
                let mut buf = vec![0u8; len];
                self.file
                    .read_exact_at(&mut buf, offset)
                    .context("reading a record of", &self.path)?;
                Ok(Cow::Owned(buf))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(
            file_name(0x10_0000, FileKind::Data),
            "0000000000100000.data"
        );
        assert_eq!(file_name(7, FileKind::Hint), "0000000000000007.hint");
        for kind in [FileKind::Data, FileKind::Hint] {
            for id in [7, u64::MAX] {
                assert_eq!(
                    parse_file_name(&file_name(id, kind)),
                    Some((id, kind, false))
                );
                let temp = temp_path(Path::new(""), id, kind);
                let temp = temp.to_str().unwrap();
                assert_eq!(parse_file_name(temp), Some((id, kind, true)));
            }
        }
        for name in [
            "LOCK",
            ".data",
            "7.data",
            "000000000007.data",
            "000000000000000A.data",
            "0000000000000007.data.bak",
            "0000000000000007.datax",
            "-000000000000007.data",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn writer_ids_leave_gaps_for_compaction() {
        assert_eq!(next_writer_id(0), WRITER_ID_STRIDE);
        assert_eq!(next_writer_id(WRITER_ID_STRIDE), 2 * WRITER_ID_STRIDE);
        assert_eq!(next_writer_id(WRITER_ID_STRIDE + 5), 2 * WRITER_ID_STRIDE);
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_header(9, FileKind::Data);
        check_header(&h, 9, FileKind::Data).unwrap();
        let wrong_kind = check_header(&h, 9, FileKind::Hint);
        assert!(matches!(wrong_kind, Err(Error::Corrupt { .. })));
        let wrong_id = check_header(&h, 8, FileKind::Data);
        assert!(matches!(wrong_id, Err(Error::Corrupt { .. })));
        let short = check_header(&h[..10], 9, FileKind::Data);
        assert!(matches!(short, Err(Error::Corrupt { .. })));
        let mut bad = h;
        bad[0] = b'X';
        let bad_magic = check_header(&bad, 9, FileKind::Data);
        assert!(matches!(bad_magic, Err(Error::Corrupt { .. })));
        let mut newer = h;
        newer[5..7].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32fast::hash(&newer[..16]);
        newer[16..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&newer, 9, FileKind::Data),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn active_and_sealed_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 1).unwrap();
        seg.append(b"hello world").unwrap();
        let at = SEGMENT_HEADER_LEN as u64;
        assert_eq!(&*seg.read(at, 5).unwrap(), b"hello");
        assert!(matches!(seg.read(at, 100), Err(Error::Corrupt { .. })));
        let sealed = seg.seal().unwrap();
        assert_eq!(&*sealed.read(at + 6, 5).unwrap(), b"world");
        assert!(matches!(
            sealed.read(u64::MAX, 2),
            Err(Error::Corrupt { .. })
        ));
        assert!(
            Segment::create(dir.path(), 1).is_err(),
            "ids are never reused"
        );
    }
}
