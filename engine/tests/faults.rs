//! A failing disk, simulated (feature `fault-injection`): a short write, a failed fsync and
//! failed reads give typed errors, never a panic or a wrong value, and lose nothing that was
//! acknowledged.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::{contents, manual};
use logcache_engine::{Durability, Error, Store, faults};

/// The fault switches are process-wide: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    faults::clear();
    guard
}

#[test]
fn a_short_write_leaves_no_partial_record_and_writes_go_on() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().durability(Durability::Flush);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..10u8 {
        store.put(&[i], &[i; 50]).unwrap();
        model.insert(vec![i], vec![i; 50]);
    }
    faults::short_next_write();
    let err = store.put(b"torn", &[9; 200]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let segment = dir.path().join("0000000000100000.data");
    assert!(
        err.to_string().contains(&segment.display().to_string()),
        "the message names the file: {err}"
    );
    assert_eq!(
        store.get(b"torn").unwrap(),
        None,
        "the failed write is not visible"
    );
    // The file was cut back: the next write lands where the failed one began.
    store.put(b"after", b"ok").unwrap();
    model.insert(b"after".to_vec(), b"ok".to_vec());
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
fn a_short_write_with_buffered_writes_keeps_them_buffered() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().durability(Durability::None);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.put(b"buffered", b"1").unwrap();
    faults::short_next_write();
    assert!(matches!(store.flush(), Err(Error::Io { .. })));
    assert_eq!(
        store.get(b"buffered").unwrap(),
        Some(b"1".to_vec()),
        "still readable"
    );
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.get(b"buffered").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.recovery_report().torn_tail, None);
}

#[test]
fn a_failed_fsync_refuses_further_writes_and_loses_nothing_acknowledged() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let opts = manual().durability(Durability::Sync);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.put(b"before", b"synced").unwrap();
    faults::fail_next_sync();
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
fn failed_reads_are_errors_never_wrong_values() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), manual()).unwrap();
    store.put(b"k", b"old").unwrap();
    store.put(b"k", b"v").unwrap();
    drop(store);
    let store = Store::open(dir.path(), manual()).unwrap();
    store.put(b"active", b"a").unwrap();
    faults::fail_reads(true);
    for key in [&b"k"[..], b"active"] {
        match store.get(key) {
            Err(Error::Io { .. }) => {}
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
    assert!(store.contains(b"k"), "the index still knows the key");
    assert!(
        matches!(store.compact(), Err(Error::Io { .. })),
        "compaction stops on a failed read"
    );
    faults::fail_reads(false);
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.get(b"active").unwrap(), Some(b"a".to_vec()));
    drop(store);
    let store = Store::open(dir.path(), manual()).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
}
