//! One segment file: its name, its header, creating it durably, and reading records from it.
//!
//! Sealed segments are read through a read-only memory map; the active segment (still being
//! appended to) is read with positioned reads, so a read never sees a stale mapping.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

/// Magic bytes at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 5] = b"LCSEG";
/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// `kind` byte of a data segment.
const KIND_DATA: u8 = 1;
/// Length of the segment header: magic, version u16, kind u8, segment id u64, crc32.
pub(crate) const SEGMENT_HEADER_LEN: usize = 20;
/// Record locations are 32-bit offsets, so no segment may be longer.
pub(crate) const MAX_SEGMENT_LEN: u64 = u32::MAX as u64;
const SEGMENT_SUFFIX: &str = ".data";

/// File name of segment `id`: twelve or more decimal digits and `.data`.
pub(crate) fn file_name(id: u64) -> String {
    format!("{id:012}{SEGMENT_SUFFIX}")
}

/// Path of segment `id` inside `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// The segment id of a file name, if it is one of ours.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header that starts segment `id`.
pub(crate) fn encode_header(id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..5].copy_from_slice(SEGMENT_MAGIC);
    h[5..7].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[7] = KIND_DATA;
    h[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Validates the header of segment `id` at the start of `buf`.
pub(crate) fn check_header(buf: &[u8], id: u64) -> Result<()> {
    let corrupt = |reason| Error::Corrupt {
        segment: id,
        offset: 0,
        reason,
    };
    if buf.len() < SEGMENT_HEADER_LEN {
        return Err(corrupt("segment header cut short"));
    }
    if &buf[..5] != SEGMENT_MAGIC {
        return Err(corrupt("not a logcache segment (bad magic)"));
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..16]) != crc {
        return Err(corrupt("segment header checksum mismatch"));
    }
    let version = u16::from_le_bytes([buf[5], buf[6]]);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            segment: id,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if buf[7] != KIND_DATA {
        return Err(corrupt("segment header has an unknown kind"));
    }
    if u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")) != id {
        return Err(corrupt("segment header names another segment id"));
    }
    Ok(())
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("syncing the store directory")
}

/// An open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    id: u64,
    file: File,
    map: Option<Mmap>,
    /// How many bytes of this segment the file holds (handed to the OS). Bytes past this may
    /// still sit in the writer's buffer.
    file_len: AtomicU64,
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
            .context("creating a segment file")?;
        let written = file
            .write_all(&encode_header(id))
            .and_then(|()| file.sync_all())
            .context("writing a segment header")
            .and_then(|()| sync_dir(dir));
        if let Err(e) = written {
            // Best effort: a header-only or torn file is ignored and removed by recovery anyway.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            id,
            file,
            map: None,
            file_len: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        })
    }

    /// Wraps a complete, immutable segment file of `len` bytes, mapping it into memory.
    pub fn sealed(id: u64, file: File, len: u64) -> Result<Segment> {
        // SAFETY: the engine never writes to a sealed segment and holds the directory lock, so
        // nothing in this process changes the mapped bytes; other processes are kept out by the
        // lock. A file truncated behind the engine's back by an outside program would fault on
        // access (SIGBUS): that is documented in docs/guarantees.md as outside what a store
        // survives.
        let map = unsafe { Mmap::map(&file) }.context("mapping a segment")?;
        if (map.len() as u64) < len {
            return Err(Error::Corrupt {
                segment: id,
                offset: map.len() as u64,
                reason: "segment shorter than its records",
            });
        }
        Ok(Segment {
            id,
            file,
            map: Some(map),
            file_len: AtomicU64::new(len),
        })
    }

    /// A sealed, mapped copy of this (active) segment, once all its bytes are in the file.
    pub fn seal(&self) -> Result<Segment> {
        let file = self.file.try_clone().context("reopening a segment")?;
        Segment::sealed(self.id, file, self.file_len())
    }

    /// The segment id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes of the segment held by the file.
    pub fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    /// Writes `bytes` at the end of the file (only the writer calls this).
    pub fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let at = self.file_len();
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
        match &self.map {
            Some(map) => Ok(Cow::Borrowed(&map[offset as usize..end as usize])),
            None => {
                let mut buf = vec![0u8; len];
                self.file
                    .read_exact_at(&mut buf, offset)
                    .context("reading a record")?;
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
        assert_eq!(file_name(7), "000000000007.data");
        assert_eq!(parse_file_name(&file_name(7)), Some(7));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for name in [
            "LOCK",
            ".data",
            "x1.data",
            "000000000007.hint",
            "1.data.tmp",
            "-1.data",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_header(9);
        check_header(&h, 9).unwrap();
        assert!(matches!(check_header(&h, 8), Err(Error::Corrupt { .. })));
        assert!(matches!(
            check_header(&h[..10], 9),
            Err(Error::Corrupt { .. })
        ));
        let mut bad = h;
        bad[0] = b'X';
        assert!(matches!(check_header(&bad, 9), Err(Error::Corrupt { .. })));
        let mut newer = h;
        newer[5..7].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32fast::hash(&newer[..16]);
        newer[16..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&newer, 9),
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
