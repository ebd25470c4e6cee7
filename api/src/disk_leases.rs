//! Compute leases on a disk store shared by several processes: a byte-range lock on
//! `LOCK.leases` in the store's directory, one byte per slot, a key's slot being a hash of it.
//!
//! The locks are Linux open-file-description locks (`F_OFD_SETLK`): held by this open file,
//! not by the process (so closing another descriptor of the file does not drop them, as it
//! would a classic `fcntl` lock), and released by the kernel when the process dies, so a
//! holder killed mid-computation frees its lease at once. Keys that share a slot share a
//! lease, which only makes one wait for the other's computation.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fingerprint::stable_hash;

/// The lease file's name in the store's directory.
pub(crate) const LEASE_FILE: &str = "LOCK.leases";
/// How many slots keys hash to (bytes of the lock file's range; the file stays empty).
const SLOTS: u64 = 1 << 20;

/// The lease file of one open store.
pub(crate) struct Leases {
    path: PathBuf,
    file: File,
}

impl Leases {
    /// Opens (creating it if needed) the lease file in `dir`.
    pub fn open(dir: &Path) -> Result<Leases> {
        let path = dir.join(LEASE_FILE);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| lease_error(&path, &e))?;
        Ok(Leases { path, file })
    }

    /// Takes the lease of `key` if no other process holds it; whether it did.
    pub fn try_take(&self, key: &[u8]) -> Result<bool> {
        match self.set_lock(key, libc::F_WRLCK as libc::c_short) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(e) => Err(lease_error(&self.path, &e)),
        }
    }

    /// Gives the lease of `key` back.
    pub fn release(&self, key: &[u8]) -> Result<()> {
        self.set_lock(key, libc::F_UNLCK as libc::c_short)
            .map_err(|e| lease_error(&self.path, &e))
    }

    fn set_lock(&self, key: &[u8], kind: libc::c_short) -> std::io::Result<()> {
        let slot = stable_hash(key) % SLOTS;
        // SAFETY: `flock` is a plain C struct, valid when zeroed; the fields set below are
        // all that F_OFD_SETLK reads (l_pid must be 0).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = slot as libc::off_t;
        lock.l_len = 1;
        // SAFETY: the descriptor is this open file's, alive for the call; `lock` is a valid
        // `flock` the call only reads.
        let code = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if code == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn lease_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Backend {
        backend: "disk",
        message: format!("lease file {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_excludes_other_opens_until_released_or_closed() {
        let dir = tempfile::tempdir().unwrap();
        let a = Leases::open(dir.path()).unwrap();
        let b = Leases::open(dir.path()).unwrap();
        assert!(a.try_take(b"k").unwrap());
        assert!(!b.try_take(b"k").unwrap(), "held by another open file");
        assert!(b.try_take(b"other key").unwrap());
        a.release(b"k").unwrap();
        assert!(b.try_take(b"k").unwrap());
        drop(b); // as when a process dies: its leases go with it
        assert!(a.try_take(b"k").unwrap());
        assert!(a.try_take(b"other key").unwrap());
    }
}
