//! The engine's error type.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the engine. No operation panics on bad input: it returns one
/// of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error from the operating system, with what the engine was doing and on which
    /// file.
    #[error("I/O error while {context} {}: {source}", path.display())]
    Io {
        /// What the engine was doing.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full. Nothing already stored is lost; writes may resume once
    /// space is freed.
    #[error("no space left on the device while {context} {}", path.display())]
    StorageFull {
        /// What the engine was doing.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// The directory is open in a store that keeps the others out (`Options::exclusive`), or
    /// this store asked to be exclusive while others have it open; or an offline tool
    /// (`verify`) found it open. In this process or another one.
    #[error("store directory {0} is locked by another open store")]
    Locked(PathBuf),
    /// The store was opened read-only ([`Options::read_only`](crate::Options::read_only), or
    /// its directory cannot be written to): writes, compaction and syncs of writes are refused.
    #[error("store directory {0} is open read-only")]
    ReadOnly(PathBuf),
    /// The path exists but is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A record or header failed validation (bad checksum, impossible length, unknown flags)
    /// somewhere other than the torn tail of the newest segment.
    #[error("corrupt data in segment file {} at offset {offset}: {reason}", data_file(*segment))]
    Corrupt {
        /// Id of the segment (its file is named by the id in sixteen hex digits, `.data`).
        segment: u64,
        /// Byte offset of the bad record (or header) in that file.
        offset: u64,
        /// What failed.
        reason: &'static str,
    },
    /// A segment file was written by a newer (or unknown) on-disk format version.
    #[error("segment file {} has format version {found}; this build reads version {supported}", data_file(*segment))]
    UnsupportedVersion {
        /// Id of the segment file.
        segment: u64,
        /// The version found in its header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// An index file is damaged, missing, of another format version, or cannot be trusted.
    /// Opening a store rebuilds its index from the segments instead of failing; this is
    /// returned only where that may not happen (a read-only store, or
    /// `Options::rebuild_index` off), and nothing was changed.
    #[error("index file {} cannot be used: {reason}", path.display())]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The index holds as many keys as its format allows (about 250 million).
    #[error("the index is full: it holds as many keys as its format allows")]
    IndexFull,
    /// A key is longer than `Options::max_key_size`.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the key.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A value is longer than `Options::max_value_size`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the value.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A write batch encodes to more bytes than one segment can address.
    #[error("write batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The options are inconsistent or out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Compaction found no free segment id below the active segment (after about a million
    /// compactions without a new segment from the writer). Writing more, or reopening, frees
    /// ids again.
    #[error("no segment id left for compaction output")]
    SegmentIdsExhausted,
    /// The store is closing; a compaction in progress stopped without changing anything it
    /// had not finished.
    #[error("the store is closing")]
    Closed,
    /// An earlier write or fsync failed in a way that leaves the on-disk state uncertain, so the
    /// store refuses further writes. Reads still work; reopen the store to recover.
    #[error("store refuses writes after an earlier failure: {0}")]
    WritesDisabled(String),
}

/// The name of segment `id`'s data file, for messages.
fn data_file(id: u64) -> String {
    crate::segment::file_name(id, crate::segment::FileKind::Data)
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error on `path` with context, mapping "disk full" to
    /// [`Error::StorageFull`].
    pub(crate) fn io(context: &'static str, path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::StorageFull
            || source.kind() == io::ErrorKind::QuotaExceeded
        {
            Error::StorageFull { context, path }
        } else {
            Error::Io {
                context,
                path,
                source,
            }
        }
    }
}

/// Adds context to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Converts the error with [`Error::io`].
    fn context(self, context: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(context, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_maps_to_storage_full() {
        let at = Path::new("/store/0000000000100000.data");
        let e = Error::io("appending", at, io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(
            e,
            Error::StorageFull {
                context: "appending",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "no space left on the device while appending /store/0000000000100000.data"
        );
        let e = Error::io(
            "appending",
            at,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, Error::Io { .. }));
        assert!(
            e.to_string()
                .starts_with("I/O error while appending /store/0000000000100000.data: "),
            "{e}"
        );
    }

    #[test]
    fn messages_name_the_place() {
        let e = Error::Corrupt {
            segment: 3,
            offset: 120,
            reason: "checksum mismatch",
        };
        assert_eq!(
            e.to_string(),
            "corrupt data in segment file 0000000000000003.data at offset 120: checksum mismatch"
        );
    }
}
