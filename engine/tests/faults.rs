//! A failing disk, simulated through the store's file system ([`logcache_engine::vfs::Faulty`]):
//! a disk full when a segment is reserved, a failed fsync and failed reads give typed errors,
//! never a panic or a wrong value, and lose nothing that was acknowledged. The faults belong
//! to one store's options, so these tests run in parallel with every other.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{contents, manual};
use logcache_engine::vfs::{self, Faults, Faulty};
use logcache_engine::{Durability, Error, Options, Store};

/// `options` on a file system that fails where the returned switches say.
fn faulty(options: Options) -> (Arc<Faults>, Options) {
    let faults = Arc::new(Faults::default());
    let vfs = Arc::new(Faulty::new(vfs::real(), Arc::clone(&faults)));
    (faults, options.vfs(vfs))
}

#[test]
fn a_segment_that_cannot_be_reserved_leaves_nothing_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, opts) = faulty(
        manual()
            .durability(Durability::Flush)
            .max_segment_size(1024),
    );
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..10u8 {
        store.put(&[i], &[i; 50]).unwrap();
        model.insert(vec![i], vec![i; 50]);
    }
    let files_before = common::files_with_extension(dir.path(), "data");
    // The next write needs a new segment, and the disk is full when it is reserved.
    faults.fail_next_allocation();
    let err = store.put(b"no room", &[9; 900]).unwrap_err();
    assert!(matches!(err, Error::StorageFull { .. }), "{err}");
    assert!(
        err.to_string().contains("0000000000200000.data"),
        "the message names the file: {err}"
    );
    assert_eq!(
        store.get(b"no room").unwrap(),
        None,
        "the failed write is not visible"
    );
    assert_eq!(
        common::files_with_extension(dir.path(), "data"),
        files_before,
        "no half-made segment is left"
    );
    store.put(b"after", &[1; 900]).unwrap();
    model.insert(b"after".to_vec(), vec![1; 900]);
    assert_eq!(contents(&store), model);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(
        store.recovery_report().torn_tail,
        None,
        "no partial record on disk"
    );
    assert_eq!(contents(&store), model);
}

#[test]
fn a_failed_fsync_refuses_further_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, opts) = faulty(manual().durability(Durability::Sync));
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.put(b"before", b"synced").unwrap();
    faults.fail_next_sync();
    let err = store.put(b"during", b"unsure").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // After a failed fsync nothing written since the last good one can be trusted.
    assert!(matches!(
        store.put(b"later", b"x"),
        Err(Error::WritesDisabled(_))
    ));
    assert!(matches!(
        store.delete(b"before"),
        Err(Error::WritesDisabled(_))
    ));
    assert!(matches!(store.sync(), Err(Error::WritesDisabled(_))));
    assert_eq!(
        store.get(b"before").unwrap(),
        Some(b"synced".to_vec()),
        "reads go on"
    );
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.get(b"before").unwrap(), Some(b"synced".to_vec()));
    assert_eq!(store.get(b"later").unwrap(), None);
    store.put(b"reopened", b"writes again").unwrap();
}

#[test]
fn failed_reads_stop_compaction_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), manual()).unwrap();
    store.put(b"k", b"old").unwrap();
    store.put(b"k", b"v").unwrap();
    drop(store);
    let (faults, opts) = faulty(manual());
    let store = Store::open(dir.path(), opts).unwrap();
    store.put(b"active", b"a").unwrap();
    faults.fail_reads(true);
    // A get makes no system call (it reads the segment's map), so only the reads of
    // compaction fail.
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert!(
        matches!(store.compact(), Err(Error::Io { .. })),
        "compaction stops on a failed read"
    );
    faults.fail_reads(false);
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.get(b"active").unwrap(), Some(b"a".to_vec()));
    assert_eq!(store.compact().unwrap().records_copied, 2);
    drop(store);
    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.get(b"active").unwrap(), Some(b"a".to_vec()));
}

#[test]
fn reopening_syncs_the_segment_it_goes_on_appending_to() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), manual()).unwrap();
        store.put(b"k", b"written, perhaps never synced").unwrap();
    }
    // Whoever goes on appending to a segment makes what it holds durable first: with the
    // fsync failing, the open cannot go on.
    let (faults, opts) = faulty(manual());
    faults.fail_next_sync();
    let err = Store::open(dir.path(), opts).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(
        store.get(b"k").unwrap(),
        Some(b"written, perhaps never synced".to_vec())
    );
}
