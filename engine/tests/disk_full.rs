//! A full disk: the store runs on a tiny tmpfs mounted for the test. Writes fail with
//! `Error::StorageFull`, nothing stored earlier is lost, no partial record is left behind, and
//! writes resume once space is freed.
//!
//! Mounting needs root. Without it the test says so loudly and skips, except under CI
//! (`CI=true`), where it fails instead.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::contents;
use logcache_engine::{Durability, Error, Store};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: usize) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { _dir: dir, path }),
            other => {
                let why = format!("cannot mount a tmpfs ({other:?}); run as root");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("SKIPPED disk-full test: {why}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the store until a write fails; returns what was acknowledged and the error.
fn fill(store: &Store, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, start: usize) -> Error {
    for i in start.. {
        let key = format!("key{i:06}").into_bytes();
        let value = vec![(i % 251) as u8; 100 + i % 300];
        match store.put(&key, &value) {
            Ok(()) => {
                model.insert(key, value);
            }
            Err(e) => return e,
        }
    }
    unreachable!()
}

/// The tests of this file run one at a time: each runs `mount`, and a child process forked
/// while the other test's store is open inherits its lock file descriptor until it execs,
/// which can make that test's reopen see `Error::Locked` for an instant.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(durability: Durability, max_segment_size: u64) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(disk) = SmallDisk::mount(256 << 10) else {
        return;
    };
    let ballast = disk.path.join("ballast");
    std::fs::write(&ballast, vec![1u8; 64 << 10]).unwrap();
    let store_dir: &Path = &disk.path.join("store");
    let opts = common::manual()
        .durability(durability)
        .max_segment_size(max_segment_size);
    let store = Store::open(store_dir, opts.clone()).unwrap();
    let mut model = BTreeMap::new();

    let err = fill(&store, &mut model, 0);
    assert!(
        matches!(err, Error::StorageFull { .. }),
        "{durability:?}: {err}"
    );
    assert!(
        err.to_string().contains(&store_dir.display().to_string()),
        "the message names the file: {err}"
    );
    assert!(
        model.len() > 100,
        "the disk held a fair number of writes first"
    );
    assert_eq!(contents(&store), model, "nothing acknowledged is lost");
    // Still full: the next write fails the same way, and deletes free no space yet.
    assert!(matches!(
        store.put(b"more", &[0; 300]),
        Err(Error::StorageFull { .. })
    ));

    std::fs::remove_file(&ballast).unwrap();
    let more = fill(&store, &mut model, 1_000_000);
    assert!(
        matches!(more, Error::StorageFull { .. }),
        "writes resumed, then filled again"
    );
    assert_eq!(contents(&store), model);
    drop(store);

    let store = Store::open(store_dir, opts).unwrap();
    assert_eq!(
        store.recovery_report().torn_tail,
        None,
        "no partial record was left"
    );
    assert_eq!(
        contents(&store),
        model,
        "{durability:?}: reopened store holds every acknowledged write"
    );
}

#[test]
fn disk_full_with_flush_durability() {
    run(Durability::Flush, 32 << 10);
}

#[test]
fn disk_full_with_sync_durability_and_rotation() {
    run(Durability::Sync, 8 << 10);
}

/// On a read-only filesystem (root ignores file modes, so that is how a test takes write
/// permission away) an existing store opens read-only by itself and serves reads; creating a
/// new one is a typed error; once the filesystem is writable again, so is the store.
#[test]
fn a_read_only_filesystem_opens_read_only_and_a_new_store_is_a_typed_error() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(disk) = SmallDisk::mount(1 << 20) else {
        return;
    };
    let store_dir = disk.path.join("store");
    {
        let store = Store::open(&store_dir, common::manual().max_segment_size(64 << 10)).unwrap();
        store.put(b"k", b"v").unwrap();
    }
    let remount = |mode: &str| {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&disk.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    };
    remount("ro");
    {
        let store = Store::open(&store_dir, common::manual()).unwrap();
        assert!(store.is_read_only());
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert!(matches!(store.put(b"k", b"w"), Err(Error::ReadOnly(_))));
    }
    match Store::open(disk.path.join("new"), common::manual()) {
        Err(Error::Io { .. }) => {}
        other => panic!(
            "expected an I/O error creating a store on a read-only filesystem, got {other:?}"
        ),
    }
    remount("rw");
    let store = Store::open(&store_dir, common::manual()).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
}
