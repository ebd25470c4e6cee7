//! Rewriting a damaged store without its damage (`logcache repair`, as `redis-check-aof --fix`
//! and SQLite's `.recover` do for theirs): rebuild the index from the segments, skipping
//! what is damaged, then compact every segment, so that no file keeps damaged bytes.

use std::path::Path;

use crate::compaction::CompactionStats;
use crate::error::{Error, Result};
use crate::index::file::POINTER_FILE;
use crate::lock::DirLock;
use crate::options::Options;
use crate::recovery::{DamagedRange, TornTail};
use crate::segment;
use crate::store::Store;
use crate::verify::VerifyReport;
use crate::vfs::Dir;

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairReport {
    /// Live keys before, as the index had them (`None` if it could not be used).
    pub keys_before: Option<usize>,
    /// Live keys after.
    pub keys_after: usize,
    /// Damaged bytes the rebuild skipped; the entries there, and those of the record (or
    /// batch) right after, are gone.
    pub damaged: Vec<DamagedRange>,
    /// The torn tail the rebuild cut off the newest segment, if there was one.
    pub torn_tail: Option<TornTail>,
    /// The compaction that rewrote every segment with dead or damaged bytes.
    pub compaction: CompactionStats,
    /// A check of the files afterwards: clean unless something could not be repaired.
    pub after: VerifyReport,
}

/// Repairs the store in `dir`, which no process may have open ([`Error::Locked`] otherwise):
/// rebuilds its index from the segments, skipping damaged records (what cannot be a torn
/// write, see docs/guarantees.md), then compacts every segment, the newest included, so that
/// the files hold no damaged bytes any more. `options` are used to open the store (made
/// exclusive and not strict). Entries whose records were damaged are lost; every other entry
/// is kept.
pub fn repair(dir: impl AsRef<Path>, options: Options) -> Result<RepairReport> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let options = options.exclusive(true).strict(false).read_only(false);
    let dir = &Dir::new(options.vfs.clone(), dir.to_path_buf());
    let keys_before = {
        let _lock = DirLock::acquire(dir)?;
        let before = Store::open(dir, options.clone().read_only(true))
            .ok()
            .map(|store| store.len());
        // Without its pointer the index is rebuilt from the segments on the next open. A
        // crash from here on leaves a store that rebuilds it likewise.
        let pointer = dir.join(POINTER_FILE);
        match dir.vfs().remove_file(&pointer) {
            Ok(()) => segment::sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &pointer, e)),
        }
        before
    };
    let store = Store::open(dir, options)?;
    let recovered = store.recovery_report().clone();
    let compaction = store.compact()?;
    let after = store.verify()?;
    let keys_after = store.len();
    store.close()?;
    Ok(RepairReport {
        keys_before,
        keys_after,
        damaged: recovered.damaged,
        torn_tail: recovered.torn_tail,
        compaction,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_drops_the_damage_and_keeps_every_other_entry() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().max_segment_size(4096);
        {
            let store = Store::open(dir.path(), opts.clone()).unwrap();
            for i in 0..200u32 {
                store.put(&i.to_be_bytes(), &[i as u8; 50]).unwrap();
            }
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "data"))
            .collect();
        files.sort();
        assert!(files.len() > 2);
        let mut bytes = std::fs::read(&files[1]).unwrap();
        bytes[200] ^= 0x20;
        std::fs::write(&files[1], &bytes).unwrap();
        assert!(!crate::verify(dir.path()).unwrap().is_clean());

        let report = repair(dir.path(), opts.clone()).unwrap();
        assert_eq!(report.keys_before, Some(200));
        assert_eq!(report.damaged.len(), 1, "{report:?}");
        assert!(
            report.keys_after >= 198 && report.keys_after < 200,
            "{report:?}"
        );
        assert!(report.after.is_clean(), "{:?}", report.after);
        assert!(crate::verify(dir.path()).unwrap().is_clean());

        let store = Store::open(dir.path(), opts).unwrap();
        assert_eq!(store.len(), report.keys_after);
        for i in 0..200u32 {
            if let Some(v) = store.get(&i.to_be_bytes()).unwrap() {
                assert_eq!(v, vec![i as u8; 50], "never a wrong value");
            }
        }
        drop(store);
        let _open = Store::open(dir.path(), Options::default()).unwrap();
        assert!(matches!(
            repair(dir.path(), Options::default()),
            Err(Error::Locked(_))
        ));
    }
}
